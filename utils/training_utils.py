"""The one training loop of the repository, with evaluation, timing and gradient-flow logging.

Every experiment trains through :func:`train_model` with a :class:`TrainConfig`; the config is
saved next to each result, so a number can always be traced to the settings that produced it.
"""
from __future__ import annotations

import itertools
import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from utils.data import BatchIterator, ImageSet
from utils.optim import Muon


class DeviceError(Exception):
    """The requested device is not available; the message is one line meant for the user."""


@dataclass
class TrainConfig:
    """Every hyperparameter of a training run, in one place."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1               # peak learning rate of the one-cycle schedule
    momentum: float = 0.9         # SGD with Nesterov momentum
    weight_decay: float = 5e-4    # not applied to BatchNorm parameters and biases
    warmup_frac: float = 0.2      # fraction of the steps with a linearly rising learning rate
    label_smoothing: float = 0.0
    augment: str = "none"         # see utils.data.AUGMENTATIONS
    seed: int = 0
    device: str = "cpu"
    channels_last: bool = True    # faster convolutions on CPU (measured: 1.2-1.4x) and on GPU
    grad_log_every: int = 50      # steps between two gradient-norm samples
    train_eval_size: int = 5000   # clean (no augmentation) train metrics on this many examples
    eval_batch_size: int = 256    # measured ~15 % faster than 1000 on a 2-core CPU (cache)
    stop_on_divergence: bool = True
    epoch_fraction: float = 1.0   # < 1: train on this share of each epoch's batches (timing runs)
    compile: bool = False         # torch.compile the training forward (README: slower on this CPU)
    # --- The fast recipe's options (issue 11; see fast_recipe()). The defaults are the recipe above.
    optimizer: str = "sgd"        # "muon": Muon on conv filters, SGD-Nesterov (lr) on the rest
    muon_lr: float = 0.24         # Muon's peak lr (scale-free: the update is orthogonalised)
    muon_momentum: float = 0.6
    head_lr_mult: float = 1.0     # "muon": the classifier ("fc.*") trains at lr * head_lr_mult
    whiten_bias_epochs: float = 3.0  # "muon": a whitening stem's bias trains only this long
    bn_momentum: float | None = None  # override every BatchNorm's running-stat momentum
    flip: str = "random"          # "alternate": each image flipped in every other epoch
    crop_padding: int | None = None  # None: the data set's own (its record: 4 px CIFAR, 2 px MNIST)
    crop_mode: str = "constant"   # "reflect": translate with mirrored borders
    tta: bool = False             # also report test_acc_tta (flip + 1-px translations) at the end

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable device raises DeviceError."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise DeviceError("device 'cuda' requested but CUDA is not available; use --device cpu or auto")
    if name == "mps" and not mps:
        raise DeviceError("device 'mps' requested but MPS is not available; use --device cpu or auto")
    if name not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    return torch.device(name)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that wall-clock timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def mixed_precision(device: torch.device) -> torch.autocast:
    """The forward pass's precision: bf16 autocast on CUDA, float32 elsewhere (bf16 is slower on
    the CPUs measured here)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def prepare_model(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    model = model.to(cfg.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if torch.device(cfg.device).type == "cuda":
        torch.backends.cudnn.benchmark = True
    return model


def tracked_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weight matrices and kernels (ndim > 1) whose gradient norms make the gradient flow."""
    return [(n, p) for n, p in model.named_parameters() if p.ndim > 1 and p.requires_grad]


def gradient_norms(params: list[nn.Parameter]) -> torch.Tensor:
    """L2 norm of each parameter's gradient, as one tensor (no host sync)."""
    return torch.stack([p.grad.detach().norm() if p.grad is not None
                        else torch.zeros((), device=p.device) for p in params])


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "muon":
        return make_muon(model, cfg)
    if cfg.optimizer != "sgd":
        raise ValueError(f"optimizer must be 'sgd' or 'muon', got {cfg.optimizer!r}")
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def make_muon(model: nn.Module, cfg: TrainConfig) -> Muon:
    """airbench's split: Muon for the hidden weight matrices (conv filters, and the hidden layers of
    a fully-connected net); SGD-Nesterov for the classifier (the last ``Linear``, at
    ``lr * head_lr_mult``), the whitening bias (its own short schedule, see lr_lambdas) and the
    other biases / BatchNorm shifts (at ``lr``). Weight decay is decoupled: ``lr * weight_decay``
    is the same in every SGD group, whatever its learning rate."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    head_ids = {id(p) for p in linears[-1].parameters()} if linears else set()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for n, p in named if id(p) in head_ids]
    hidden = [p for n, p in named if p.ndim >= 2 and id(p) not in head_ids]
    whiten = [p for n, p in named if ".conv.bias" in n and n.startswith("stem.0.")]
    taken = {id(p) for p in head + hidden + whiten}
    rest = [p for n, p in named if id(p) not in taken]
    wd = cfg.weight_decay
    groups = [dict(name="rest", params=rest, lr=cfg.lr, weight_decay=wd),
              dict(name="head", params=head, lr=cfg.lr * cfg.head_lr_mult,
                   weight_decay=wd / cfg.head_lr_mult),
              dict(name="filters", params=hidden, lr=cfg.muon_lr, momentum=cfg.muon_momentum,
                   muon=True),
              dict(name="whiten_bias", params=whiten, lr=cfg.lr, weight_decay=wd)]
    return Muon([g for g in groups if g["params"]], lr=cfg.lr, momentum=cfg.momentum)


def lr_lambdas(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> list:
    """One schedule factor per param group: the one-cycle shape for all, except a whitening
    stem's bias, which decays to zero over its first ``whiten_bias_epochs`` and then stays."""
    main = one_cycle(cfg.epochs * steps_per_epoch, cfg.warmup_frac)
    short = one_cycle(max(1, round(cfg.whiten_bias_epochs * steps_per_epoch)), 0.0)
    return [short if g.get("name") == "whiten_bias" else main for g in optimizer.param_groups]


def one_cycle(total_steps: int, warmup_frac: float):
    """Linear warm-up from 10 % to the peak, then linear decay to zero (a one-cycle schedule);
    ``warmup_frac`` 0: no warm-up, a linear decay from the peak."""
    warmup = max(1, int(total_steps * warmup_frac)) if warmup_frac > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
    return factor


@torch.inference_mode()
def evaluate(model: nn.Module, data: ImageSet, cfg: TrainConfig,
             return_predictions: bool = False) -> dict[str, Any]:
    """Loss and accuracy on ``data`` in eval mode (plus the predicted labels when asked)."""
    model.eval()
    loss_sum = torch.zeros((), device=cfg.device)
    correct = torch.zeros((), device=cfg.device, dtype=torch.long)
    preds = []
    for x, y in BatchIterator(data, cfg.eval_batch_size, cfg.device, channels_last=cfg.channels_last):
        logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        pred = logits.argmax(1)
        correct += (pred == y).sum()
        if return_predictions:
            preds.append(pred)  # kept on the device: one copy at the end, not a sync per batch
    out = {"loss": loss_sum.item() / len(data), "acc": correct.item() / len(data)}
    if return_predictions:
        out["predictions"] = torch.cat(preds).cpu()
    return out


@torch.inference_mode()
def evaluate_tta(model: nn.Module, data: ImageSet, cfg: TrainConfig) -> float:
    """Accuracy with test-time augmentation (airbench): half the weight on the image and its
    mirror, half on the two diagonal 1-px translations (reflect-padded) and their mirrors."""
    model.eval()
    correct = torch.zeros((), device=cfg.device, dtype=torch.long)
    for x, y in BatchIterator(data, cfg.eval_batch_size, cfg.device, channels_last=cfg.channels_last):
        h, w = x.shape[-2:]
        both = lambda v: model(v).float() + model(v.flip(-1)).float()  # noqa: E731
        padded = F.pad(x, (1,) * 4, mode="reflect")
        shifted = [padded[..., 0:h, 0:w], padded[..., 2:h + 2, 2:w + 2]]
        logits = both(x) / 4 + sum(both(v) for v in shifted) / 8
        correct += (logits.argmax(1) == y).sum()
    return correct.item() / len(data)


@torch.inference_mode()
def measure_inference(model: nn.Module, data: ImageSet, cfg: TrainConfig,
                      warmup_batches: int = 2) -> dict[str, float]:
    """Wall-clock time to classify the whole of ``data`` (after a warm-up), and images/s."""
    model.eval()
    batches = BatchIterator(data, cfg.eval_batch_size, cfg.device, channels_last=cfg.channels_last)
    for i, (x, _) in enumerate(batches):
        if i >= warmup_batches:
            break
        model(x)

    def classify_all() -> None:
        for x, _ in batches:
            model(x)
    seconds = timed(classify_all, cfg.device)[0]
    return {"inference_time_s": seconds, "inference_images_per_s": len(data) / seconds}


def timed(fn: Callable[[], Any], device: torch.device | str, warmup: int = 0, repeats: int = 1) -> list[float]:
    """Wall-clock seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones,
    waiting for queued GPU work at both ends of every call (the only timer of the repository)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


class TrainStep:
    """The one optimisation step of the repository (``train_model`` and the benchmarks run it).

    Forward (bf16 autocast on CUDA; through ``torch.compile`` with ``cfg.compile``), loss,
    backward, a gradient-norm sample every ``grad_log_every`` steps of an epoch, the optimizer
    and schedule steps, and the running loss/accuracy summed on the device. ``host_sync`` reads
    them back with ``.item()`` every step instead, as a loop is commonly written (a benchmark's
    naive baseline). Batches are moved to the model's device (a no-op for the core's).
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, steps_per_epoch: int,
                 host_sync: bool = False) -> None:
        self.cfg, self.host_sync = cfg, host_sync
        self.device = torch.device(cfg.device)
        self.model = prepare_model(model, cfg).train()
        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambdas(self.optimizer, cfg, steps_per_epoch))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.tracked = tracked_parameters(self.model)
        self.params = [p for _, p in self.tracked]
        self.autocast = mixed_precision(self.device)
        # Only the training forward is compiled: evaluation and the analyses (hooks, receptive
        # fields) keep the eager model, and a second graph for eval mode is not worth its compile.
        self.forward = torch.compile(self.model, dynamic=False) if cfg.compile else self.model
        self.new_epoch()

    def new_epoch(self) -> None:
        """Zero the running sums and the gradient samples of an epoch."""
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), dtype=torch.long, device=self.device)
        self.seen, self.steps, self.grad_samples = 0, 0, []

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast:
            logits = self.forward(x)
            loss = self.criterion(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return logits, loss

    def gradients_at_init(self, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        """Per-layer gradient norms of one batch at initialisation, without an update."""
        self.backward(x.to(self.device), y.to(self.device))
        norms = gradient_norms(self.params).tolist()
        self.optimizer.zero_grad(set_to_none=True)
        return norms

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(self.device), y.to(self.device)
        logits, loss = self.backward(x, y)
        if self.steps % self.cfg.grad_log_every == 0:
            self.grad_samples.append(gradient_norms(self.params))
        self.optimizer.step()
        self.scheduler.step()
        if self.host_sync:
            self.loss_sum += loss.item() * len(y)
            self.correct += (logits.argmax(1) == y).sum().item()
        else:
            self.loss_sum += loss.detach() * len(y)
            self.correct += (logits.argmax(1) == y).sum()
        self.seen += len(y)
        self.steps += 1


def train_epoch(step: TrainStep, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], n_steps: int,
                desc: str) -> float:
    """``n_steps`` optimisation steps with a progress bar; returns their wall-clock seconds."""
    step.model.train()
    step.new_epoch()
    bar = tqdm(itertools.islice(batches, n_steps), total=n_steps, desc=desc, leave=False,
               mininterval=1.0, dynamic_ncols=True)

    def run() -> None:
        start = time.perf_counter()
        for i, (x, y) in enumerate(bar):
            step(x, y)
            if i % 25 == 24:  # a host sync, so only every few steps
                bar.set_postfix(loss=f"{step.loss_sum.item() / step.seen:.3f}",
                                acc=f"{step.correct.item() / step.seen:.3f}",
                                img_s=f"{step.seen / (time.perf_counter() - start):.0f}")
    return timed(run, step.device)[0]


def epoch_record(epoch: int, step: TrainStep, seconds: float, train_eval: dict[str, Any],
                 test_eval: dict[str, Any]) -> dict[str, Any]:
    """One entry of a result's ``history``."""
    grads = torch.stack(step.grad_samples)
    return {
        "epoch": epoch,
        "train_loss": train_eval["loss"], "train_acc": train_eval["acc"],
        "running_loss": step.loss_sum.item() / step.seen, "running_acc": step.correct.item() / step.seen,
        "test_loss": test_eval["loss"], "test_acc": test_eval["acc"],
        "lr_end": step.optimizer.param_groups[0]["lr"], "epoch_time_s": seconds,
        "images_per_s": step.seen / seconds,
        "grad_norms": grads.mean(0).tolist(),
        "grad_total_norm": grads.norm(dim=1).tolist(),
    }


def train_model(model: nn.Module, train_set: ImageSet, test_set: ImageSet, cfg: TrainConfig,
                desc: str = "") -> dict[str, Any]:
    """Train ``model`` in place and return its history and final metrics.

    Per epoch it records the running loss/accuracy of the optimisation (augmented batches), clean
    loss/accuracy on a fixed train subset and on the test set, and the mean per-layer gradient
    norm. Training time counts only the optimisation steps, never the evaluation.
    """
    device = torch.device(cfg.device)
    full_steps = len(train_set) // cfg.batch_size or 1
    steps_per_epoch = max(1, round(full_steps * cfg.epoch_fraction))
    loader = BatchIterator(train_set, cfg.batch_size, device, shuffle=True, augment=cfg.augment,
                           drop_last=len(train_set) >= cfg.batch_size,
                           channels_last=cfg.channels_last, seed=cfg.seed, flip=cfg.flip,
                           crop_padding=cfg.crop_padding, crop_mode=cfg.crop_mode)
    train_eval_set = train_set.subset(cfg.train_eval_size, seed=cfg.seed)
    step = TrainStep(model, cfg, steps_per_epoch)  # moves the model to its device and layout
    model = step.model
    if hasattr(model, "init_from_data"):  # e.g. a whitening stem: on clean training images
        model.init_from_data(train_set.normalize(train_set.images[:5000].to(device)))
    if cfg.bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = cfg.bn_momentum
    grad_init = step.gradients_at_init(*next(iter(loader)))  # one batch, no update

    history: list[dict[str, Any]] = []
    train_time, diverged = 0.0, False
    for epoch in range(1, cfg.epochs + 1):
        loader.set_epoch(epoch - 1)
        seconds = train_epoch(step, loader, steps_per_epoch, f"{desc} epoch {epoch}/{cfg.epochs}")
        train_time += seconds
        record = epoch_record(epoch, step, seconds, evaluate(model, train_eval_set, cfg),
                              test_eval := evaluate(model, test_set, cfg, return_predictions=True))
        history.append(record)
        tqdm.write(f"{desc} epoch {epoch}/{cfg.epochs}: loss {record['running_loss']:.4f} "
                   f"train acc {record['train_acc']:.4f} test acc {record['test_acc']:.4f} "
                   f"({seconds:.0f} s, {record['images_per_s']:.0f} img/s)")
        if not np.isfinite(record["running_loss"]):
            diverged = True
            if cfg.stop_on_divergence:
                tqdm.write(f"{desc}: loss is not finite, stopping this model")
                break

    last = history[-1]
    extra = {"test_acc_tta": evaluate_tta(model, test_set, cfg)} if cfg.tta else {}
    return {
        "epochs": len(history),
        "train_loss": last["train_loss"], "train_acc": last["train_acc"],
        "test_loss": last["test_loss"], "test_acc": last["test_acc"], **extra,
        "train_time_s": train_time,
        "steps_per_epoch": steps_per_epoch, "full_steps_per_epoch": full_steps,
        "train_images_per_s": sum(h["images_per_s"] for h in history) / len(history),
        "diverged": diverged,
        "grad_layers": [n for n, _ in step.tracked],
        "grad_norms_init": grad_init,
        "history": history,
        "test_predictions": test_eval["predictions"],  # of the final model; a tensor, not for JSON
    }


# ---------------------------------------------------------------------------------------------
# The fast recipe of issue 11 (airbench94_muon's training side, on the task-1.2 residual CNN).

# Architecture options of CNNWithResidual for it: only where the repository chose the
# architecture (task 1.2's residual CNN), never in a study of the first layer, init or BN.
FAST_MODEL_OPTIONS: dict[str, Any] = dict(
    widths=(24, 32, 64, 128), whiten=True, dirac=True, frozen_bn_scale=True,
    activation="gelu", scaled_head=True)


# The fast recipe (issue 11): large batches at a high learning rate with Muon, linear decay to
# zero, alternating flips, 2-px reflect translations, label smoothing 0.2, BN momentum 0.4, TTA
# reported separately. airbench's values are per example with a summed loss; with the mean loss
# used here an SGD lr is multiplied by the batch size and its weight decay divided by it (the
# same update). Experiments take these fields as their ``train`` (epochs and lr their own).
FAST_BATCH = 2000
FAST_LR = 0.053 * FAST_BATCH
FAST_RECIPE: dict[str, Any] = dict(
    batch_size=FAST_BATCH, optimizer="muon", momentum=0.85, warmup_frac=0.0,
    # airbench trains its head 12.6x faster; here the features entering the head are larger
    # (residual sums) and that diverged: 48.0 % vs 58.5 % validation accuracy after 1 of 2
    # epochs at 4x vs 1x (benchmarks/results/time_to_accuracy/validation).
    head_lr_mult=1.0,
    weight_decay=2e-6 / 0.053,  # lr * wd = 2e-6 * batch per step in every SGD group
    muon_lr=0.24, muon_momentum=0.6, whiten_bias_epochs=3.0, bn_momentum=0.4,
    label_smoothing=0.2, augment="flip_crop", flip="alternate", crop_padding=2,
    crop_mode="reflect", tta=True)


def fast_recipe(**overrides: Any) -> TrainConfig:
    """The fast recipe (``FAST_RECIPE``) for 5 epochs at ``FAST_LR``, with ``overrides``."""
    return TrainConfig(**{"epochs": 5, "lr": FAST_LR, **FAST_RECIPE, **overrides})
