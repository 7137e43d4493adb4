"""Where the time of a training step goes: torch.profiler over train_model's steps.

Trains task 1's model for one short epoch through utils.training_utils.train_model (the real
loop: BatchIterator, step, gradient-norm samples, schedule, tqdm) under torch.profiler and prints
the operators by their own CPU time, so per-step overhead (copies, layout conversions, host
syncs, Python) shows next to the convolutions.

    python benchmarks/profile_step.py --dataset cifar10 --steps 20 --threads 1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from benchmarks.common import MODELS, make_config, run_benchmark, synthetic_set  # noqa: E402
from utils.cli import positive_int  # noqa: E402
from utils.training_utils import set_seed, train_model  # noqa: E402


def profile_training(dataset: str, steps: int, batch_size: int, rows: int) -> None:
    spec = MODELS[dataset]
    cfg = make_config(spec, batch_size)
    cfg.epochs, cfg.train_eval_size, cfg.eval_batch_size = 1, batch_size, batch_size
    train, test = synthetic_set(dataset, steps * batch_size), synthetic_set(dataset, batch_size, seed=1)
    set_seed(0)
    train_model(spec.build(), train.subset(2 * batch_size), test, cfg)  # warm-up: oneDNN primitives
    set_seed(0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = train_model(spec.build(), train, test, cfg, desc="profile")
    print(f"{dataset} / {MODELS[dataset].name}: {steps} steps of batch {batch_size}, "
          f"{result['train_images_per_s']:.0f} img/s while profiled, {torch.get_num_threads()} threads")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["mnist", "cifar10"], default="cifar10")
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--rows", type=positive_int, default=30)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    profile_training(args.dataset, args.steps, args.batch_size, args.rows)


if __name__ == "__main__":
    run_benchmark(main)
