"""Training-step throughput of the core under options: layout, batch size, threads, torch.compile.

Each variant changes one thing from the baseline (the core's defaults: BatchIterator,
channels_last, batch 128, PyTorch's default number of threads, eager mode) and trains task 1's
MNIST SimpleCNN or CIFAR-10 residual CNN on synthetic data. Variants are timed in chunks of the
same number of images, in alternating order, and the medians are compared with the baseline.
torch.compile's compile time is reported apart, with the number of images after which it pays off.

    python benchmarks/bench_options.py                 # ~3 min on a 2-core CPU
    python benchmarks/bench_options.py --no-compile --dataset cifar10 --threads 1
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from benchmarks.common import (MODELS, make_step, batches_forever, datasets, interleave,  # noqa: E402
                               make_config, median, peak_rss_mb, run_benchmark,
                               print_throughput, run_steps, setup_machine, train_set)
from utils.cli import positive_int  # noqa: E402
from utils.data import BatchIterator, ImageSet  # noqa: E402
from utils.training_utils import set_seed  # noqa: E402


@dataclass
class Variant:
    name: str
    batch_size: int = 128
    channels_last: bool = True
    threads: int | None = None  # None: the process's default
    compile: bool = False


def variants(args: argparse.Namespace) -> list[Variant]:
    default = torch.get_num_threads()
    setting = f"{default} thread{'s' * (default > 1)}" if args.device == "cpu" else "bf16 autocast"
    out = [Variant(f"baseline (channels_last, batch 128, {setting})"),
           Variant("NCHW", channels_last=False),
           Variant("batch 64", batch_size=64),
           Variant("batch 256", batch_size=256)]
    if args.device == "cpu":  # threads are the CPU's knob; on a GPU they only feed the launches
        out += [Variant(f"{t} thread{'s' * (t > 1)}", threads=t) for t in args.compare_threads if t != default]
    if not args.no_compile:
        out.append(Variant("torch.compile (inductor)", compile=True))
    return out


def with_threads(threads: int | None, run: Callable[[], float]) -> Callable[[], float]:
    """``run`` with the number of compute threads set for its duration."""
    if threads is None:
        return run

    def wrapped() -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run()
        finally:
            torch.set_num_threads(before)
    return wrapped


def prepare(variant: Variant, data: ImageSet, dataset: str, images: int, warmup: int, device: str):
    """Build the variant's step and batches, run its warm-up; return (chunk runner, warm-up s)."""
    spec = MODELS[dataset]
    cfg = make_config(spec, variant.batch_size, variant.channels_last, device)
    set_seed(0)
    step = make_step(spec.build(), replace(cfg, compile=variant.compile))
    batches = BatchIterator(data, variant.batch_size, cfg.device, shuffle=True, augment=cfg.augment,
                            drop_last=True, channels_last=variant.channels_last, seed=0)
    steps = max(1, images // variant.batch_size)
    start = time.perf_counter()
    with_threads(variant.threads, lambda: run_steps(step, batches_forever(lambda: iter(batches)), warmup))()
    warmup_s = time.perf_counter() - start
    run = with_threads(variant.threads, lambda: run_steps(step, batches_forever(lambda: iter(batches)), steps))
    return run, warmup_s


def benchmark_dataset(dataset: str, args: argparse.Namespace) -> None:
    data = train_set(dataset, None, args.synthetic_size)
    runs, warmups = {}, {}
    for v in variants(args):
        try:
            runs[v.name], warmups[v.name] = prepare(v, data, dataset, args.images, args.warmup,
                                                          args.device)
        except Exception as e:  # compilation needs a C++ toolchain; report and go on without it
            first = (str(e).strip().splitlines() or [""])[0][:200]
            print(f"[skip] {dataset} / {v.name}: {type(e).__name__}: {first}")
    results = interleave(runs, args.repeats)

    print(f"\n{dataset} / {MODELS[dataset].name}, synthetic data, {args.warmup} warm-up steps, then "
          f"{args.repeats} x {args.images} images per variant")
    print_throughput(results, "variant", "baseline")
    base = next(iter(results))
    for name in results:
        if "compile" in name:
            report_compile(name, warmups[name], results[name], results[base], args)


def report_compile(name: str, warmup_s: float, compiled: list[float], eager: list[float],
                   args: argparse.Namespace) -> None:
    """Compile time (warm-up minus the same steps at the compiled speed) and its break-even."""
    compile_s = warmup_s - args.warmup * Variant("").batch_size / median(compiled)
    saved_per_image = 1 / median(eager) - 1 / median(compiled)
    line = f"{name}: compile time ~{compile_s:.0f} s (warm-up of {args.warmup} steps: {warmup_s:.0f} s)"
    if saved_per_image > 0:
        line += f"; pays off after ~{compile_s / saved_per_image:,.0f} training images"
    else:
        line += "; never pays off at this speed"
    print(line + " (as with --compile, only the training forward is compiled)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=["mnist", "cifar10", "all"], default="all")
    p.add_argument("--images", type=positive_int, default=1024,
                   help="images per timed chunk (8 steps at batch 128)")
    p.add_argument("--repeats", type=positive_int, default=3, help="interleaved chunks per variant")
    p.add_argument("--warmup", type=positive_int, default=3, help="untimed steps per variant first")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cuda: bf16 autocast, as train_model; use more --images per chunk there")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="compute threads of the baseline (default: PyTorch's choice, one per core)")
    p.add_argument("--compare-threads", type=lambda s: [int(t) for t in s.split(",")], default=[1, 2],
                   help="thread counts to compare with the baseline's")
    p.add_argument("--warm-cache", action="store_true",
                   help="let torch.compile reuse inductor's on-disk cache (default: a fresh one, so "
                        "the compile time is what a first run pays)")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    p.add_argument("--synthetic-size", type=positive_int, default=4096,
                   help="synthetic train images (the speed does not depend on the set's size)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cache-")
    setup_machine(args)
    for dataset in datasets(args.dataset):
        benchmark_dataset(dataset, args)
    own, _ = peak_rss_mb()
    print(f"\npeak RSS: {own:.0f} MB")


if __name__ == "__main__":
    run_benchmark(main)
