"""Time to accuracy on CIFAR-10: named recipes trained one after the other in one invocation.

Each recipe is a model and a TrainConfig trained by the one loop, ``utils.training_utils.train_model``
("reference" runs the airbench CPU probe, ../shared/reference/airbench_cpu_probe.py, as a
subprocess). Per recipe and seed it prints the model, its parameters and forward MFLOPs per image,
the epochs, training img/s and minutes, the accuracy after every epoch, the final accuracy (TTA in
its own column) and the training minutes to first reach 80 / 85 / 90 %. Each recipe-seed result is
written as JSON (with its full config and the machine's load) as soon as it finishes;
``--resume`` skips those already written.

    python benchmarks/bench_time_to_accuracy.py --data-dir ../shared/data --recipes current,new --seeds 3
    python benchmarks/bench_time_to_accuracy.py --data-dir ../shared/data --validation \\
        --recipes new --set flip=random --name new-no-altflip      # one row of the ablation
    python benchmarks/bench_time_to_accuracy.py --quick             # tiny synthetic data (tests)

``--validation`` trains on the first 45 000 training images and evaluates on the last 5 000:
techniques are chosen there, never on the test set.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.cnn_models import CNNWithResidual, count_flops, count_parameters  # noqa: E402
from utils.cli import UsageError  # noqa: E402
from utils.data import DataError, ImageSet, load_dataset  # noqa: E402
from utils.synthetic_data import write_cifar10  # noqa: E402
from utils.training_utils import (FAST_MODEL_OPTIONS, TrainConfig, fast_recipe,  # noqa: E402
                                  train_model)

THRESHOLDS = (0.80, 0.85, 0.90)
VALIDATION_SIZE = 5000
PROBE = ROOT.parent / "shared" / "reference" / "airbench_cpu_probe.py"

# name -> (model options for CNNWithResidual, config). "current" is task 1.2's ResidualCNN+reg
# as homework_cnn_vs_fc_comparison.py trained it before it adopted the new recipe (5 epochs,
# one-cycle SGD at 0.1, batch 128, flip+crop, label smoothing 0.1); "new" is the fast recipe of
# issue 11 (task 1.2 now trains with it, for its own number of epochs).
RECIPES: dict[str, tuple[dict[str, Any], Callable[..., TrainConfig]]] = {
    "current": (dict(widths=(16, 32, 64, 128)),
                lambda **kw: TrainConfig(**{**dict(epochs=5, lr=0.1, augment="flip_crop",
                                                    label_smoothing=0.1), **kw})),
    "new": (FAST_MODEL_OPTIONS, fast_recipe),
}


def parse_value(text: str) -> Any:
    """A --set value: JSON where it parses (numbers, true/false, null, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sets(items: list[str], allowed: set[str], what: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise UsageError(f"{what} expects KEY=VALUE with KEY one of {', '.join(sorted(allowed))}; "
                             f"got {item!r}")
        out[key] = parse_value(value)
    return out


def minutes_to(history: list[dict], threshold: float) -> float | None:
    """Training minutes (evaluation excluded) at the end of the first epoch at ``threshold``."""
    minutes = 0.0
    for h in history:
        minutes += h["epoch_time_s"] / 60
        if h["acc"] >= threshold:
            return minutes
    return None


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_engine(recipe: str, seed: int, args: argparse.Namespace, train: ImageSet, evalset: ImageSet,
               cfg_sets: dict, model_sets: dict) -> dict:
    options, make_cfg = RECIPES[recipe]
    options = {**options, **model_sets}
    cfg = make_cfg(**{"seed": seed, **cfg_sets})
    torch.manual_seed(seed)
    model = CNNWithResidual(3, 10, **options)
    params, mflops = count_parameters(model), count_flops(model, train.shape) / 1e6  # draws no random numbers
    result = train_model(model, train, evalset, cfg, desc=f"{recipe} seed {seed}")
    history = [{"epoch": h["epoch"], "acc": h["test_acc"], "loss": h["test_loss"],
                "train_acc": h["train_acc"], "epoch_time_s": h["epoch_time_s"],
                "images_per_s": h["images_per_s"]} for h in result["history"]]
    return {"model": "CNNWithResidual", "model_options": options, "config": cfg.to_dict(),
            "params": params, "mflops_per_image": mflops, "epochs": result["epochs"],
            "train_images_per_s": result["train_images_per_s"],
            "train_min": result["train_time_s"] / 60, "acc": result["test_acc"],
            "acc_tta": result.get("test_acc_tta"), "history": history, "diverged": result["diverged"]}


def run_reference(seed: int, args: argparse.Namespace) -> dict:
    """The airbench CPU probe at width x0.5 (its own seed 0 and loop; test set only)."""
    if not PROBE.is_file():
        raise UsageError(f"reference probe not found at {PROBE}")
    cmd = [sys.executable, str(PROBE), str(args.data_dir), str(args.epochs or 5),
           str(args.threads), "0.5"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"reference probe failed: {proc.stderr[-2000:]}")
    out = proc.stdout
    history, last = [], 0.0
    for m in re.finditer(r"epoch (\d+): train (\d+) s \((\d+) img/s\), test acc ([\d.]+)", out):
        total = float(m.group(2))
        history.append({"epoch": int(m.group(1)), "acc": float(m.group(4)),
                        "epoch_time_s": total - last, "images_per_s": float(m.group(3))})
        last = total
    params = int(re.search(r"params (\d+)", out).group(1))
    tta = float(re.search(r"final TTA acc ([\d.]+)", out).group(1))
    return {"model": "airbench probe x0.5", "model_options": {"width_scale": 0.5},
            "config": {"command": " ".join(cmd[1:]), "seed": 0}, "params": params,
            "mflops_per_image": None, "epochs": len(history),
            "train_images_per_s": statistics.mean(h["images_per_s"] for h in history),
            "train_min": last / 60, "acc": history[-1]["acc"], "acc_tta": tta, "history": history,
            "stdout": out}


def fmt(x: float | None, spec: str = ".1f", scale: float = 1.0) -> str:
    return "-" if x is None else format(x * scale, spec)


def print_row(r: dict) -> None:
    reach = " ".join(fmt(r["minutes_to"][f"{t:.2f}"], ".1f") for t in THRESHOLDS)
    curve = " ".join(fmt(h["acc"], ".1f", 100) for h in r["history"])
    print(f"{r['name']:<22}{r['seed']:>4} {r['params'] / 1e6:7.3f} {fmt(r['mflops_per_image'], '.1f'):>8} "
          f"{r['epochs']:>3} {r['train_images_per_s']:7.0f} {r['train_min']:7.1f} "
          f"{100 * r['acc']:7.2f} {fmt(r['acc_tta'], '.2f', 100):>7}   {reach:<16} [{curve}]", flush=True)


HEADER = (f"{'recipe':<22}{'seed':>4} {'params M':>7} {'MFLOPs':>8} {'ep':>3} {'img/s':>7} "
          f"{'train min':>7} {'acc %':>7} {'TTA %':>7}   min to 80/85/90  [acc % after each epoch]")


def summarise(results: list[dict]) -> None:
    """Mean ± std over seeds of every recipe with more than one."""
    by_name: dict[str, list[dict]] = {}
    for r in results:
        by_name.setdefault(r["name"], []).append(r)
    print("\nmean ± std over seeds")
    for name, rs in by_name.items():
        accs = [100 * r["acc"] for r in rs]
        ttas = [100 * r["acc_tta"] for r in rs if r["acc_tta"] is not None]
        mins = [r["train_min"] for r in rs]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
        line = (f"{name:<22} n={len(rs)}  acc {statistics.mean(accs):.2f} ± {sd(accs):.2f} %  "
                f"train {statistics.mean(mins):.1f} ± {sd(mins):.1f} min")
        if ttas:
            line += f"  TTA {statistics.mean(ttas):.2f} ± {sd(ttas):.2f} %"
        print(line, flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=None, help="folder with cifar-10-batches-py/")
    p.add_argument("--recipes", default="current,new", help=f"comma list of {', '.join(RECIPES)}, reference")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 for every recipe")
    p.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    p.add_argument("--validation", action="store_true",
                   help=f"train on all but the last {VALIDATION_SIZE} training images, evaluate on them")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig field of the engine recipes (repeatable)")
    p.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a CNNWithResidual option of the engine recipes (repeatable)")
    p.add_argument("--name", default=None, help="label of the results (one recipe only)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "time_to_accuracy")
    p.add_argument("--resume", action="store_true", help="skip recipe-seeds whose result exists")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny synthetic CIFAR-10, 1 epoch, small batches")
    p.add_argument("--report", action="store_true", help="print the results already in --out; train nothing")
    args = p.parse_args(argv)
    if args.report:
        results = [json.loads(f.read_text()) for f in sorted(args.out.glob("*.json"))]
        if not results:
            raise UsageError(f"no results in {args.out}")
        print(HEADER)
        for r in sorted(results, key=lambda r: (r["name"], r["seed"])):
            print_row(r)
        summarise(results)
        return

    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES and r != "reference"]
    if unknown or not recipes:
        raise UsageError(f"unknown recipe(s) {unknown}; choose from {', '.join(RECIPES)}, reference")
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        raise UsageError("--seeds and --epochs must be positive")
    if args.name and len(recipes) != 1:
        raise UsageError("--name labels one recipe; give one in --recipes")
    cfg_sets = parse_sets(args.set, {f.name for f in fields(TrainConfig)}, "--set")
    model_sets = parse_sets(args.model_set, {"widths", "blocks", "dropout", "whiten", "dirac",
                                             "frozen_bn_scale", "activation", "scaled_head"}, "--model-set")
    if args.epochs:
        cfg_sets["epochs"] = args.epochs
    torch.set_num_threads(args.threads)

    tmp = None
    if args.quick:  # the real on-disk format, tiny and synthetic
        tmp = tempfile.TemporaryDirectory()
        args.data_dir = write_cifar10(Path(tmp.name), n_per_batch=40, n_test=100)
        cfg_sets = {"epochs": 1, "batch_size": 100, "eval_batch_size": 100, "train_eval_size": 100,
                    **cfg_sets}
        if "reference" in recipes:
            raise UsageError("--quick runs the engine recipes only (the probe needs the real data)")
    if args.data_dir is None:
        raise UsageError("--data-dir is required (the folder that holds cifar-10-batches-py/)")
    train = load_dataset("cifar10", "train", args.data_dir, download=False)
    test = load_dataset("cifar10", "test", args.data_dir, download=False)
    split = "test"
    if args.validation:
        holdout = VALIDATION_SIZE if not args.quick else 50
        train, test = train.split(holdout)
        split = "validation"

    args.out.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{torch.backends.cpu.get_cpu_capability()}; train {len(train)} images, "
          f"{split} {len(test)} images{' (quick: synthetic)' if args.quick else ''}")
    print(f"accuracy on the {split} set; TTA in its own column; minutes = training steps only\n")
    print(HEADER, flush=True)
    results = []
    # Seed by seed, every recipe in turn: a stop leaves paired results, and a change in the
    # machine's load hits all recipes alike.
    for seed, recipe in [(s, r) for s in range(args.seeds) for r in recipes
                         if r != "reference" or s == 0]:
        name = args.name or recipe
        path = args.out / f"{name}{'_val' if args.validation else ''}_seed{seed}.json"
        if args.resume and path.is_file():
            r = json.loads(path.read_text())
            print_row(r)
            results.append(r)
            continue
        load_start, start = load_avg(), time.time()
        r = (run_reference(seed, args) if recipe == "reference"
             else run_engine(recipe, seed, args, train, test, cfg_sets, model_sets))
        r = {"name": name, "recipe": recipe, "seed": seed, "split": split, "quick": args.quick,
             "overrides": {"config": cfg_sets, "model": model_sets}, **r,
             "minutes_to": {f"{t:.2f}": minutes_to(r["history"], t) for t in THRESHOLDS},
             "wall_min": (time.time() - start) / 60, "threads": torch.get_num_threads(),
             "cpu": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
             "load_avg_start": load_start, "load_avg_end": load_avg(),
             "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        path.write_text(json.dumps(r, indent=1))
        print_row(r)
        results.append(r)
    summarise(results)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    try:
        main()
    except (UsageError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
