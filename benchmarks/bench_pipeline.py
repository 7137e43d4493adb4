"""Training throughput: a naive PyTorch input pipeline vs this project's core, side by side.

Both pipelines train the same model (task 1's MNIST SimpleCNN and CIFAR-10 residual CNN) with
the same optimiser, schedule, loss and batch size; what differs is only the input path:

- naive: a torchvision-style Dataset that returns one PIL image at a time through per-sample
  transforms (RandomCrop(32, padding=4) + RandomHorizontalFlip on CIFAR-10, ToTensor,
  Normalize), a DataLoader, NCHW tensors, and ``.item()`` on the loss and accuracy every step;
- core: utils.data.BatchIterator (whole-batch slicing, normalisation and augmentation on
  tensors), channels_last, running sums kept on the device (as train_model does).

Measured steps are split into chunks run in alternating order (A B, B A, ...), so a change in
the machine's load hits both; the medians of the chunks are reported.

    python benchmarks/bench_pipeline.py                       # synthetic data, ~1-2 min
    python benchmarks/bench_pipeline.py --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from benchmarks.common import (MODELS, Batch, make_step, batches_forever, datasets, interleave,  # noqa: E402
                               make_config, median, peak_rss_mb,
                               print_throughput, run_benchmark, run_steps, setup_machine,
                               train_set)
from utils.cli import positive_int  # noqa: E402
from utils.data import BatchIterator, ImageSet  # noqa: E402
from utils.training_utils import TrainStep, set_seed  # noqa: E402

FULL_SIZE = {"mnist": 60000, "cifar10": 50000}  # synthetic sets as large as the real ones


class NaiveDataset(Dataset):
    """Like torchvision's MNIST/CIFAR10: HWC uint8 arrays, one PIL image per item, transforms."""

    def __init__(self, data: ImageSet, transform: Callable) -> None:
        images = data.images.numpy().transpose(0, 2, 3, 1)  # a view, as torchvision keeps it
        self.images = images[..., 0] if images.shape[-1] == 1 else images
        self.targets = data.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), self.targets[i]


def naive_transform(data: ImageSet, augment: str) -> T.Compose:
    """The per-sample transforms of a typical tutorial, with the augmentation of ``augment``."""
    steps: list = []
    if "crop" in augment:
        steps.append(T.RandomCrop(data.shape[-1], padding=4))
    if "flip" in augment:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + [T.ToTensor(), T.Normalize(data.mean, data.std)])


Pipeline = tuple[TrainStep, Callable[[], Iterator[Batch]]]  # the step, and how to start an epoch


def naive_pipeline(data: ImageSet, dataset: str, batch_size: int, workers: int, device: str) -> Pipeline:
    spec = MODELS[dataset]
    cfg = make_config(spec, batch_size, channels_last=False, device=device)
    set_seed(0)
    step = make_step(spec.build(), cfg, host_sync=True)
    loader = DataLoader(NaiveDataset(data, naive_transform(data, cfg.augment)), batch_size=batch_size,
                        shuffle=True, num_workers=workers, drop_last=True)
    return step, lambda: iter(loader)


def core_pipeline(data: ImageSet, dataset: str, batch_size: int, device: str) -> Pipeline:
    spec = MODELS[dataset]
    cfg = make_config(spec, batch_size, channels_last=True, device=device)
    set_seed(0)
    step = make_step(spec.build(), cfg)
    batches = BatchIterator(data, batch_size, cfg.device, shuffle=True, augment=cfg.augment,
                            drop_last=True, channels_last=True, seed=0)
    return step, lambda: iter(batches)


def chunk_runner(step: TrainStep, new_epoch: Callable[[], Iterator[Batch]], steps: int) -> Callable[[], float]:
    """A run of ``steps`` steps that starts a fresh epoch (and DataLoader workers) untimed."""
    return lambda: run_steps(step, batches_forever(new_epoch), steps)


def benchmark_dataset(dataset: str, args: argparse.Namespace) -> None:
    """Warm up, then time each pipeline on ``dataset`` in interleaved chunks and print the table."""
    data = train_set(dataset, args.data_dir, args.synthetic_size or FULL_SIZE[dataset])
    pipelines = {}
    if "naive" in args.only:
        for w in args.workers:
            pipelines[f"naive, DataLoader({w} workers)"] = naive_pipeline(
                data, dataset, args.batch_size, w, args.device)
    if "core" in args.only:
        pipelines["core, BatchIterator"] = core_pipeline(data, dataset, args.batch_size, args.device)
    for step, new_epoch in pipelines.values():
        run_steps(step, batches_forever(new_epoch), args.warmup)
    chunk = max(1, args.steps // args.repeats)
    results = interleave({name: chunk_runner(step, new_epoch, chunk)
                          for name, (step, new_epoch) in pipelines.items()}, args.repeats)

    source = f"data from {args.data_dir}" if args.data_dir else "synthetic data"
    print(f"\n{dataset} / {MODELS[dataset].name}, batch {args.batch_size}, {len(data)} train images "
          f"({source}); {args.warmup} warm-up steps, then {args.repeats} x {chunk} steps per pipeline")
    print_throughput(results, "pipeline", next(iter(results)))
    core = results.get("core, BatchIterator")
    naive = {k: v for k, v in results.items() if k.startswith("naive")}
    if core and naive:
        best = max(naive, key=lambda k: median(naive[k]))
        print(f"ratio core / best naive ({best}): {median(core) / median(naive[best]):.2f}x")
    own, children = peak_rss_mb()
    print(f"peak RSS so far: {own:.0f} MB (this process), {children:.0f} MB (largest finished worker)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=["mnist", "cifar10", "all"], default="all")
    p.add_argument("--steps", type=positive_int, default=30, help="measured steps per pipeline")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="the measured steps are split into this many interleaved chunks")
    p.add_argument("--warmup", type=positive_int, default=5, help="untimed steps per pipeline first")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--workers", type=lambda s: [int(w) for w in s.split(",")], default=[0, 2],
                   help="comma-separated DataLoader num_workers values of the naive pipeline")
    p.add_argument("--only", choices=["naive", "core", "naive,core"], default="naive,core",
                   help="run one pipeline alone, e.g. to read its own peak RSS")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cuda: the naive pipeline copies each batch to the GPU, the core keeps the "
                        "data set there; both under bf16 autocast")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="PyTorch compute threads (default: PyTorch's choice, one per core)")
    p.add_argument("--data-dir", default=None,
                   help="folder with MNIST/raw and cifar-10-batches-py (default: synthetic data)")
    p.add_argument("--synthetic-size", type=positive_int, default=None,
                   help="synthetic train images (default: as many as the real split)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    setup_machine(args)
    for dataset in datasets(args.dataset):
        benchmark_dataset(dataset, args)


if __name__ == "__main__":
    run_benchmark(main)
