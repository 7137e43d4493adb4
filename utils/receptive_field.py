"""Receptive fields of CNNs: theoretical (traced through the real forward pass) and effective.

The theoretical receptive field is propagated through the model's real forward pass: a
TorchFunctionMode sees every torch operation, so additions of residual branches and
concatenations of parallel ones are seen too (forward hooks on modules would miss them).
Per tensor it keeps, per spatial dimension, the field size ``rf``, the ``jump`` (input pixels
between two neighbouring units) and ``start`` (input coordinate of the centre of unit 0):
  conv/pool with kernel k, stride s, padding p, dilation d, k' = d(k-1)+1:
  rf' = rf + (k'-1) jump,  start' = start + ((k'-1)/2 - p) jump,  jump' = jump s.
Any other operation is pointwise in space and takes the largest field over its inputs
(the longest path through branches).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

_SPATIAL_OP = re.compile(r"^_?(conv|max_pool|avg_pool|lp_pool|adaptive_avg_pool|adaptive_max_pool)"
                         r"([123])d(_with_indices)?$")
_OP_ARGS = {
    "conv": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "max_pool": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool": ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                 "divisor_override"),
    "lp_pool": ("input", "norm_type", "kernel_size", "stride", "ceil_mode"),
    "adaptive_avg_pool": ("input", "output_size"),
    "adaptive_max_pool": ("input", "output_size", "return_indices"),
}


@dataclass(frozen=True)
class _Field:
    rf: tuple[float, ...]
    jump: tuple[float, ...]
    start: tuple[float, ...]


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _per_dim(value: Any, n: int, default: Any) -> tuple:
    value = default if value is None else value
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


class _FieldTracer(TorchFunctionMode):
    """Follows receptive fields from the model input through every torch operation."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        n = x.ndim - 2
        self.fields = {id(x): _Field((1.0,) * n, (1.0,) * n, (0.0,) * n)}
        self.keep = [x]  # keeps ids unique while tracing
        self.layers: list[dict[str, Any]] = []
        self.last: tuple[torch.Tensor, _Field] | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [self.fields[id(t)] for t in _tensors((args, kwargs)) if id(t) in self.fields]
        outputs = _tensors(out)
        if not inputs or not outputs:
            return out
        cur = max(inputs, key=lambda f: max(f.rf))
        match = _SPATIAL_OP.match(getattr(func, "__name__", ""))
        if "transpose" in getattr(func, "__name__", ""):
            raise ValueError(f"receptive_field: {func.__name__} is not supported")
        if match:
            cur = self._spatial(match.group(1), args, kwargs, cur, outputs[0])
        for t in outputs:
            self.fields[id(t)] = cur
            self.keep.append(t)
        t = outputs[0]
        if t.ndim >= 3 and t.ndim - 2 == len(cur.rf) and t.shape[2:].numel() > 1:
            self.last = (t, cur)
        return out

    def _spatial(self, kind: str, args: tuple, kwargs: dict, f: _Field, out: torch.Tensor) -> _Field:
        a = dict(zip(_OP_ARGS[kind], args), **kwargs)
        x = a["input"]
        n = x.ndim - 2
        if kind == "conv":
            kernel = tuple(a["weight"].shape[2:])
            stride, dilation = _per_dim(a.get("stride"), n, 1), _per_dim(a.get("dilation"), n, 1)
            padding = a.get("padding", 0)
            if padding == "same":
                padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel))
            padding = _per_dim(0 if padding == "valid" else padding, n, 0)
        elif kind.startswith("adaptive"):
            # Adaptive pooling bins vary in size; use the largest bin and the mean step.
            size_in, size_out = x.shape[2:], out.shape[2:]
            kernel = tuple(-(-i // o) for i, o in zip(size_in, size_out))
            stride, padding, dilation = tuple(i / o for i, o in zip(size_in, size_out)), (0,) * n, (1,) * n
        else:
            kernel = _per_dim(a["kernel_size"], n, None)
            stride = _per_dim(a.get("stride") or a["kernel_size"], n, None)
            padding = _per_dim(a.get("padding", 0), n, 0)
            dilation = _per_dim(a.get("dilation", 1), n, 1)
        span = tuple(d * (k - 1) for k, d in zip(kernel, dilation))
        new = _Field(rf=tuple(r + s * j for r, s, j in zip(f.rf, span, f.jump)),
                       jump=tuple(j * s for j, s in zip(f.jump, stride)),
                       start=tuple(st + (s / 2 - p) * j for st, s, p, j in zip(f.start, span, padding, f.jump)))
        self.layers.append({"op": kind, "kernel": kernel, "stride": stride, "dilation": dilation,
                            "rf": new.rf, "jump": new.jump, "size": tuple(out.shape[2:])})
        return new


def _trace_fields(model: nn.Module, x: torch.Tensor) -> _FieldTracer:
    tracer = _FieldTracer(x)
    with tracer:
        model(x)
    if tracer.last is None:
        raise ValueError("receptive_field: the model produced no spatial feature map")
    return tracer


def receptive_field_info(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Any]:
    """Theoretical receptive field of the model's last spatial feature map, and how it grows.

    Returns ``rf`` (int, the largest over spatial dimensions), ``jump`` and ``start`` of that map
    (unit ``i`` is centred on input pixel ``start + i * jump``), its ``size``, and ``layers``: every
    convolution or pooling in execution order with the field after it. ``input_shape`` is (C, H, W)
    or (N, C, H, W). The model runs once in eval mode on zeros; its mode is restored.
    """
    shape = tuple(input_shape) if len(input_shape) > 3 else (1, *input_shape)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tracer = _trace_fields(model, torch.zeros(shape, device=device))
    finally:
        model.train(was_training)
    t, last = tracer.last
    return {"rf": int(round(max(last.rf))), "jump": last.jump, "start": last.start,
            "size": tuple(t.shape[2:]), "layers": tracer.layers}


def receptive_field(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Theoretical receptive field (pixels, side) of the last spatial feature map of ``model``.

    Computed analytically from the kernel, stride, padding and dilation of every convolution and
    pooling on the forward path; through branches and residual connections the largest field
    wins. See :func:`receptive_field_info` for the details.
    """
    return receptive_field_info(model, input_shape)["rf"]


def effective_receptive_field(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Empirical (effective) receptive field: |∂ centre unit / ∂ input|, shape (H, W), max 1.

    The centre unit of the last spatial feature map (all its channels summed) is differentiated
    with respect to the input pixels (channels summed) and averaged over ``images`` (Luo et al.,
    2016). The model runs in eval mode, so BatchNorm uses its running statistics.
    """
    was_training = model.training
    model.eval()
    x = images.detach().clone().requires_grad_(True)
    try:
        t, _ = _trace_fields(model, x).last
        h, w = t.shape[-2:]
        grad, = torch.autograd.grad(t[:, :, h // 2, w // 2].sum(), x)
    finally:
        model.train(was_training)
    erf = grad.abs().sum(1).mean(0)
    return erf / erf.max().clamp_min(1e-30)


def erf_extent(erf: torch.Tensor, center: Sequence[float], fraction: float = 0.9) -> int:
    """Side of the smallest square around ``center`` (x, y) that holds ``fraction`` of an effective
    receptive field's mass: one number for how far the field really reaches."""
    erf = torch.as_tensor(erf, dtype=torch.float64).cpu()
    h, w = erf.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dist = torch.maximum((xs - center[0]).abs(), (ys - center[1]).abs())  # Chebyshev: squares
    total = erf.sum().clamp_min(1e-30)
    for side in range(1, 2 * max(h, w) + 2):
        if erf[dist <= side / 2].sum() >= fraction * total:
            return side
    return 2 * max(h, w) + 1
