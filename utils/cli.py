"""Command-line conventions shared by the three homework scripts."""
from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from utils.data import DataError, ImageSet, load_dataset
from utils.training_utils import DeviceError, TrainConfig, resolve_device

QUICK_TRAIN, QUICK_TEST = 1024, 512  # --quick: a small subset and one epoch (a smoke test)
BUDGET_TRAIN = 10000  # --budget: a preview of every experiment on 10k training images, 1 epoch


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def base_parser(description: str, parts: Sequence[str]) -> argparse.ArgumentParser:
    """The arguments every homework script accepts. Defaults of None mean "the script's own"."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--part", choices=[*parts, "all"], default="all", help="which sub-task to run")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs per model (default: each part's own, see README)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default: per part)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for PyTorch (default: PyTorch's choice, one per core)")
    p.add_argument("--data-dir", default=None,
                   help="folder with MNIST/raw and cifar-10-batches-py (default: $HOMEWORK_DATA_DIR or ./data)")
    p.add_argument("--no-download", action="store_true", help="never download missing data; fail instead")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--plots-dir", type=Path, default=Path("plots"))
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: {QUICK_TRAIN} train / {QUICK_TEST} test images, 1 epoch")
    p.add_argument("--budget", action="store_true",
                   help=f"preview: every experiment on {BUDGET_TRAIN} train images (full test set) "
                        "for 1 epoch; outputs are labelled as such")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each model's training forward (inductor; needs a C++ "
                        "compiler on CPU); measured slower on a 2-core CPU, see README")
    p.add_argument("--epoch-fraction", type=fraction, default=1.0,
                   help="train on this share of each epoch's batches (evaluation stays full): "
                        "for timing projections, see benchmarks/bench_scripts.py")
    p.add_argument("--resume", action="store_true",
                   help="skip models whose results exist with the same config")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """Device and threads from the CLI; raises DeviceError for an unavailable device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.resolved_device = str(device)
    return device


def load_splits(name: str, args: argparse.Namespace) -> tuple[ImageSet, ImageSet, dict]:
    """Train and test splits (subsets with --quick) and a description saved with the results."""
    train = load_dataset(name, "train", args.data_dir, download=not args.no_download)
    test = load_dataset(name, "test", args.data_dir, download=not args.no_download)
    if args.quick:
        train, test = train.subset(QUICK_TRAIN, args.seed), test.subset(QUICK_TEST, args.seed)
    elif args.budget:
        train = train.subset(BUDGET_TRAIN, args.seed)
    info = {"dataset": name, "train_size": len(train), "test_size": len(test), "quick": args.quick,
            "preset": preset_name(args)}
    return train, test, info


def preset_name(args: argparse.Namespace) -> str | None:
    """How a run was shortened, for the captions of its tables (None: a full run)."""
    names = ["budget"] if args.budget else []  # --quick has its own flag in the captions
    if args.epoch_fraction < 1:
        names.append(f"epoch-fraction {args.epoch_fraction:g}")
    return " + ".join(names) or None


def make_config(args: argparse.Namespace, device: torch.device, epochs: int, lr: float,
                **fields) -> TrainConfig:
    """The TrainConfig of one part: the part's defaults, overridden by the CLI."""
    short = args.quick or args.budget
    return TrainConfig(epochs=1 if short else (args.epochs or epochs), lr=args.lr or lr,
                       batch_size=args.batch_size, seed=args.seed, device=str(device),
                       epoch_fraction=args.epoch_fraction, compile=args.compile, **fields)


def cpu_name() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {torch.get_num_threads()} threads"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


RUN_COLUMNS = (("script", "скрипт", "str"), ("part", "часть", "str"), ("preset", "режим", "str"),
               ("wall_time_min", "время, мин", "f2"), ("peak_rss_mb", "пик RSS, МБ", "int"),
               ("device", "устройство", "str"), ("cpu", "процессор", "str"))


def record_run(args: argparse.Namespace, script: str, seconds: float) -> None:
    """Write the wall time and peak memory of a whole script run to ``<results>/runs/``."""
    from utils.comparison_utils import load_results, markdown_table, write_json_atomic, write_text_atomic

    out = Path(args.results_dir) / "runs"
    preset = "quick" if args.quick else preset_name(args) or "default"
    name = script if args.part == "all" else f"{script}_part{args.part}"
    write_json_atomic(out / f"{name}.json", {
        "model": script, "script": script, "part": args.part, "preset": preset,
        "argv": sys.argv[1:], "wall_time_min": seconds / 60, "peak_rss_mb": peak_rss_mb(),
        "device": getattr(args, "resolved_device", args.device), "cpu": cpu_name(),
        "torch": torch.__version__})
    runs = load_results(out)
    write_text_atomic(out / "table.md", markdown_table(runs, RUN_COLUMNS) + "\n")


def run_main(main: Callable[[], argparse.Namespace]) -> None:
    """Run a script's ``main`` (which returns its parsed arguments), record its wall time and
    peak memory; user errors become one line on stderr and exit code 2."""
    start = time.perf_counter()
    try:
        args = main()
        record_run(args, Path(sys.argv[0]).stem, time.perf_counter() - start)
    except (DataError, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: results of the models that finished are saved", file=sys.stderr)
        sys.exit(130)
