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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.cnn_models import KernelCNN, PlainCNN, ResidualCNN, widths_for_budget
from utils.cli import base_parser, load_splits, locked_experiments, make_config, run_main, setup
from utils.comparison_utils import (ModelSpec, effective_receptive_field, erf_extent,
                                    receptive_field_info, run_comparison, write_npz_atomic, write_table)
from utils.training_utils import set_seed
from utils.visualization_utils import (plot_filters, plot_gradient_flow, plot_heatmap_grid,
                                       plot_layer_norms, plot_maps_with_inputs,
                                       save_comparison_figures)

# Defaults sized for a 2-core CPU: about 27 minutes for both parts on CIFAR-10 (README).
KERNEL_EPOCHS = 3
DEPTH_EPOCHS = 3
LR = 0.1  # peak of the one-cycle schedule, SGD + Nesterov, batch 128

KERNEL_BUDGET = 55_000     # parameters of every kernel variant
KERNEL_RATIOS = (1, 2, 4)  # widths of the three stages, up to a common scale
KERNEL_VARIANTS = (("3x3", 3, False), ("5x5", 5, False), ("7x7", 7, False), ("1x1+3x3", 3, True))
DEPTH_WIDTHS = (16, 32)    # channels at 1/2 and 1/4 resolution

SHOWN_IMAGES = 3   # test images whose first-layer activations are drawn
SHOWN_CHANNELS = 8
ERF_IMAGES = 32    # test images the effective receptive field is averaged over


def kernel_models(in_channels: int, budget: int = KERNEL_BUDGET) -> list[ModelSpec]:
    """2.1: the four kernel variants, each with the widths that give it ``budget`` parameters."""
    specs = []
    for name, kernel, bottleneck in KERNEL_VARIANTS:
        def build(widths, kernel=kernel, bottleneck=bottleneck):
            return KernelCNN(kernel, widths, in_channels, 10, bottleneck)
        widths = widths_for_budget(build, KERNEL_RATIOS, budget)
        specs.append(ModelSpec(name, lambda build=build, widths=widths: build(widths),
                               notes="-".join(map(str, widths))))
    return specs


def depth_models(in_channels: int) -> list[ModelSpec]:
    """2.2: plain CNNs of growing depth, the deepest without BatchNorm, and its residual twin."""
    w = DEPTH_WIDTHS
    return [
        ModelSpec("Plain-2", lambda: PlainCNN(2, w, in_channels), notes="BN"),
        ModelSpec("Plain-4", lambda: PlainCNN(4, w, in_channels), notes="BN"),
        ModelSpec("Plain-9", lambda: PlainCNN(9, w, in_channels), notes="BN"),
        ModelSpec("Plain-9-noBN", lambda: PlainCNN(9, w, in_channels, batchnorm=False),
                  notes="без BN (контроль)"),
        ModelSpec("Residual-9", lambda: ResidualCNN(9, w, in_channels), notes="BN, shortcuts"),
    ]


# ---------------------------------------------------------------------------------------------
# What is measured on a trained model (called by run_comparison while the model exists; arrays
# go to <model>_maps.npz next to the JSON, so figures can be redrawn after --resume)

def top_channels(maps: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` most active channels of (N, C, H, W) maps (by mean over everything else)."""
    return maps.mean((0, 2, 3)).argsort(descending=True)[:k]


def conv_layer_count(model: nn.Module) -> int:
    """Spatial (k > 1) convolutions: the depth of the network as the assignment counts it."""
    return sum(isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 for m in model.modules())


def gradient_ratios(model: nn.Module, result: dict[str, Any]) -> None:
    """First / last conv layer gradient norm, at initialisation and in the last epoch.

    Shortcut projections are left out: the ratio is about the path the signal takes through
    all the layers. Far below 1: gradients vanish towards the input; far above: they explode.
    """
    convs = {n for n, p in model.named_parameters() if p.ndim == 4 and "downsample" not in n}
    idx = [i for i, n in enumerate(result["grad_layers"]) if n in convs]
    for key, norms in (("grad_ratio_init", result["grad_norms_init"]),
                       ("grad_ratio_final", result["history"][-1]["grad_norms"])):
        ratio = norms[idx[0]] / norms[idx[-1]] if norms[idx[-1]] else float("inf")
        result[key] = ratio if np.isfinite(ratio) else None


def analyse_kernel_model(spec: ModelSpec, model: nn.Module, result: dict[str, Any],
                         images: torch.Tensor, out: Path) -> None:
    """Receptive fields (theoretical, and effective at init and after training), first-layer
    filters and activations of one kernel variant."""
    model = model.float().to(memory_format=torch.contiguous_format)
    device = next(model.parameters()).device
    images = images.to(device)
    info = receptive_field_info(model, images.shape[1:])
    centre = [s + (n // 2) * j for s, n, j in zip(info["start"], info["size"], info["jump"])]
    set_seed(result["config"]["seed"])  # the same draw as the model's own initialisation
    erf_init = effective_receptive_field(spec.build().to(device), images[:ERF_IMAGES])
    erf = effective_receptive_field(model, images[:ERF_IMAGES])
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        model.eval()
        acts = model.features[0][:-1](images[:SHOWN_IMAGES])  # first stage, before its pooling
    acts = acts[:, top_channels(acts, SHOWN_CHANNELS)]
    result.update(receptive_field=info["rf"], erf90=erf_extent(erf, centre[::-1]),
                  erf90_init=erf_extent(erf_init, centre[::-1]), rf_centre=centre[::-1],
                  conv_layers=conv_layer_count(model))
    write_npz_atomic(out / f"{spec.name}_maps.npz", erf=erf.cpu(), erf_init=erf_init.cpu(),
                     activations=acts.cpu(), filters=first.weight.detach().cpu())


def analyse_depth_model(spec: ModelSpec, model: nn.Module, result: dict[str, Any],
                        image: torch.Tensor, out: Path) -> None:
    """Receptive field, gradient ratios and the feature maps of several layers for one image."""
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    image = image.to(next(model.parameters()).device)
    units = [m for m in model.features if not isinstance(m, nn.MaxPool2d)]
    shown = sorted({round(i) for i in np.linspace(0, len(units) - 1, min(5, len(units)))})
    maps: dict[int, torch.Tensor] = {}
    hooks = [units[i].register_forward_hook(lambda m, x, y, i=i: maps.__setitem__(i, y.detach().clone()))
             for i in shown]
    with torch.no_grad():
        model(image[None])
    for h in hooks:
        h.remove()
    result.update(receptive_field=receptive_field_info(model, image.shape)["rf"],
                  conv_layers=conv_layer_count(model))
    gradient_ratios(model, result)
    # Keyed by the number of conv layers the signal has passed, so plain and residual align.
    arrays = {f"conv{sum(map(conv_layer_count, units[:i + 1]))}":
              maps[i][0, top_channels(maps[i], SHOWN_CHANNELS)].cpu() for i in shown}
    write_npz_atomic(out / f"{spec.name}_maps.npz", image=image.cpu(), **arrays)


def load_maps(out: Path, results: list[dict]) -> dict[str, Any]:
    """The saved arrays of each model that has them (a model resumed from an older run may not)."""
    maps = {}
    for r in results:
        path = out / f"{r['model']}_maps.npz"
        if path.is_file():
            with np.load(path) as f:
                maps[r["model"]] = {k: torch.from_numpy(f[k]) for k in f.files}
        else:
            print(f"warning: {path} is missing; {r['model']} is left out of the map figures")
    return maps


# ---------------------------------------------------------------------------------------------
# The two parts

def experiment_name(part: str, dataset: str) -> str:
    return part if dataset == "cifar10" else f"{part}_{dataset}"


KERNEL_COLUMNS = (
    ("model", "ядро", "str"), ("notes", "каналы по стадиям", "str"), ("params", "параметры", "int"),
    ("receptive_field", "теор. RF, px", "int"), ("erf90_init", "ERF90 при init, px", "int"),
    ("erf90", "ERF90 после обучения, px", "int"), ("train_acc", "train acc, %", "pct"),
    ("test_acc", "test acc, %", "pct"), ("test_loss", "test loss", "f4"),
    ("train_time_s", "обучение, с", "s"), ("inference_time_s", "инференс test, с", "s"),
)


def compare_kernels(args: argparse.Namespace, device: Any) -> list[dict]:
    """2.1: kernel size at a fixed parameter count."""
    train, test, info = load_splits(args.dataset, args)
    name = experiment_name("kernels", args.dataset)
    out = args.results_dir / "architecture_analysis" / name
    plots = args.plots_dir / "architecture_analysis" / name
    images = test.normalize(test.images[:ERF_IMAGES])
    cfg = make_config(args, device, epochs=KERNEL_EPOCHS, lr=LR)
    results = run_comparison(out, kernel_models(train.shape[0]), train, test, cfg, info,
                             resume=args.resume, overwrite=args.overwrite,
                             after_training=lambda s, m, r: analyse_kernel_model(s, m, r, images, out))
    write_table(out, results, KERNEL_COLUMNS)
    title = f"{args.dataset}: kernel size at ~{KERNEL_BUDGET // 1000}k parameters"
    save_comparison_figures(results, plots, args.dataset, title, per_model=False)
    maps = load_maps(out, results)
    shown = [r for r in results if r["model"] in maps]
    if shown:
        plot_kernel_figures(shown, maps, test.images[:SHOWN_IMAGES], plots, args.dataset)
    return results


def plot_kernel_figures(results: list[dict], maps: dict[str, Any], inputs: torch.Tensor, plots: Path,
                        prefix: str) -> None:
    names = [r["model"] for r in results]
    rows = [(i, n) for i in range(len(inputs)) for n in names]
    plot_maps_with_inputs([inputs[i] if n == names[0] else None for i, n in rows],
                          [maps[n]["activations"][i] for i, n in rows],
                          plots / f"{prefix}_first_layer_activations.png",
                          f"First conv block (before pooling): the {SHOWN_CHANNELS} most active channels",
                          row_labels=[f"image {i}: {n}" for i, n in rows])
    plot_filters({n: maps[n]["filters"] for n in names}, plots / f"{prefix}_first_layer_filters.png",
                 "First-layer convolution kernels")
    erf = torch.stack([torch.stack([maps[n]["erf_init"], maps[n]["erf"]]) for n in names], 1)
    boxes = [(*r["rf_centre"], r["receptive_field"]) for r in results]
    plot_heatmap_grid(erf, plots / f"{prefix}_effective_receptive_field.png",
                      "Effective receptive field |∂ centre unit / ∂ input| (dashed: theoretical RF)",
                      row_labels=["init", "trained"],
                      col_labels=[f"{r['model']} (RF {r['receptive_field']})" for r in results], boxes=boxes)


DEPTH_COLUMNS = (
    ("model", "модель", "str"), ("conv_layers", "conv-слоёв", "int"), ("notes", "BN / shortcuts", "str"),
    ("params", "параметры", "int"), ("receptive_field", "теор. RF, px", "int"),
    ("train_acc", "train acc, %", "pct"), ("test_acc", "test acc, %", "pct"),
    ("test_loss", "test loss", "f4"), ("train_time_s", "обучение, с", "s"),
    ("ratio_init", "‖g₁‖/‖g_L‖ при init", "str"), ("ratio_final", "‖g₁‖/‖g_L‖ в последней эпохе", "str"),
)


def compare_depth(args: argparse.Namespace, device: Any) -> list[dict]:
    """2.2: depth, BatchNorm and residual connections; gradient health and feature maps."""
    train, test, info = load_splits(args.dataset, args)
    name = experiment_name("depth", args.dataset)
    out = args.results_dir / "architecture_analysis" / name
    plots = args.plots_dir / "architecture_analysis" / name
    image = test.normalize(test.images[:1])[0]
    cfg = make_config(args, device, epochs=DEPTH_EPOCHS, lr=LR)
    results = run_comparison(out, depth_models(train.shape[0]), train, test, cfg, info,
                             resume=args.resume, overwrite=args.overwrite,
                             after_training=lambda s, m, r: analyse_depth_model(s, m, r, image, out))
    rows = [{**r, "ratio_init": fmt_ratio(r.get("grad_ratio_init")),
             "ratio_final": fmt_ratio(r.get("grad_ratio_final"))} for r in results]
    write_table(out, rows, DEPTH_COLUMNS)
    save_comparison_figures(results, plots, args.dataset, f"{args.dataset}: depth", per_model=False)
    for r in results:
        plot_gradient_flow(r, plots / f"{args.dataset}_{r['model']}_gradient_flow.png")
    plot_layer_norms([("at initialisation", {r["model"]: r["grad_norms_init"] for r in results}),
                      ("last epoch (mean)", {r["model"]: r["history"][-1]["grad_norms"] for r in results})],
                     plots / f"{args.dataset}_gradient_norms.png",
                     "Per-layer gradient norms (weights of convs, projections and the classifier)")
    for model, m in load_maps(out, results).items():
        layers = sorted((k for k in m if k.startswith("conv")), key=lambda k: int(k[4:]))
        plot_maps_with_inputs([test.images[0]] + [None] * (len(layers) - 1), [m[k] for k in layers],
                              plots / f"{args.dataset}_{model}_feature_maps.png",
                              f"{model}: feature maps of one test image (most active channels)",
                              row_labels=[f"after conv {k[4:]}" for k in layers])
    return results


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def main() -> argparse.Namespace:
    parser = base_parser(__doc__.splitlines()[0], parts=("2.1", "2.2"))
    parser.add_argument("--dataset", choices=["cifar10", "mnist"], default="cifar10")
    args = parser.parse_args()
    device = setup(args)
    parts = {"2.1": "kernels", "2.2": "depth"}
    parts = {p: n for p, n in parts.items() if args.part in (p, "all")}
    folders = [f"architecture_analysis/{experiment_name(n, args.dataset)}" for n in parts.values()]
    with locked_experiments(args, folders):
        if "2.1" in parts:
            compare_kernels(args, device)
        if "2.2" in parts:
            compare_depth(args, device)
    return args


if __name__ == "__main__":
    run_main(main)
