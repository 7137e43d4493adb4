"""Custom CNN layers with hand-written backward passes (task 3.1).

Written in the style of timm's ``layers/activations_me.py``: for every layer a pair of plain
functions ``*_fwd`` / ``*_bwd`` holds the maths, a ``torch.autograd.Function`` saves what the
backward needs and calls them, and a thin ``nn.Module`` owns the parameters. Autograd never
differentiates through the composite ops of a forward: each ``backward`` is derived by hand (the
derivation is in the docstrings and in the README) and checked with ``gradcheck``.

* :class:`WSConv2d`: a convolution on a standardised weight with a learnable per-output-channel
  gain (weight standardisation, Qiao et al. 2019; the gain as in NF-Nets).
* :class:`ChannelSpatialAttention`: squeeze-and-excitation channel attention times a 1x1 spatial
  gate (concurrent scSE, Roy et al. 2018, with a product instead of a sum).
* :class:`Swish`: ``x * sigmoid(beta * x)`` with a learnable ``beta`` (Ramachandran et al. 2017).
* :class:`MixedPool2d`: ``a * maxpool + (1 - a) * avgpool`` with a learnable per-channel ``a``
  (Lee et al. 2016, "mixed pooling").

``CUSTOM_LAYERS`` maps each role to a factory ``f(channels) -> nn.Module``; ``STANDARD_LAYERS``
gives the built-in counterpart of each role with the same signature.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight


def float32_forward(forward: Callable) -> Callable:
    """Run a layer's ``forward(self, x)`` with autocast off, a half-precision input cast to float32.

    Why: each hand-written backward assumes that its input, parameters and gradient share one
    dtype; under CUDA's bf16 autocast the input would be a bf16 activation and the convolution
    inside a Function would be cast to bf16 behind the backward's back.
    """
    @functools.wraps(forward)
    def wrapped(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):  # float64 (gradcheck) stays float64
            x = x.float()
        with torch.autocast(x.device.type, enabled=False):
            return forward(self, x)
    return wrapped


# ---------------------------------------------------------------------------------------------
# Convolution with weight standardisation and a learnable gain

def ws_weight_fwd(weight: torch.Tensor, gain: torch.Tensor, eps: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``w_hat = gain * (w - mean) / sqrt(var + eps)``, statistics over each output channel's fan-in.

    Returns ``w_hat``, the standardised weight ``w_std`` and ``1 / sqrt(var + eps)``.
    """
    flat = weight.flatten(1)
    mean = flat.mean(1, keepdim=True)
    var = flat.var(1, unbiased=False, keepdim=True)
    inv_std = torch.rsqrt(var + eps)
    w_std = ((flat - mean) * inv_std).view_as(weight)
    return gain.view(-1, 1, 1, 1) * w_std, w_std, inv_std


def ws_weight_bwd(grad_w_hat: torch.Tensor, w_std: torch.Tensor, inv_std: torch.Tensor,
                  gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the standardisation wrt the raw weight and the gain.

    With ``u = (w - mean) * inv_std`` over a fan-in of n values (LayerNorm maths):
    ``dL/dgain = sum(G * u)`` and ``dL/dw = inv_std * (g - mean(g) - u * mean(g * u))`` where
    ``G = dL/dw_hat`` and ``g = gain * G``.
    """
    grad_gain = (grad_w_hat * w_std).flatten(1).sum(1)
    g = (gain.view(-1, 1, 1, 1) * grad_w_hat).flatten(1)
    u = w_std.flatten(1)
    grad_w = inv_std * (g - g.mean(1, keepdim=True) - u * (g * u).mean(1, keepdim=True))
    return grad_w.view_as(grad_w_hat), grad_gain


class WSConv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, gain, stride: int, padding: int, eps: float, standardize: bool):
        if standardize:
            w_hat, w_std, inv_std = ws_weight_fwd(weight, gain, eps)
        else:  # the extra logic switched off: a plain convolution
            w_hat, w_std, inv_std = weight, None, None
        ctx.save_for_backward(x, w_hat, w_std, inv_std, gain)
        ctx.conf = (stride, padding, standardize)
        return F.conv2d(x, w_hat, None, stride, padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, w_hat, w_std, inv_std, gain = ctx.saved_tensors
        stride, padding, standardize = ctx.conf
        grad_x = grad_w = grad_gain = None
        if ctx.needs_input_grad[0]:
            grad_x = conv2d_input(x.shape, w_hat, grad_out, stride, padding)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_w_hat = conv2d_weight(x, w_hat.shape, grad_out, stride, padding)
            if standardize:
                grad_w, grad_gain = ws_weight_bwd(grad_w_hat, w_std, inv_std, gain)
            else:
                grad_w = grad_w_hat
        return grad_x, grad_w, grad_gain, None, None, None, None


class WSConv2d(nn.Module):
    """Conv2d (no bias) whose kernel is standardised per output channel and scaled by a gain.

    Why: standardising the kernels keeps every filter at zero mean and unit scale, which smooths
    the loss landscape and makes the layer's output scale independent of the raw weight norm;
    the learnable gain gives back the freedom of scale. ``standardize=False`` makes it exactly
    ``F.conv2d`` (the gain is then unused).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, eps: float = 1e-5, standardize: bool = True) -> None:
        super().__init__()
        self.stride, self.padding, self.eps, self.standardize = stride, padding, eps, standardize
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        # Kaiming scale for the standardised (unit-variance) kernel: sqrt(2 / fan_in).
        fan_in = in_channels * kernel_size ** 2
        self.gain = nn.Parameter(torch.full((out_channels,), math.sqrt(2.0 / fan_in)))

    @float32_forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return WSConv2dFn.apply(x, self.weight, self.gain, self.stride, self.padding, self.eps,
                                self.standardize)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding}, " \
               f"standardize={self.standardize}"


# ---------------------------------------------------------------------------------------------
# Channel (squeeze-and-excitation) x spatial attention

def attention_fwd(x, w1, b1, w2, b2, ws, bs):
    """``y = x * a_c[n, c] * a_s[n, h, w]``.

    Channel: ``s = mean_hw(x)``, ``z1 = s W1^T + b1``, ``a_c = sigmoid(relu(z1) W2^T + b2)``.
    Spatial (``ws`` not None): ``a_s = sigmoid(sum_c ws[c] x[c] + bs)``, computed from ``x`` in
    parallel with the channel branch. Returns ``y`` and the tensors the backward needs.
    """
    s = x.mean((2, 3))
    z1 = s @ w1.t() + b1
    h = z1.clamp_min(0)
    a_c = torch.sigmoid(h @ w2.t() + b2)
    gate = a_c[:, :, None, None]
    a_s = None
    if ws is not None:
        a_s = torch.sigmoid(F.conv2d(x, ws.view(1, -1, 1, 1), bs))  # a 1x1 conv to one map
        gate = gate * a_s
    return x * gate, (s, z1, h, a_c, a_s)


def attention_bwd(grad_y, x, w1, w2, ws, s, z1, h, a_c, a_s):
    """Chain rule through the two gates (each branch is a small MLP / 1x1 conv and a sigmoid).

    ``dx = g * a_c * a_s + (dL/ds) / HW + (dL/dz_s) * ws``; ``dL/da_c = sum_hw(g * x * a_s)`` goes
    through ``sigmoid' = a(1-a)``, W2, the ReLU mask ``z1 > 0`` and W1; ``dL/da_s = sum_c(g * x *
    a_c)`` through ``sigmoid'`` and the 1x1 conv ``ws``.
    """
    hw = x.shape[2] * x.shape[3]
    gx_gate = grad_y * x
    spatial = a_s if a_s is not None else 1.0
    grad_a_c = (gx_gate * spatial).sum((2, 3))
    grad_z2 = grad_a_c * a_c * (1 - a_c)
    grad_w2, grad_b2 = grad_z2.t() @ h, grad_z2.sum(0)
    grad_z1 = (grad_z2 @ w2) * (z1 > 0)
    grad_w1, grad_b1 = grad_z1.t() @ s, grad_z1.sum(0)
    grad_s = grad_z1 @ w1
    gate = a_c[:, :, None, None] * spatial
    grad_x = grad_y * gate + (grad_s / hw)[:, :, None, None]
    grad_ws = grad_bs = None
    if a_s is not None:
        grad_zs = (gx_gate * a_c[:, :, None, None]).sum(1, keepdim=True) * a_s * (1 - a_s)
        grad_x = grad_x + grad_zs * ws.view(1, -1, 1, 1)
        grad_ws = conv2d_weight(x, (1, x.shape[1], 1, 1), grad_zs).view(-1)  # sum_nhw(dz_s * x)
        grad_bs = grad_zs.sum().view(1)
    return grad_x, grad_w1, grad_b1, grad_w2, grad_b2, grad_ws, grad_bs


class AttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, ws, bs):
        y, (s, z1, h, a_c, a_s) = attention_fwd(x, w1, b1, w2, b2, ws, bs)
        ctx.save_for_backward(x, w1, w2, ws, s, z1, h, a_c, a_s)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        return attention_bwd(grad_y, *ctx.saved_tensors)


class ChannelSpatialAttention(nn.Module):
    """Squeeze-and-excitation channel attention times a per-pixel spatial gate.

    Why: SE reweights *what* (channels) from global context for the cost of two tiny matrices;
    the spatial gate adds *where* for C+1 parameters. ``spatial=False`` is exactly torchvision's
    ``SqueezeExcitation`` (ReLU, sigmoid). The last gates are kept in ``last_channel`` and
    ``last_spatial`` (detached) for the figures.
    """

    def __init__(self, channels: int, reduction: int = 4, spatial: bool = True) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.spatial = spatial
        if spatial:
            # Starts as a uniform gate sigmoid(0) = 0.5 per pixel; the data decide where to look.
            self.spatial_weight = nn.Parameter(torch.zeros(channels))
            self.spatial_bias = nn.Parameter(torch.zeros(1))
        self.last_channel: torch.Tensor | None = None
        self.last_spatial: torch.Tensor | None = None

    @float32_forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ws = self.spatial_weight if self.spatial else None
        bs = self.spatial_bias if self.spatial else None
        y = AttentionFn.apply(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias, ws, bs)
        if not self.training:  # gates for the figures; recomputed cheaply, never in training
            with torch.no_grad():
                _, (_, _, _, a_c, a_s) = attention_fwd(x, self.fc1.weight, self.fc1.bias,
                                                       self.fc2.weight, self.fc2.bias, ws, bs)
            self.last_channel, self.last_spatial = a_c, a_s
        return y


# ---------------------------------------------------------------------------------------------
# Swish with a learnable beta

def swish_fwd(x: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = x * s`` with ``s = sigmoid(beta x)``; returns ``y`` and ``s`` (saved for backward)."""
    s = torch.sigmoid(beta * x)
    return x * s, s


def swish_bwd(x: torch.Tensor, s: torch.Tensor, beta: torch.Tensor, grad_y: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``dy/dx = s + beta x s (1 - s)`` and ``dy/dbeta = x^2 s (1 - s)``.

    Written with ``t = g x s (1 - s)`` so that both gradients share it (few passes over memory):
    ``dL/dx = g s + beta t`` and ``dL/dbeta = sum(t x)``.
    """
    gs = grad_y * s
    t = (grad_y - gs) * s * x
    grad_x = torch.addcmul(gs, t, beta)
    grad_beta = (t * x).sum().view_as(beta)
    return grad_x, grad_beta


class SwishFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, beta):
        y, s = swish_fwd(x, beta)
        ctx.save_for_backward(x, s, beta)  # keeping s costs memory but saves a sigmoid pass
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, s, beta = ctx.saved_tensors
        return swish_bwd(x, s, beta, grad_y)


class Swish(nn.Module):
    """``x * sigmoid(beta x)``; beta=1 is SiLU, beta -> inf tends to ReLU, beta=0 is x/2.

    Why: smooth and non-monotonic (a small negative lobe), with non-zero gradient for negative
    inputs; a learnable beta lets the network choose between linear-like and ReLU-like shapes.
    """

    def __init__(self, beta: float = 1.0, learnable: bool = True) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)), requires_grad=learnable)

    @float32_forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SwishFn.apply(x, self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta.item():.3f}"


# ---------------------------------------------------------------------------------------------
# Mixed max/average pooling with a learnable mix

def mixed_pool_fwd(x: torch.Tensor, mix_logit: torch.Tensor):
    """``y = a * max(window) + (1 - a) * mean(window)`` over 2x2 windows, ``a = sigmoid(logit[c])``.

    Returns ``y`` and what the backward needs: the arg-max indices, ``max - mean`` and ``a``.
    """
    mx, idx = F.max_pool2d(x, 2, 2, return_indices=True)
    avg = F.avg_pool2d(x, 2, 2)
    a = torch.sigmoid(mix_logit).view(1, -1, 1, 1)
    diff = mx - avg
    return avg + a * diff, (idx, diff, a)


def mixed_pool_bwd(grad_y, x_shape, idx, diff, a):
    """The max part routes ``a * g`` to the arg-max of each window (a scatter by the saved
    indices), the mean part spreads ``(1 - a) * g / 4`` over the window (nearest upsampling);
    ``dL/dlogit_c = sum(g * (max - mean)) * a (1 - a)``. An odd last row/column gets nothing."""
    h, w = x_shape[-2:]
    grad_x = F.max_unpool2d(a * grad_y, idx, 2, 2, output_size=(h, w))
    spread = F.interpolate((1 - a) / 4 * grad_y, scale_factor=2, mode="nearest")
    grad_x = grad_x + F.pad(spread, (0, w - spread.shape[-1], 0, h - spread.shape[-2]))
    a_c = a.view(-1)
    grad_logit = (grad_y * diff).sum((0, 2, 3)) * a_c * (1 - a_c)
    return grad_x, grad_logit


class MixedPoolFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mix_logit):
        y, (idx, diff, a) = mixed_pool_fwd(x, mix_logit)
        ctx.save_for_backward(idx, diff, a)
        ctx.x_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, grad_y):
        return mixed_pool_bwd(grad_y, ctx.x_shape, *ctx.saved_tensors)


class MixedPool2d(nn.Module):
    """2x2 / stride 2 pooling between max (``a = 1``) and average (``a = 0``), ``a`` per channel.

    Why: max pooling keeps the strongest response (good for sparse detectors), average pooling
    keeps the whole window's evidence (smoother gradient: every input gets one); each channel
    learns its own mix, starting at ``a = sigmoid(0) = 0.5``.
    """

    def __init__(self, channels: int, init_logit: float = 0.0) -> None:
        super().__init__()
        self.mix_logit = nn.Parameter(torch.full((channels,), float(init_logit)))

    @property
    def mix(self) -> torch.Tensor:
        return torch.sigmoid(self.mix_logit.detach())

    @float32_forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return MixedPoolFn.apply(x, self.mix_logit)


# ---------------------------------------------------------------------------------------------
# Registries: role -> factory(channels)

LayerFactory = Callable[[int], nn.Module]

CUSTOM_LAYERS: dict[str, LayerFactory] = {
    "conv": lambda c: WSConv2d(c, c, 3, padding=1),
    "attention": lambda c: ChannelSpatialAttention(c),
    "activation": lambda c: Swish(),
    "pooling": lambda c: MixedPool2d(c),
}


def _standard_attention(c: int) -> nn.Module:
    from torchvision.ops import SqueezeExcitation  # the closest built-in: channel attention only
    return SqueezeExcitation(c, max(1, c // 4))


STANDARD_LAYERS: dict[str, LayerFactory] = {
    "conv": lambda c: nn.Conv2d(c, c, 3, padding=1, bias=False),
    "attention": _standard_attention,
    "activation": lambda c: nn.ReLU(),
    "pooling": lambda c: nn.MaxPool2d(2),
}


class LayerCNN(nn.Module):
    """A small CNN whose conv, activation, attention and pooling come from a registry.

    Stem: 3x3 conv (in -> widths[0]), BN, activation. Each stage: [1x1 conv to its width],
    ``conv``, BN, ``activation``, ``attention``, ``pooling``. Then global average pooling and a
    linear classifier. The same class with ``CUSTOM_LAYERS`` or ``STANDARD_LAYERS`` gives two
    networks that differ only in those four layers.
    """

    def __init__(self, layers: dict[str, LayerFactory], in_channels: int = 3, num_classes: int = 10,
                 widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        c = widths[0]
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(c), layers["activation"](c)]
        for w in widths:
            if w != c:
                blocks += [nn.Conv2d(c, w, 1, bias=False), nn.BatchNorm2d(w)]
                c = w
            blocks += [layers["conv"](c), nn.BatchNorm2d(c), layers["activation"](c),
                       layers["attention"](c), layers["pooling"](c)]
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))
