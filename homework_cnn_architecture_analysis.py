"""Task 2: CNN architecture analysis: kernel size (2.1) and depth (2.2), on CIFAR-10 or MNIST.

2.1 trains 3x3, 5x5, 7x7 and 1x1+3x3 networks whose channel widths are chosen so that their
parameter counts match (``widths_for_budget``), and compares accuracy, time, theoretical and
effective receptive fields, first-layer filters and activations. 2.2 trains plain CNNs of 2, 4
and 9 conv layers, the 9-layer one without BatchNorm, and its residual twin, and compares
accuracy, time, per-layer gradient norms and feature maps. Every model of a part gets the same
training (``TrainConfig`` saved with each result).

    python homework_cnn_architecture_analysis.py --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.cnn_models import KernelCNN, PlainCNN, ResidualCNN, count_flops, widths_for_budget
from utils.cli import add_dataset_argument, base_parser, run_main, setup
from utils.data import ImageSet
from utils.receptive_field import effective_receptive_field, erf_extent, receptive_field_info
from utils.results import ModelResult, by_model, write_npz_atomic, write_table
from utils.runner import Context, Experiment, ModelSpec, chosen, run_experiments
from utils.training_utils import set_seed
from utils.visualization_utils import (plot_filters, plot_gradient_flows, plot_heatmap_grid,
                                       plot_layer_norms, plot_maps_with_inputs)

LR = 0.1  # peak of the one-cycle schedule, SGD + Nesterov, batch 128
# Both parts: random flips and 4-px translations, the same for every model. Plain SGD, not the
# fast recipe of 1.2: Muon sets the size of every update itself, which would hide the vanishing
# gradients 2.2 is about, and its head learning rate drove this 55k net to chance (a probe on a
# 45k/5k validation split: 10 % after 5 epochs, SGD 77.0 % after 15).
TRAIN = {"augment": "flip_crop"}
KERNEL_EPOCHS = 15
DEPTH_EPOCHS = 15

KERNEL_BUDGET = 55_000     # parameters of every kernel variant
KERNEL_RATIOS = (1, 2, 4)  # widths of the three stages, up to a common scale
KERNEL_VARIANTS = (("3x3", 3, False), ("5x5", 5, False), ("7x7", 7, False), ("1x1+3x3", 3, True))
DEPTH_WIDTHS = (16, 32)    # channels at 1/2 and 1/4 resolution
DEEP = 21                  # the deeper plain/residual pair (>= 18 convs; residual needs 1 + 4k)

SHOWN_IMAGES = 3   # test images whose first-layer activations are drawn
SHOWN_CHANNELS = 8
ERF_IMAGES = 32    # test images the effective receptive field is averaged over


def kernel_models(data: ImageSet, budget: int = KERNEL_BUDGET) -> list[ModelSpec]:
    """2.1: the four kernel variants, each with the widths that give it ``budget`` parameters."""
    c, n = data.shape[0], len(data.classes)
    specs = []
    for name, kernel, bottleneck in KERNEL_VARIANTS:
        def build(widths, kernel=kernel, bottleneck=bottleneck):
            return KernelCNN(kernel, widths, c, n, bottleneck)
        widths = widths_for_budget(build, KERNEL_RATIOS, budget)
        specs.append(ModelSpec(name, lambda build=build, widths=widths: build(widths),
                               notes="-".join(map(str, widths))))
    return specs


def depth_models(data: ImageSet) -> list[ModelSpec]:
    """2.2: plain CNNs of growing depth and their residual twins, with the controls that separate
    depth, normalisation and initialisation: without BN (PyTorch's default init, and He init),
    a residual net without BN, and a deeper pair where plain nets degrade."""
    w, c, n = DEPTH_WIDTHS, data.shape[0], len(data.classes)
    return [
        ModelSpec("Plain-2", lambda: PlainCNN(2, w, c, n), notes="BN"),
        ModelSpec("Plain-4", lambda: PlainCNN(4, w, c, n), notes="BN"),
        ModelSpec("Plain-9", lambda: PlainCNN(9, w, c, n), notes="BN"),
        ModelSpec("Residual-9", lambda: ResidualCNN(9, w, c, n), notes="BN, shortcuts"),
        ModelSpec("Plain-9-noBN", lambda: PlainCNN(9, w, c, n, batchnorm=False),
                  notes="без BN, init PyTorch"),
        ModelSpec("Plain-9-noBN-He", lambda: PlainCNN(9, w, c, n, batchnorm=False, init="kaiming"),
                  notes="без BN, init He"),
        ModelSpec("Residual-9-noBN", lambda: ResidualCNN(9, w, c, n, batchnorm=False),
                  notes="без BN, shortcuts"),
        # Added after review: Residual-9-noBN's block convs have no biases, Plain-9-noBN's do.
        ModelSpec("Plain-9-noBN-noBias", lambda: PlainCNN(9, w, c, n, batchnorm=False, conv_bias=False),
                  notes="без BN и смещений, init PyTorch"),
        ModelSpec(f"Plain-{DEEP}", lambda: PlainCNN(DEEP, w, c, n), notes="BN"),
        ModelSpec(f"Residual-{DEEP}", lambda: ResidualCNN(DEEP, w, c, n), notes="BN, shortcuts"),
    ]


# ---------------------------------------------------------------------------------------------
# What is measured on a trained model (called by the runner while the model exists; arrays go
# to <model>_seed<k>_maps.npz next to the JSON, so figures can be redrawn after --resume)

def top_channels(maps: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` most active channels of (N, C, H, W) maps (by mean over everything else)."""
    return maps.mean((0, 2, 3)).argsort(descending=True)[:k]


def conv_layer_count(model: nn.Module) -> int:
    """Spatial (k > 1) convolutions: the depth of the network as the assignment counts it."""
    return sum(isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 for m in model.modules())


def gradient_ratios(model: nn.Module, result: dict[str, Any]) -> None:
    """First / last conv layer gradient norm, at initialisation and in the last epoch: per tensor
    (``grad_ratio_*``) and per weight (``grad_ratio_*_per_weight``: each norm divided by
    sqrt(number of weights), so that a wide last layer does not look healthier than it is).

    Shortcut projections are left out: the ratio is about the path the signal takes through
    all the layers. Far below 1: gradients vanish towards the input; far above: they explode.
    """
    params = dict(model.named_parameters())
    convs = {n for n, p in params.items() if p.ndim == 4 and "downsample" not in n}
    idx = [i for i, n in enumerate(result["grad_layers"]) if n in convs]
    first, last = (result["grad_layers"][i] for i in (idx[0], idx[-1]))
    size = math.sqrt(params[last].numel() / params[first].numel())
    for key, norms in (("grad_ratio_init", result["grad_norms_init"]),
                       ("grad_ratio_final", result["history"][-1]["grad_norms"])):
        g1, gl = norms[idx[0]], norms[idx[-1]]
        ratio = g1 / gl if gl else float("inf")
        result[key] = ratio if np.isfinite(ratio) else None
        result[key + "_per_weight"] = ratio * size if np.isfinite(ratio) else None


def maps_path(ctx: Context, result: dict[str, Any]) -> Path:
    return ctx.out / f"{result['model']}_seed{result['seed']}_maps.npz"


def test_images(ctx: Context, n: int) -> torch.Tensor:
    return ctx.test.normalize(ctx.test.images[:n])


def analyse_kernel_model(ctx: Context, spec: ModelSpec, model: nn.Module, result: ModelResult) -> None:
    """Receptive fields (theoretical, and effective at init and after training), first-layer
    filters and activations of one kernel variant."""
    model = model.float().to(memory_format=torch.contiguous_format)
    device = next(model.parameters()).device
    images = test_images(ctx, ERF_IMAGES).to(device)
    info = receptive_field_info(model, images.shape[1:])
    centre = [s + (n // 2) * j for s, n, j in zip(info["start"], info["size"], info["jump"])]
    set_seed(result["seed"])  # the same draw as the model's own initialisation
    erf_init = effective_receptive_field(spec.build().to(device), images[:ERF_IMAGES])
    erf = effective_receptive_field(model, images[:ERF_IMAGES])
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        model.eval()
        acts = model.feature_taps(images[:SHOWN_IMAGES])["stage1"]  # first stage, before pooling
    acts = acts[:, top_channels(acts, SHOWN_CHANNELS)]
    result.update(receptive_field=info["rf"], erf90=erf_extent(erf, centre[::-1]),
                  erf90_init=erf_extent(erf_init, centre[::-1]), rf_centre=centre[::-1],
                  conv_layers=conv_layer_count(model), mflops=count_flops(model, ctx.train.shape) / 1e6)
    write_npz_atomic(maps_path(ctx, result), erf=erf.cpu(), erf_init=erf_init.cpu(),
                     activations=acts.cpu(), filters=first.weight.detach().cpu())


def analyse_depth_model(ctx: Context, spec: ModelSpec, model: nn.Module, result: ModelResult) -> None:
    """Receptive field, gradient ratios and the feature maps of several layers for one image."""
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    image = test_images(ctx, 1)[0].to(next(model.parameters()).device)
    with torch.no_grad():
        taps = model.feature_taps(image[None])
    keys = list(taps)
    shown = sorted({round(i) for i in np.linspace(0, len(keys) - 1, min(5, len(keys)))})
    result.update(receptive_field=receptive_field_info(model, image.shape)["rf"],
                  conv_layers=conv_layer_count(model), mflops=count_flops(model, ctx.train.shape) / 1e6)
    gradient_ratios(model, result)
    arrays = {keys[i]: taps[keys[i]][0, top_channels(taps[keys[i]], SHOWN_CHANNELS)].cpu() for i in shown}
    write_npz_atomic(maps_path(ctx, result), image=image.cpu(), **arrays)


def load_maps(ctx: Context, results: list[ModelResult]) -> dict[str, Any]:
    """The saved arrays of the first seed of each model that has them."""
    maps = {}
    for name, runs in by_model(results).items():
        path = maps_path(ctx, runs[0])
        if path.is_file():
            with np.load(path) as f:
                maps[name] = {k: torch.from_numpy(f[k]) for k in f.files}
        else:
            print(f"warning: {path} is missing; {name} is left out of the map figures")
    return maps


# ---------------------------------------------------------------------------------------------
# The figures of each part (from the saved results and arrays)

def robust_max(maps: list[torch.Tensor]) -> float:
    """The 99.5th percentile of every value drawn: one shared scale that a few peaks do not set
    (a scale set by the single largest value leaves most maps black)."""
    values = torch.cat([torch.as_tensor(m).flatten().float() for m in maps]) if maps else torch.ones(1)
    if values.numel() > 16_000_000:  # torch.quantile's limit; a strided sample is as good
        values = values[:: values.numel() // 16_000_000 + 1]
    return float(torch.quantile(values, 0.995)) or 1.0


def kernel_figures(ctx: Context, results: list[ModelResult]) -> None:
    maps = load_maps(ctx, results)
    first = [runs[0] for name, runs in by_model(results).items() if name in maps]
    if not first:
        return
    prefix, inputs = ctx.experiment.dataset, ctx.test.images[:SHOWN_IMAGES]
    names = [r["model"] for r in first]
    rows = [(i, n) for i in range(len(inputs)) for n in names]
    activations = [maps[n]["activations"][i] for i, n in rows]
    vmax = robust_max(activations)
    plot_maps_with_inputs([inputs[i] if n == names[0] else None for i, n in rows], activations,
                          ctx.plots / f"{prefix}_first_layer_activations.png",
                          f"Первый блок (до пулинга): {SHOWN_CHANNELS} самых активных каналов; шкала "
                          "общая для всех ядер, выше 99.5-го перцентиля — насыщение",
                          row_labels=[f"изобр. {i + 1}: {n}" for i, n in rows], vmax=vmax)
    plot_filters({n: maps[n]["filters"] for n in names}, ctx.plots / f"{prefix}_first_layer_filters.png",
                 "Ядра первой свёртки как RGB-картинки (каждое растянуто на свой диапазон: "
                 "цвет — предпочитаемый цвет входа, не знак)")
    erf = torch.stack([torch.stack([maps[n]["erf_init"], maps[n]["erf"]]) for n in names], 1)
    boxes = [(*r["rf_centre"], r["receptive_field"]) for r in first]
    plot_heatmap_grid(erf, ctx.plots / f"{prefix}_effective_receptive_field.png",
                      "Эффективное рецептивное поле |∂ центр. нейрон / ∂ вход| (штрих — теоретическое)",
                      row_labels=["инициализация", "после обучения"],
                      col_labels=[f"{r['model']} (теор. поле {r['receptive_field']} px)" for r in first],
                      boxes=boxes, value_label="доля максимума своей панели")


def depth_figures(ctx: Context, results: list[ModelResult]) -> None:
    write_table(ctx.out, results, GRADIENT_COLUMNS, name="gradients.md")
    prefix = ctx.experiment.dataset
    plot_gradient_flows(results, ctx.plots, prefix)
    first = [runs[0] for runs in by_model(results).values()]
    plot_layer_norms([("при инициализации", {r["model"]: r["grad_norms_init"] for r in first}),
                      ("последняя эпоха (среднее)", {r["model"]: r["history"][-1]["grad_norms"] for r in first})],
                     ctx.plots / f"{prefix}_gradient_norms.png",
                     "Нормы градиента по слоям (веса свёрток, проекций и классификатора; первый сид)")
    maps = load_maps(ctx, results)
    # One scale for every model: a network whose signal dies looks dim, not as bright as a healthy one.
    vmax = robust_max([v for m in maps.values() for k, v in m.items() if k.startswith("conv")])
    for model, m in maps.items():
        layers = sorted((k for k in m if k.startswith("conv")), key=lambda k: int(k[4:]))
        plot_maps_with_inputs([ctx.test.images[0]] + [None] * (len(layers) - 1), [m[k] for k in layers],
                              ctx.plots / f"{prefix}_{model}_feature_maps.png",
                              f"{model}: карты признаков одного тестового изображения (самые активные "
                              "каналы; шкала общая для всех моделей, выше 99.5-го перцентиля — насыщение)",
                              row_labels=[f"после свёртки {k[4:]} (макс. {float(m[k].max()):.2g})"
                                          for k in layers], vmax=vmax)


KERNEL_COLUMNS = (
    ("model", "ядро", "str"), ("notes", "каналы по стадиям", "str"), ("params", "параметры", "int"),
    ("mflops", "MFLOPs / изобр.", "f2"), ("receptive_field", "теор. RF, px", "int"), ("erf90_init", "ERF90 при init, px", "int"),
    ("erf90", "ERF90 после обучения, px", "int"), ("train_acc", "train acc, %", "pct"),
    ("test_acc", "test acc, %", "pct"),
    ("gap", "train − test, п.п.", "pct"), ("test_loss", "test loss", "f4"),
    ("train_time_s", "обучение, с", "s"), ("inference_time_s", "инференс test, с", "s"),
)
DEPTH_COLUMNS = (
    ("model", "модель", "str"), ("conv_layers", "conv-слоёв", "int"), ("notes", "BN / shortcuts", "str"),
    ("params", "параметры", "int"), ("mflops", "MFLOPs / изобр.", "f2"),
    ("receptive_field", "теор. RF, px", "int"),
    ("train_acc", "train acc, %", "pct"), ("test_acc", "test acc, %", "pct"),
    ("gap", "train − test, п.п.", "pct"),
    ("test_loss", "test loss", "f4"), ("train_time_s", "обучение, с", "s"),
    ("grad_ratio_init", "‖g₁‖/‖g_L‖ при init", "g3"),
    ("grad_ratio_final", "‖g₁‖/‖g_L‖ в последней эпохе", "g3"),
)
# The gradient ratios per tensor and per weight, in a table of their own (linked from the README).
GRADIENT_COLUMNS = (
    ("model", "модель", "str"), ("notes", "BN / shortcuts", "str"), *DEPTH_COLUMNS[-2:],
    ("grad_ratio_init_per_weight", "то же на вес, init", "g3"),
    ("grad_ratio_final_per_weight", "то же на вес, посл. эпоха", "g3"),
)

# Defaults sized for a 2-core CPU (README). On another data set the folders get its name.
EXPERIMENTS = {
    "2.1": Experiment("architecture_analysis/kernels", f"размер ядра при ≈{KERNEL_BUDGET // 1000} тыс. параметров",
                      "cifar10", kernel_models, epochs=KERNEL_EPOCHS, lr=LR, train=TRAIN,
                      columns=KERNEL_COLUMNS, per_model_figures=False, analyse=analyse_kernel_model,
                      report=kernel_figures,
                      contrasts=[("5x5", "3x3"), ("7x7", "3x3"), ("1x1+3x3", "3x3")]),
    "2.2": Experiment("architecture_analysis/depth", "глубина, BatchNorm и residual-связи", "cifar10",
                      depth_models, epochs=DEPTH_EPOCHS, lr=LR, train=TRAIN, columns=DEPTH_COLUMNS,
                      summary_columns=("grad_ratio_init_per_weight", "grad_ratio_final_per_weight"),
                      per_model_figures=False, analyse=analyse_depth_model, report=depth_figures,
                      contrasts=[("Plain-4", "Plain-2"), ("Plain-9", "Plain-4"), ("Residual-9", "Plain-9"),
                                 ("Plain-9", "Plain-9-noBN"), ("Plain-9-noBN-He", "Plain-9-noBN"),
                                 ("Residual-9-noBN", "Plain-9-noBN"),
                                 ("Plain-9-noBN-noBias", "Plain-9-noBN"),  # added after review
                                 ("Residual-9-noBN", "Plain-9-noBN-noBias"),  # added after review
                                 (f"Plain-{DEEP}", "Plain-9"),
                                 (f"Residual-{DEEP}", f"Plain-{DEEP}")]),
}


def main() -> argparse.Namespace:
    parser = base_parser(__doc__.splitlines()[0], parts=tuple(EXPERIMENTS))
    add_dataset_argument(parser, "cifar10", "data set of both parts")
    args = parser.parse_args()
    device = setup(args)
    run_experiments(chosen(EXPERIMENTS, args), args, device)
    return args


if __name__ == "__main__":
    run_main(main)
