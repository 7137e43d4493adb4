"""Task 1: convolutional vs fully-connected networks on MNIST (1.1) and CIFAR-10 (1.2).

Every model of a comparison is trained with the same optimiser, schedule, batch size and
number of epochs (see ``TrainConfig`` in each result's ``config``). The regularised residual
CNN of 1.2 is the same architecture as the plain one; only its training adds regularisation.

    python homework_cnn_vs_fc_comparison.py --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from models.cnn_models import CNNWithResidual, FullyConnected, SimpleCNN
from utils.cli import base_parser, load_splits, locked_experiments, make_config, run_main, setup
from utils.comparison_utils import (ModelSpec, is_reduced, markdown_table, reduced_mark, run_comparison,
                                    write_table, write_text_atomic)
from utils.visualization_utils import save_comparison_figures

MNIST_EPOCHS = 4
CIFAR_EPOCHS = 5
LR = 0.1  # peak of the one-cycle schedule, SGD + Nesterov, batch 128

# The regularisation of "ResidualCNN+reg" (1.2): random crops with 4-pixel padding and horizontal
# flips (the data does not change its label under them) and label smoothing (keeps logits small).
REGULARIZATION = {"augment": "flip_crop", "label_smoothing": 0.1}


def mnist_models() -> list[ModelSpec]:
    return [
        ModelSpec("FullyConnected", lambda: FullyConnected((1, 28, 28), 10, hidden=(512, 256, 128)),
                  notes="4 linear layers"),
        ModelSpec("SimpleCNN", lambda: SimpleCNN(1, 10, channels=(32, 64)), notes="2 conv layers"),
        ModelSpec("ResidualCNN", lambda: CNNWithResidual(1, 10, widths=(8, 16, 32, 64)),
                  notes="stem + 3 conv-pool stages with a residual block each"),
    ]


def cifar_models() -> list[ModelSpec]:
    residual = lambda: CNNWithResidual(3, 10, widths=(16, 32, 64, 128))  # noqa: E731
    return [
        ModelSpec("DeepFullyConnected",
                  lambda: FullyConnected((3, 32, 32), 10, hidden=(1024, 512, 256, 128)),
                  notes="5 linear layers"),
        ModelSpec("ResidualCNN", residual, notes="stem + 3 conv-pool stages with a residual block each"),
        ModelSpec("ResidualCNN+reg", residual, overrides=REGULARIZATION,
                  notes="same net; flip+crop, label smoothing 0.1"),
    ]


def compare(name: str, dataset: str, specs: list[ModelSpec], epochs: int,
            args: argparse.Namespace, device: Any) -> list[dict]:
    """Train ``specs`` on ``dataset`` and write results, tables and figures under ``name``."""
    train, test, info = load_splits(dataset, args)
    cfg = make_config(args, device, epochs=epochs, lr=LR)
    out = args.results_dir / name
    results = run_comparison(out, specs, train, test, cfg, info, resume=args.resume,
                             overwrite=args.overwrite)
    write_table(out, results)
    save_comparison_figures(results, args.plots_dir / name, dataset, f"{dataset}: {name}")
    return results


def compare_on_mnist(args: argparse.Namespace, device: Any) -> list[dict]:
    """1.1: FC (4 layers) vs simple CNN (2 conv) vs residual CNN on MNIST."""
    return compare("mnist_comparison", "mnist", mnist_models(), MNIST_EPOCHS, args, device)


def compare_on_cifar(args: argparse.Namespace, device: Any) -> list[dict]:
    """1.2: deep FC vs residual CNN vs the same residual CNN with regularisation on CIFAR-10."""
    results = compare("cifar_comparison", "cifar10", cifar_models(), CIFAR_EPOCHS, args, device)
    write_per_class_table(args.results_dir / "cifar_comparison", results)
    return results


def write_per_class_table(out: Path, results: list[dict]) -> None:
    """Test accuracy per class for every model: where each network makes its errors."""
    rows = []
    for i, cls in enumerate(results[0]["classes"]):
        row: dict[str, Any] = {"class": cls}
        for r in results:
            cm = r["confusion_matrix"]
            row[r["model"]] = cm[i][i] / max(1, sum(cm[i]))
        rows.append(row)
    columns = [("class", "класс", "str")] + [(r["model"], r["model"] + ", %", "pct") for r in results]
    write_text_atomic(out / "per_class.md",
                      reduced_mark(is_reduced(results)) + markdown_table(rows, columns) + "\n")


EXPERIMENTS = {"1.1": "mnist_comparison", "1.2": "cifar_comparison"}  # folders under results/


def main() -> argparse.Namespace:
    parser = base_parser(__doc__.splitlines()[0], parts=tuple(EXPERIMENTS))
    args = parser.parse_args()
    device = setup(args)
    parts = [p for p in EXPERIMENTS if args.part in (p, "all")]
    with locked_experiments(args, [EXPERIMENTS[p] for p in parts]):
        if "1.1" in parts:
            compare_on_mnist(args, device)
        if "1.2" in parts:
            compare_on_cifar(args, device)
    return args


if __name__ == "__main__":
    run_main(main)
