"""Command-line conventions shared by the three homework scripts: flags, output folders, seeds,
data splits, the TrainConfig of a part, and one-line errors."""
from __future__ import annotations

import argparse
import math
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from utils.data import DATASETS, DataError, ImageSet, load_dataset
from utils.results import OutputError, experiment_lock, git_commit, prepare_output_dir, record_run
from utils.training_utils import DeviceError, TrainConfig, resolve_device

QUICK_TRAIN, QUICK_TEST = 256, 128  # --quick: a small subset and one epoch (a smoke test, < 1 min)
BUDGET_TRAIN = 10000  # --budget: a preview of every experiment on 10k training images, 1 epoch


class UsageError(Exception):
    """Flags that contradict each other; the message is one line meant for the user."""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text}")
    return value


def batch_size(text: str) -> int:
    value = int(text)
    if value < 2:  # BatchNorm in training mode needs two examples per batch
        raise argparse.ArgumentTypeError(f"must be at least 2 (BatchNorm needs two examples), got {text}")
    return value


def seeds(text: str) -> list[int]:
    """One seed ("0") or a list of them ("0,1,2")."""
    values = [int(t) for t in text.split(",")]
    for value in values:
        if not 0 <= value < 2**32:  # numpy's seeds
            raise argparse.ArgumentTypeError(f"seeds must be in 0..{2**32 - 1}, got {value}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"seeds must differ, got {text}")
    return values


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
    p.add_argument("--batch-size", type=batch_size, default=None,
                   help="examples per training step (default: per part, see README)")
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default: per part)")
    p.add_argument("--seed", type=seeds, default=[0], metavar="A[,B,...]",
                   help="seed (initialisation and batch order), or a list of seeds to run each model with")
    p.add_argument("--seeds", type=positive_int, default=None, metavar="N",
                   help="run each model with N seeds: --seed, --seed + 1, ... (default 1); "
                        "tables show mean ± std over them")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for PyTorch (default: PyTorch's choice, one per core)")
    p.add_argument("--data-dir", default=None,
                   help="folder with MNIST/raw and cifar-10-batches-py (default: $HOMEWORK_DATA_DIR or ./data)")
    p.add_argument("--no-download", action="store_true", help="never download missing data; fail instead")
    p.add_argument("--results-dir", type=Path, default=None,
                   help=f"default: {FULL_OUTPUTS[0]}, or {REDUCED_OUTPUTS[0]} for a reduced run "
                        "(--quick, --budget, --epoch-fraction < 1), which never touches full results")
    p.add_argument("--plots-dir", type=Path, default=None,
                   help=f"default: {FULL_OUTPUTS[1]}, or {REDUCED_OUTPUTS[1]} for a reduced run")
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK_TRAIN} train / {QUICK_TEST} test images, 1 epoch "
                             "(unless --epochs)")
    preset.add_argument("--budget", action="store_true",
                        help=f"preview: every experiment on {BUDGET_TRAIN} train images (full test "
                             "set) for 1 epoch (unless --epochs); outputs are labelled as such")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each model's training forward (inductor; needs a C++ "
                        "compiler on CPU); measured slower on a 2-core CPU, see README")
    p.add_argument("--epoch-fraction", type=fraction, default=1.0,
                   help="train on this share of each epoch's batches (evaluation stays full): "
                        "for timing projections, see benchmarks/bench_scripts.py")
    p.add_argument("--validation", type=positive_int, default=None, metavar="N",
                   help="choose budgets without the test set: the last N training images become the "
                        "evaluation set and the test set is not read (a reduced run)")
    p.add_argument("--resume", action="store_true",
                   help="skip models whose results exist with the same config")
    p.add_argument("--overwrite", action="store_true",
                   help="replace saved results made with another config (refused otherwise)")
    return p


# Where results and figures go unless --results-dir / --plots-dir say otherwise. A reduced run
# (a smoke test or a preview) gets its own git-ignored folders, so it can never overwrite the
# committed results of a full run, nor reach the README through utils/report.py.
FULL_OUTPUTS = (Path("results"), Path("plots"))
REDUCED_OUTPUTS = (Path("results/quick"), Path("plots/quick"))


def is_reduced_run(args: argparse.Namespace) -> bool:
    return bool(args.quick or args.budget or args.epoch_fraction < 1 or args.validation)


def resolve_outputs(args: argparse.Namespace) -> None:
    """Fill in the default output folders and prove both writable (before any training)."""
    results, plots = REDUCED_OUTPUTS if is_reduced_run(args) else FULL_OUTPUTS
    if args.results_dir is None:
        args.results_dir = results
    if args.plots_dir is None:
        args.plots_dir = plots
    prepare_output_dir(args.results_dir)
    prepare_output_dir(args.plots_dir)
    if is_reduced_run(args):
        print(f"reduced run: results go to {args.results_dir}/, figures to {args.plots_dir}/")


@contextmanager
def locked_experiments(args: argparse.Namespace, experiments: Sequence[str]) -> Iterator[None]:
    """Hold the lock of every experiment folder this run will write (see ``experiment_lock``),
    taken before any training, so two runs never write into one experiment."""
    with ExitStack() as stack:
        for name in experiments:
            stack.enter_context(experiment_lock(Path(args.results_dir) / name))
        yield


def add_dataset_argument(p: argparse.ArgumentParser, default: str | None, help: str) -> None:
    """``--dataset`` with the registered data sets as choices."""
    p.add_argument("--dataset", choices=list(DATASETS), default=default, help=help)


def seed_list(args: argparse.Namespace, fixed: int | None = None) -> list[int]:
    """The seeds of a run: ``--seed A,B,C``, or ``--seeds N`` from ``--seed`` on; ``fixed``
    (an experiment that always uses that many) overrides the count."""
    if fixed is not None:
        return [args.seed + i for i in range(fixed)]
    return list(args.seed_list)


def resolve_seeds(args: argparse.Namespace) -> None:
    """``args.seed_list`` from --seed/--seeds, and ``args.seed`` its first (for data subsets)."""
    if len(args.seed) > 1 and args.seeds is not None:
        raise UsageError("give either --seed A,B,C or --seeds N, not both")
    args.seed_list = args.seed if len(args.seed) > 1 else [args.seed[0] + i for i in range(args.seeds or 1)]
    args.seed = args.seed_list[0]


def setup(args: argparse.Namespace) -> torch.device:
    """Output folders, seeds, device and threads from the CLI; raises DeviceError for an
    unavailable device and OutputError for an output folder that cannot be written."""
    resolve_seeds(args)
    resolve_outputs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Once a net fits its training set, its tiny gradients and momenta become denormal floats,
    # which x86 CPUs compute ~10x slower (measured: a DeepFullyConnected epoch went 12 s -> 168 s);
    # flushing them to zero changes nothing a result shows.
    torch.set_flush_denormal(True)
    device = resolve_device(args.device)
    args.resolved_device = str(device)
    return device


def load_splits(name: str, args: argparse.Namespace, train_size: int | None = None,
                test_size: int | None = None) -> tuple[ImageSet, ImageSet, dict]:
    """Train and test splits (subsets with --quick or --budget, then ``train_size`` /
    ``test_size`` images where an experiment fixes them) and a description saved with the results."""
    train = load_dataset(name, "train", args.data_dir, download=not args.no_download)
    if args.validation:  # the test set stays unread
        if not args.validation < len(train) - 1:
            raise DataError(f"{name}: --validation {args.validation} leaves fewer than 2 of "
                            f"{len(train)} training images")
        train, test = train.split(args.validation)
    else:
        test = load_dataset(name, "test", args.data_dir, download=not args.no_download)
    if args.quick:
        train, test = train.subset(QUICK_TRAIN, args.seed), test.subset(QUICK_TEST, args.seed)
    elif args.budget:
        train = train.subset(BUDGET_TRAIN, args.seed)
    train, test = train.subset(train_size, args.seed), test.subset(test_size, args.seed)
    if len(train) < 2:
        raise DataError(f"{name}: {len(train)} training image(s); training needs at least 2")
    info = {"dataset": name, "train_size": len(train), "test_size": len(test), "quick": args.quick,
            "preset": preset_name(args), "reduced": is_reduced_run(args),
            "data_fingerprint": f"{train.fingerprint}/{test.fingerprint}"}
    return train, test, info


def preset_name(args: argparse.Namespace) -> str | None:
    """How a run was shortened, for the captions of its tables (None: a full run)."""
    names = ["budget"] if args.budget else []  # --quick has its own flag in the captions
    if args.validation:
        names.append(f"validation {args.validation}")
    if args.epoch_fraction < 1:
        names.append(f"epoch-fraction {args.epoch_fraction:g}")
    return " + ".join(names) or None


def make_config(args: argparse.Namespace, device: torch.device, epochs: int, lr: float,
                **fields) -> TrainConfig:
    """The TrainConfig of one part: the part's defaults, overridden by the CLI."""
    short = args.quick or args.budget  # one epoch, unless --epochs says otherwise
    fields = {"batch_size": 128, **fields}
    if args.batch_size is not None:
        fields["batch_size"] = args.batch_size
    return TrainConfig(epochs=args.epochs or (1 if short else epochs), lr=args.lr or lr,
                       seed=args.seed, device=str(device), epoch_fraction=args.epoch_fraction, compile=args.compile, **fields)


def run_main(main: Callable[[], argparse.Namespace]) -> None:
    """Run a script's ``main`` (which returns its parsed arguments), record its wall time and
    peak memory; user errors become one line on stderr and exit code 2."""
    start, commit = time.perf_counter(), git_commit()  # the code that runs, not the code at the end
    try:
        args = main()
        preset = "quick" if args.quick else preset_name(args) or "default"
        if args.resume and not getattr(args, "models_trained", 0):
            # A --resume run that only redrew figures: its minutes would replace the record of
            # the run that trained the models.
            print("nothing was trained: the run record in results/runs/ is kept as it was")
        else:
            record_run(args.results_dir, Path(sys.argv[0]).stem, args.part, preset,
                       time.perf_counter() - start, getattr(args, "resolved_device", args.device), commit)
    except (DataError, DeviceError, OutputError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: results of the models that finished are saved", file=sys.stderr)
        sys.exit(130)
