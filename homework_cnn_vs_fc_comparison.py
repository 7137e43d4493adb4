"""Task 1: convolutional vs fully-connected networks on MNIST (1.1) and CIFAR-10 (1.2).

Every model of a comparison is trained with the same optimiser, schedule, batch size and
number of epochs (see ``TrainConfig`` in each result's ``config``): 1.1 with SGD and a one-cycle
schedule, 1.2 with the fast recipe (``utils.training_utils.FAST_RECIPE``: Muon, batch 2000).
The regularised residual CNN of 1.2 is the same architecture as the plain one; only its training
adds regularisation.

    python homework_cnn_vs_fc_comparison.py --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
from typing import Any

from models.cnn_models import CNNWithResidual, FullyConnected, SimpleCNN
from utils.cli import add_dataset_argument, base_parser, run_main, setup
from utils.data import ImageSet
from utils.results import STANDARD_COLUMNS, ModelResult, by_model, is_reduced, write_markdown_table
from utils.runner import Context, Experiment, ModelSpec, chosen, run_experiments
from utils.training_utils import FAST_LR, FAST_MODEL_OPTIONS, FAST_RECIPE

MNIST_LR = 0.1  # 1.1: peak of the one-cycle schedule, SGD + Nesterov, batch 128
# 1.1: every model sees images shifted by up to 2 px (the data set's crop padding); digits keep
# their label under small shifts (the borders are filled with the mean pixel, 0 after normalising).
MNIST_TRAIN = {"augment": "crop"}

# 1.2: the fast recipe without its regularisation; "ResidualCNN+reg" adds it back: alternating
# horizontal flips and 2-px reflect translations (the label does not change under them) and label
# smoothing 0.2 (keeps logits small).
REGULARIZATION = {"augment": "flip_crop", "label_smoothing": FAST_RECIPE["label_smoothing"]}
CIFAR_TRAIN = {**FAST_RECIPE, "augment": "none", "label_smoothing": 0.0}


def mnist_models(data: ImageSet) -> list[ModelSpec]:
    c, n = data.shape[0], len(data.classes)
    return [
        ModelSpec("FullyConnected", lambda: FullyConnected(data.shape, n, hidden=(512, 256, 128)),
                  notes="4 linear layers"),
        ModelSpec("SimpleCNN", lambda: SimpleCNN(c, n, channels=(32, 64), input_size=data.shape[-1]),
                  notes="2 conv layers"),
        ModelSpec("ResidualCNN", lambda: CNNWithResidual(c, n, widths=(8, 16, 32, 64)),
                  notes="stem + 3 conv-pool stages with a residual block each"),
    ]


def cifar_models(data: ImageSet) -> list[ModelSpec]:
    c, n = data.shape[0], len(data.classes)
    # airbench's options (whitening stem of 8 channels per input channel, Dirac init, ...)
    options = {**FAST_MODEL_OPTIONS, "widths": (8 * c, *FAST_MODEL_OPTIONS["widths"][1:])}
    residual = lambda: CNNWithResidual(c, n, **options)  # noqa: E731
    return [
        ModelSpec("DeepFullyConnected",
                  lambda: FullyConnected(data.shape, n, hidden=(1024, 512, 256, 128), scaled_head=True),
                  notes="5 linear layers"),
        ModelSpec("ResidualCNN", residual,
                  notes="whitening stem + 3 conv-pool stages with a residual block each"),
        ModelSpec("ResidualCNN+reg", residual, overrides=REGULARIZATION,
                  notes="same net; flips, translations, label smoothing 0.2"),
    ]


def write_per_class_table(ctx: Context, results: list[ModelResult]) -> None:
    """Test accuracy per class for every model (over all its seeds): where each network errs."""
    groups = by_model(results)
    rows = []
    for i, cls in enumerate(results[0]["classes"]):
        row: dict[str, Any] = {"class": cls}
        for name, runs in groups.items():
            row[name] = (sum(r["confusion_matrix"][i][i] for r in runs)
                         / max(1, sum(sum(r["confusion_matrix"][i]) for r in runs)))
        rows.append(row)
    columns = [("class", "класс", "str")] + [(m, m + ", %", "pct") for m in groups]
    write_markdown_table(ctx.out / "per_class.md", rows, columns, is_reduced(results))


EXPERIMENTS = {
    "1.1": Experiment("mnist_comparison", "полносвязная сеть против CNN", "mnist",
                      mnist_models, epochs=8, lr=MNIST_LR, train=MNIST_TRAIN,
                      contrasts=[("SimpleCNN", "FullyConnected"), ("ResidualCNN", "FullyConnected"),
                                 ("ResidualCNN", "SimpleCNN"), ("SimpleCNN", "FullyConnected", "gap")]),
    "1.2": Experiment("cifar_comparison", "полносвязная сеть против residual CNN", "cifar10",
                      cifar_models, epochs=10, lr=FAST_LR, train=CIFAR_TRAIN, report=write_per_class_table,
                      columns=(*STANDARD_COLUMNS[:5], ("test_acc_tta", "test acc с TTA, %", "pct"),
                               *STANDARD_COLUMNS[5:]),
                      contrasts=[("ResidualCNN", "DeepFullyConnected"), ("ResidualCNN+reg", "ResidualCNN"),
                                 ("ResidualCNN", "DeepFullyConnected", "gap"),
                                 ("ResidualCNN+reg", "ResidualCNN", "gap"),
                                 ("ResidualCNN+reg", "ResidualCNN", "test_acc_tta")]),
}


def main() -> argparse.Namespace:
    parser = base_parser(__doc__.splitlines()[0], parts=tuple(EXPERIMENTS))
    add_dataset_argument(parser, None, "run the chosen part(s) on this data set instead of the "
                                       "assignment's (MNIST for 1.1, CIFAR-10 for 1.2)")
    args = parser.parse_args()
    device = setup(args)
    run_experiments(chosen(EXPERIMENTS, args), args, device)
    return args


if __name__ == "__main__":
    run_main(main)
