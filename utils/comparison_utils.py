"""Running a comparison of several models, and writing and reading its results.

:func:`run_comparison` trains the models of one experiment one after the other with the same
:class:`~utils.training_utils.TrainConfig` (plus each model's stated overrides). Each model's
result is written atomically to ``<results>/<experiment>/<model>.json`` as soon as it finishes,
then the model is dropped, so memory stays flat and an interrupted run loses one model at most.
"""
from __future__ import annotations

import csv
import fcntl
import gc
import io
import json
import math
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from models.cnn_models import count_parameters
from utils.data import ImageSet
from utils.training_utils import TrainConfig, measure_inference, set_seed, train_model

SUMMARY_COLUMNS = ("model", "params", "epochs", "train_loss", "train_acc", "test_loss", "test_acc",
                   "train_time_s", "inference_time_s", "train_images_per_s")


@dataclass
class ModelSpec:
    """A model of a comparison: its name, how to build it, and what differs in its training."""

    name: str
    build: Callable[[], nn.Module]
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields, e.g. regularisation
    notes: str = ""


# ---------------------------------------------------------------------------------------------
# Files

class OutputError(Exception):
    """An output folder cannot be used; the message is one line meant for the user."""


def _file_mode() -> int:
    """The permissions a plain ``open()`` would give a new file under the user's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_atomic(path: Path, mode: str, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file in the same folder, then rename it over ``path``:
    a reader never sees a half-written file, and an interrupted run leaves the old one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())  # mkstemp makes 0600 files; results are for everyone to read
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None: JSON has no NaN or Infinity, and a
    diverged model's loss is one of them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: Any) -> None:
    _write_atomic(path, "w", lambda f: json.dump(strict_json(obj), f, indent=1, allow_nan=False))


def write_text_atomic(path: Path, text: str) -> None:
    _write_atomic(path, "w", lambda f: f.write(text))


def prepare_output_dir(path: Path) -> Path:
    """Create ``path`` and prove it writable now, so that a bad ``--results-dir`` fails before any
    training rather than when the first result is saved."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OutputError(f"cannot write to {path}: {reason}; choose another folder") from None
    return path


@contextmanager
def experiment_lock(experiment_dir: Path) -> Iterator[Path]:
    """Hold an exclusive lock on an experiment's folder while a run writes into it.

    A second run that wants the same folder fails at once with :class:`OutputError` instead of
    silently overwriting the first one's results. The lock is ``flock`` on ``.lock`` in the
    folder: the operating system releases it when the process ends, however it ends, so a killed
    run never blocks the next ``--resume``. Temporary files a killed run left behind are removed.
    """
    experiment_dir = prepare_output_dir(experiment_dir)
    f = open(experiment_dir / ".lock", "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise OutputError(f"another run (pid {holder}) is writing into {experiment_dir}; wait for "
                              "it to finish or pass another --results-dir") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        for stale in experiment_dir.rglob(".*.tmp"):  # ours are atomic writes a killed run left
            stale.unlink(missing_ok=True)
        yield experiment_dir
    finally:
        f.close()  # releases the lock


def result_path(experiment_dir: Path, model_name: str) -> Path:
    return Path(experiment_dir) / f"{model_name}.json"


def load_result(path: Path, warn: bool = False) -> dict[str, Any] | None:
    """The result saved at ``path``, or None if there is none or the file is not a result
    (with ``warn``, a file that exists but is not a result is reported in one line)."""
    path = Path(path)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        result, why = None, f"unreadable ({type(e).__name__})"
    else:
        why = "not a result"
    if isinstance(result, dict) and isinstance(result.get("model"), str) \
            and isinstance(result.get("config", {}), dict):
        return result
    if warn:
        print(f"warning: {path} is {why}; ignoring it", file=sys.stderr)
    return None


def load_results(experiment_dir: Path, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Results of an experiment, in the order of ``names`` (default: all JSON files, sorted).
    Files that are not results are skipped with a warning."""
    experiment_dir = Path(experiment_dir)
    if names is None:
        paths = sorted(experiment_dir.glob("*.json"))
    else:
        paths = [result_path(experiment_dir, n) for n in names]
    return [r for r in (load_result(p, warn=True) for p in paths) if r is not None]


def write_summary(experiment_dir: Path, results: Sequence[dict[str, Any]],
                  extra_columns: Sequence[str] = ()) -> Path:
    """``summary.csv``: one row per model with the headline metrics."""
    columns = list(SUMMARY_COLUMNS) + [c for c in extra_columns if c not in SUMMARY_COLUMNS]
    path = Path(experiment_dir) / "summary.csv"
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in results:
        writer.writerow({c: r.get(c, "") for c in columns})
    write_text_atomic(path, buffer.getvalue())
    return path


# ---------------------------------------------------------------------------------------------
# Markdown tables (the README's tables are made by these functions from the results files)

def _fmt(value: Any, kind: str) -> str:
    if value is None or value == "":
        return "–"
    if kind == "pct":
        return f"{100 * value:.2f}"
    if kind == "int":
        return f"{int(value):,}".replace(",", " ")
    if kind == "s":  # seconds: 2 significant digits below 1 s (GPU inference takes ~0.02 s)
        return f"{value:.2g}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"
    if kind == "f4":
        return f"{value:.4f}"
    if kind == "f2":
        return f"{value:.2f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """``columns`` are (key, header, format) with format one of pct, int, s, f4, f2, str."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(_fmt(r.get(k), f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


STANDARD_COLUMNS = (
    ("model", "модель", "str"), ("params", "параметры", "int"), ("epochs", "эпохи", "int"),
    ("train_acc", "train acc, %", "pct"), ("test_acc", "test acc, %", "pct"),
    ("train_loss", "train loss", "f4"), ("test_loss", "test loss", "f4"),
    ("train_time_s", "обучение, с", "s"), ("inference_time_s", "инференс test, с", "s"),
)


# ---------------------------------------------------------------------------------------------
# Running a comparison

def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> list[list[int]]:
    idx = labels.cpu() * num_classes + predictions.cpu()
    return torch.bincount(idx, minlength=num_classes ** 2).view(num_classes, num_classes).tolist()


def config_differences(old: dict[str, Any], new: dict[str, Any], ignore: Sequence[str] = ()) -> list[str]:
    """The keys on which two saved configs differ, as ``key: old -> new`` (long values shortened)."""
    def short(v: Any) -> str:
        text = repr(v)
        return text if len(text) <= 24 else text[:21] + "..."
    keys = sorted((set(old) | set(new)) - set(ignore))
    return [f"{k}: {short(old.get(k))} -> {short(new.get(k))}" for k in keys if old.get(k) != new.get(k)]


def check_replicates(runs: Sequence[dict[str, Any]]) -> None:
    """Refuse to pool results into one mean ± std unless their configs differ only in the seed."""
    def without_seed(config: dict[str, Any]) -> dict[str, Any]:
        overrides = {k: v for k, v in (config.get("overrides") or {}).items() if k != "seed"}
        return {**{k: v for k, v in config.items() if k not in ("seed", "model")}, "overrides": overrides}
    configs = [without_seed(r.get("config") or {}) for r in runs]
    for r, c in zip(runs[1:], configs[1:]):
        if c != configs[0]:
            changes = "; ".join(config_differences(configs[0], c)[:3])
            raise OutputError(f"{runs[0]['model']} and {r['model']} differ in more than the seed "
                              f"({changes}); they cannot be pooled into one row")


def run_comparison(experiment_dir: Path, specs: Sequence[ModelSpec], train_set: ImageSet,
                   test_set: ImageSet, base_cfg: TrainConfig, data_info: dict[str, Any],
                   resume: bool = False,
                   after_training: Callable[[ModelSpec, nn.Module, dict[str, Any]], None] | None = None,
                   overwrite: bool = False) -> list[dict[str, Any]]:
    """Train every spec in turn; return the results (loaded from disk for resumed models).

    Before anything trains, every model's saved result is compared with the config it would get
    now: with ``resume`` an identical one is reused; a result made with another config (other
    hyperparameters, other data) is never replaced silently: :class:`OutputError` unless
    ``overwrite``. ``after_training(spec, model, result)`` runs while the trained model still
    exists (for figures such as feature maps); it may add keys to ``result`` before it is written.
    A model whose loss stops being finite is recorded as diverged and the next model trains.
    """
    experiment_dir = prepare_output_dir(experiment_dir)
    plans = []
    for spec in specs:
        cfg = replace(base_cfg, **spec.overrides)
        set_seed(cfg.seed)
        model = spec.build()
        config = {**cfg.to_dict(), **data_info, "model": spec.name, "overrides": spec.overrides,
                  "architecture": repr(model)}
        path = result_path(experiment_dir, spec.name)
        previous = load_result(path, warn=path.exists())
        if previous is not None and previous.get("config") != config and not overwrite:
            changes = config_differences(previous.get("config") or {}, config)
            raise OutputError(f"{path} holds a result made with another config ({'; '.join(changes[:3])}"
                              f"{'; ...' if len(changes) > 3 else ''}); pass --overwrite to replace it "
                              "or --results-dir to write elsewhere")
        plans.append((spec, cfg, config, path, previous))
        del model

    results = []
    for spec, cfg, config, path, previous in plans:
        if resume and previous is not None and previous.get("config") == config:
            print(f"[resume] {spec.name}: results exist with the same config, skipping")
            results.append(previous)
            continue
        set_seed(cfg.seed)
        model = spec.build()
        result: dict[str, Any] = {"model": spec.name, "params": count_parameters(model),
                                  "notes": spec.notes}
        result.update(train_model(model, train_set, test_set, cfg, desc=spec.name))
        preds = result.pop("test_predictions")
        result.update(measure_inference(model, test_set, cfg))
        result["confusion_matrix"] = confusion_matrix(test_set.labels, preds, len(test_set.classes))
        result["classes"] = list(test_set.classes)
        result["config"] = config
        if after_training is not None:
            after_training(spec, model, result)
        result = strict_json(result)  # what is kept in memory is what the file says
        write_json_atomic(path, result)
        results.append(result)
        status = "DIVERGED (non-finite loss)" if result.get("diverged") else f"test acc {result['test_acc']:.4f}"
        print(f"{spec.name}: {status}, train {result['train_time_s']:.0f} s -> {path}")
        del model, preds
        gc.collect()
    write_summary(experiment_dir, results)
    print(f"results of {len(results)} models in {experiment_dir}")
    return results


def run_caption(results: Sequence[dict[str, Any]]) -> str:
    """One line saying how the numbers were produced (data size, epochs, device), from the configs."""
    if not results:
        return "_нет результатов_"
    cfgs = [r["config"] for r in results]
    epochs = sorted({r["epochs"] for r in results})
    parts = [f"{cfgs[0].get('dataset', '?')}: train {cfgs[0].get('train_size', '?')}"
             f" / test {cfgs[0].get('test_size', '?')} изображений",
             "эпох: " + "/".join(map(str, epochs)),
             f"batch {cfgs[0]['batch_size']}", f"устройство {cfgs[0]['device']}"]
    if any(c.get("quick") for c in cfgs):
        parts.append("**--quick: подвыборка и 1 эпоха, цифры не показательны**")
    if any(c.get("preset") for c in cfgs):
        parts.append(f"**пресет {cfgs[0]['preset']}: сокращённый прогон**")
    return "_" + "; ".join(parts) + "_"


# The first line of a table made from a reduced run (--quick, --budget, --epoch-fraction < 1):
# utils/report.py never copies such a table into the README.
REDUCED_MARK = "<!-- reduced run: not for the README -->"


def is_reduced(results: Sequence[dict[str, Any]]) -> bool:
    """Whether any of ``results`` comes from a reduced run (a smoke test or a preview)."""
    return any((r.get("config") or {}).get("reduced") or (r.get("config") or {}).get("quick")
               for r in results)


def reduced_mark(reduced: bool) -> str:
    return REDUCED_MARK + "\n" if reduced else ""


def write_table(experiment_dir: Path, results: Sequence[dict[str, Any]],
                columns: Sequence[tuple[str, str, str]] = STANDARD_COLUMNS,
                name: str = "table.md") -> Path:
    """A markdown table of ``results`` with its caption, for the README (see utils/report.py)."""
    text = (reduced_mark(is_reduced(results)) + markdown_table(results, columns) + "\n\n"
            + run_caption(results) + "\n")
    path = Path(experiment_dir) / name
    write_text_atomic(path, text)
    return path


# ---------------------------------------------------------------------------------------------
# Receptive fields (task 2)
#
# The theoretical receptive field is propagated through the model's real forward pass: a
# TorchFunctionMode sees every torch operation, so additions of residual branches and
# concatenations of parallel ones are seen too (forward hooks on modules would miss them).
# Per tensor it keeps, per spatial dimension, the field size ``rf``, the ``jump`` (input pixels
# between two neighbouring units) and ``start`` (input coordinate of the centre of unit 0):
#   conv/pool with kernel k, stride s, padding p, dilation d, k' = d(k-1)+1:
#   rf' = rf + (k'-1) jump,  start' = start + ((k'-1)/2 - p) jump,  jump' = jump s.
# Any other operation is pointwise in space and takes the largest field over its inputs
# (the longest path through branches).

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


def write_npz_atomic(path: Path, **arrays: Any) -> None:
    """Arrays saved with ``numpy.savez_compressed``, atomically (see :func:`_write_atomic`)."""
    _write_atomic(path, "wb", lambda f: np.savez_compressed(
        f, **{k: np.asarray(v) for k, v in arrays.items()}))
