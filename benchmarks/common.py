"""What the benchmarks share: the models of task 1, data, interleaved timing.

The training step is the engine's own (``utils.training_utils.TrainStep``, the one
``train_model`` runs), so only what a benchmark varies differs.
"""
from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

from models.cnn_models import CNNWithResidual, SimpleCNN  # noqa: E402
from utils.data import DATASETS, DataError, ImageSet, load_dataset  # noqa: E402
from utils.training_utils import DeviceError, TrainConfig, TrainStep, resolve_device, timed  # noqa: E402

Batch = tuple[torch.Tensor, torch.Tensor]



@dataclass(frozen=True)
class BenchModel:
    """A model the benchmarks train: how task 1 builds it and what its training adds."""

    name: str
    build: Callable[[], nn.Module]
    overrides: dict = field(default_factory=dict)  # TrainConfig fields


# The two models the speed benchmarks train (tests/test_benchmarks.py checks them): task 1.1's
# SimpleCNN, and on CIFAR-10 task 1.2's residual CNN as it was trained before the fast recipe
# (the "current" baseline of bench_time_to_accuracy.py), with its "+reg" training, so that both
# pipelines do crop+flip augmentation; its committed speed results were measured on it.
MODELS = {
    "mnist": BenchModel("SimpleCNN", lambda: SimpleCNN(1, 10, channels=(32, 64))),
    "cifar10": BenchModel("ResidualCNN+reg", lambda: CNNWithResidual(3, 10, widths=(16, 32, 64, 128)),
                          {"augment": "flip_crop", "label_smoothing": 0.1}),
}
LR = 0.1  # the peak learning rate of both (SGD, one-cycle)


def make_config(model: BenchModel, batch_size: int = 128, channels_last: bool = True,
                device: str = "cpu") -> TrainConfig:
    """Task 1's training settings for ``model``."""
    fields = {**model.overrides, "batch_size": batch_size, "channels_last": channels_last}
    return TrainConfig(lr=LR, device=device, **fields)


def synthetic_set(dataset: str, n: int, seed: int = 0) -> ImageSet:
    """Random uint8 images of the data set's shape (the speed does not depend on the pixels)."""
    d = DATASETS[dataset]
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (n, *d.shape), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, len(d.classes), n))
    return ImageSet(images, labels, d.classes, d.mean, d.std, crop_padding=d.crop_padding)


def train_set(dataset: str, data_dir: str | None, n_synthetic: int) -> ImageSet:
    """The real training split from ``data_dir`` (never downloaded), else a synthetic one."""
    if data_dir:
        return load_dataset(dataset, "train", data_dir, download=False)
    return synthetic_set(dataset, n_synthetic)


# A long schedule: the learning rate stays away from zero during a benchmark.
LONG_SCHEDULE = 10_000


def make_step(model: nn.Module, cfg: TrainConfig, host_sync: bool = False) -> TrainStep:
    """The engine's training step for ``model`` (see ``utils.training_utils.TrainStep``)."""
    return TrainStep(model, replace(cfg, epochs=1), steps_per_epoch=LONG_SCHEDULE, host_sync=host_sync)


def batches_forever(new_epoch: Callable[[], Iterator[Batch]]) -> Iterator[Batch]:
    """Batches of one epoch after another (an epoch boundary costs what it costs in training).

    The first epoch's iterator is made here, so that a caller can start it (and a DataLoader's
    worker processes) before it starts a timer.
    """
    def later() -> Iterator[Batch]:
        while True:
            yield from new_epoch()
    return itertools.chain(new_epoch(), later())


def run_steps(step: TrainStep, batches: Iterator[Batch], n: int) -> float:
    """Images per second of ``n`` steps on batches drawn from ``batches`` (loading included;
    queued GPU work is waited for at both ends)."""
    seen = step.seen

    def run() -> None:
        for _ in range(n):
            step(*next(batches))
    seconds, = timed(run, step.device)
    return (step.seen - seen) / seconds


def interleave(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call every run ``repeats`` times, alternating the order (A B, B A, A B ...), so that
    a change in the machine's load hits all of them alike."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            out[name].append(runs[name]())
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child (DataLoader
    workers), in MB (``ru_maxrss`` is in KB on Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def run_benchmark(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``; a data error is one line on stderr and exit code 2.
    (utils.cli.run_main would also record the run among the homework's results.)"""
    try:
        main()
    except (DataError, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def setup_machine(args: argparse.Namespace) -> None:
    """Threads and device from a benchmark's CLI (a missing GPU is DeviceError, one line), then
    the line that says what the numbers were measured on."""
    if args.threads:
        torch.set_num_threads(args.threads)
    resolve_device(args.device)
    print(machine_line(args.device))


def print_throughput(results: dict[str, list[float]], first_column: str, base_label: str) -> None:
    """One row per run: median images/s, its ratio to the first run's, and every chunk."""
    base = median(next(iter(results.values())))
    width = max(map(len, results)) + 2
    vs = f"vs {base_label}"
    print(f"{first_column:<{width}}{'img/s':>8}{vs:>{len(vs) + 2}}   chunks (img/s)")
    for name, values in results.items():
        print(f"{name:<{width}}{median(values):8.0f}{median(values) / base:>{len(vs) + 1}.2f}x   "
              + " ".join(f"{v:.0f}" for v in values))


def datasets(choice: str) -> tuple[str, ...]:
    return ("mnist", "cifar10") if choice == "all" else (choice,)


def machine_line(device: str = "cpu") -> str:
    if device == "cuda":
        return f"torch {torch.__version__}, {torch.cuda.get_device_name()}, bf16 autocast"
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()}")
