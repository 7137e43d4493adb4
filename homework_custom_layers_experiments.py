"""Task 3: custom layers with hand-written backward passes (3.1) and residual block variants (3.2).

3.1 times every layer of ``models.custom_layers.CUSTOM_LAYERS`` against its standard counterpart,
then trains the same small CNN with the standard layers, with all the custom ones, and with one
custom layer swapped in at a time, and draws Swish vs ReLU, the attention maps and the pooled
outputs. 3.2 compares ResNets of basic, bottleneck and wide blocks at equal stage widths and at
the wide net's parameter count: accuracy, parameters, FLOPs, time, and training stability (the
spread over seeds and the gradient-norm statistics of the same runs; run with ``--seeds 3``).
Both parts use CIFAR-10 unless ``--dataset`` says otherwise.

    python homework_custom_layers_experiments.py --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.cnn_models import (BasicBlock, BottleneckBlock, ResNet, WideBlock, count_activations, count_flops,
                               count_parameters, widths_for_budget)
from models.custom_layers import (CUSTOM_LAYERS, STANDARD_LAYERS, ChannelSpatialAttention, LayerCNN,
                                  MixedPool2d, Swish, WSConv2d, swish_bwd, swish_fwd)
from utils.cli import add_dataset_argument, base_parser, is_reduced_run, run_main, setup
from utils.data import ImageSet
from utils.results import (ModelResult, aggregate, by_model, is_reduced, run_caption,
                           write_json_atomic, write_markdown_table)
from utils.runner import Context, Experiment, ModelSpec, chosen, for_dataset, run_experiments
from utils.training_utils import timed
from utils.visualization_utils import (plot_function_panels, plot_grad_norm_traces, plot_image_grid,
                                       plot_matrix, plot_seed_spread)

LR = 0.1  # peak of the one-cycle schedule, SGD + Nesterov, batch 128 (as in 1.1)
# Both parts: random flips and 4-px translations, the same for every model. Plain SGD: the fast
# recipe's learning rates (tuned for 1.2's net) would also drive the custom layers' own
# parameters (Swish's beta, the pooling mix) at lr 106.
TRAIN = {"augment": "flip_crop"}

# 3.1: the small CNN of LayerCNN, trained with custom vs standard layers.
LAYER_CNN_WIDTHS = (16, 32, 64)
LAYER_CNN_EPOCHS = 12

# 3.2: the same depth (one block per stage) and stage planes for every block type; the bottleneck
# expands its output x4, the wide block widens its convolutions x WIDE_K. Then basic and
# bottleneck again, with the stage planes (ratios 1:2:4) that give them the wide net's parameters.
BLOCK_LAYERS = (1, 1, 1)
BLOCK_PLANES = (16, 32, 64)
WIDE_K = 2
BLOCK_EPOCHS = 8

BLOCK_COLUMNS = (
    ("model", "блок", "str"), ("params", "параметры", "int"), ("mflops", "MFLOPs / изобр.", "f2"),
    ("epochs", "эпохи", "int"), ("train_acc", "train acc, %", "pct"), ("test_acc", "test acc, %", "pct"),
    ("gap", "train − test, п.п.", "pct"),
    ("test_loss", "test loss", "f4"), ("train_time_s", "обучение, с", "s"),
)


# ---------------------------------------------------------------------------------------------
# 3.1 Custom layers

def time_layer(layer: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> dict[str, float]:
    """Forward time (no graph), forward+backward time and statistics of the output."""
    layer.train()
    xg = x.detach().clone().requires_grad_()

    def forward() -> None:
        with torch.no_grad():
            layer(x)

    def forward_backward() -> None:
        xg.grad = None
        layer.zero_grad(set_to_none=True)
        layer(xg).sum().backward()

    with torch.no_grad():
        y = layer(x).float()
    device = next(iter(layer.parameters()), x).device
    return {"forward_ms": 1000 * statistics.median(timed(forward, device, warmup, repeats)),
            "forward_backward_ms": 1000 * statistics.median(timed(forward_backward, device, warmup, repeats)),
            "out_mean": y.mean().item(), "out_std": y.std().item(),
            "out_shape": "x".join(map(str, y.shape[1:]))}


def benchmark_layers(args: argparse.Namespace, device: torch.device, folder: str) -> list[dict[str, Any]]:
    """3.1: each custom layer vs its standard counterpart on the same random feature maps."""
    out = args.results_dir / folder
    batch, channels, size = (8, 16, 16) if args.quick else (64, 32, 32)
    warmup, repeats = (1, 3) if args.quick else (5, 25)
    pairs = [(role, CUSTOM_LAYERS[role], STANDARD_LAYERS[role]) for role in CUSTOM_LAYERS]
    # The standard layer with the *same* maths as Swish, to separate its cost from ReLU's.
    pairs.append(("activation (SiLU)", CUSTOM_LAYERS["activation"], lambda c: nn.SiLU()))
    rows = []
    for role, custom, standard in pairs:
        torch.manual_seed(args.seed)
        x = torch.randn(batch, channels, size, size, device=device).to(memory_format=torch.channels_last)
        row: dict[str, Any] = {"role": role}
        for kind, factory in (("custom", custom), ("standard", standard)):
            layer = factory(channels).to(device).to(memory_format=torch.channels_last)
            row[f"{kind}_layer"] = type(layer).__name__
            row[f"{kind}_params"] = count_parameters(layer)
            row.update({f"{kind}_{k}": v for k, v in time_layer(layer, x, warmup, repeats).items()})
        row["slowdown_fwd_bwd"] = row["custom_forward_backward_ms"] / row["standard_forward_backward_ms"]
        rows.append(row)
        print(f"{role}: fwd+bwd {row['custom_forward_backward_ms']:.2f} ms custom vs "
              f"{row['standard_forward_backward_ms']:.2f} ms standard")
    columns = [("role", "роль", "str"), ("custom_layer", "свой слой", "str"),
               ("standard_layer", "стандартный", "str"), ("custom_params", "парам. свой", "int"),
               ("standard_params", "парам. станд.", "int"),
               ("custom_forward_ms", "forward свой, мс", "f2"),
               ("standard_forward_ms", "forward станд., мс", "f2"),
               ("custom_forward_backward_ms", "fwd+bwd свой, мс", "f2"),
               ("standard_forward_backward_ms", "fwd+bwd станд., мс", "f2"),
               ("slowdown_fwd_bwd", "замедление fwd+bwd", "f2"),
               ("custom_out_mean", "mean выхода свой", "f4"), ("standard_out_mean", "mean станд.", "f4"),
               ("custom_out_std", "std выхода свой", "f4"), ("standard_out_std", "std станд.", "f4")]
    caption = (f"_вход N(0, 1) формы {batch}x{channels}x{size}x{size} (channels_last), устройство {device}, "
               f"потоков {torch.get_num_threads()}; медиана {repeats} повторов после {warmup} прогревочных; "
               f"слои в режиме train, свежая инициализация"
               + ("; **--quick: цифры не показательны**" if args.quick else "") + "_")
    write_json_atomic(out / "layer_benchmark.json", {"rows": rows, "caption": caption})
    write_markdown_table(out / "layer_benchmark.md", rows, columns, is_reduced_run(args), caption)
    return rows


def plot_swish_vs_relu(plots_dir: Path, learned_betas: list[float]) -> Path:
    """Swish for several beta (and the learned ones) vs ReLU; derivatives from the hand-written backward."""
    x = torch.linspace(-5, 5, 401, dtype=torch.float64)
    values, derivatives = {"ReLU": F.relu(x).numpy()}, {"ReLU": (x > 0).double().numpy()}
    betas = [0.5, 1.0, 2.0] + [round(b, 2) for b in learned_betas]
    for beta in betas:
        b = torch.tensor(beta, dtype=torch.float64)
        y, s = swish_fwd(x, b)
        grad_x, _ = swish_bwd(x, s, b, torch.ones_like(x))
        label = f"Swish β={beta:g}" + (" (обученная)" if beta in betas[3:] else "")
        values[label], derivatives[label] = y.numpy(), grad_x.numpy()
    references = ["ReLU"] + [f"Swish β={b:g}" for b in betas[:3]]  # dashed: a learned curve on top shows
    return plot_function_panels(x.numpy(), [("f(x)", values), ("f'(x) (из обратного прохода)", derivatives)],
                                plots_dir / "swish_vs_relu.png", "Swish(x) = x·σ(βx) против ReLU",
                                dashed_labels=references)


def layer_figures(model: nn.Module, test: ImageSet, plots_dir: Path, device: torch.device,
                  n_images: int = 6) -> dict[str, Any]:
    """Attention maps, per-class channel attention and pooled outputs of a trained custom CNN.

    Returns the learned parameters of the custom layers (saved with the result).
    """
    model.eval()
    attentions = [m for m in model.modules() if isinstance(m, ChannelSpatialAttention)]
    pools = [m for m in model.modules() if isinstance(m, MixedPool2d)]
    captured: dict[str, torch.Tensor] = {}
    hook = pools[0].register_forward_hook(lambda m, inp, out: captured.update(x=inp[0].detach()))
    sample = test.subset(min(1000, len(test)), seed=0)
    x = sample.normalize(sample.images.to(device))
    with torch.inference_mode():
        model(x)
    hook.remove()

    # Spatial attention of every stage for a few images, upsampled to the input size.
    maps = [F.interpolate(a.last_spatial[:n_images].float(), size=x.shape[-2:], mode="nearest")[:, 0]
            for a in attentions]
    gray = sample.images[:n_images].float().mean(1).to(device)
    grid = torch.stack([gray, *maps], 1)  # (images, 1 + stages, H, W)
    labels = [sample.classes[int(c)] for c in sample.labels[:n_images]]
    plot_image_grid(grid, plots_dir / "attention_spatial_maps.png",
                    "Пространственное внимание a_s по стадиям (общая шкала 0…1)",
                    row_labels=labels, col_labels=["вход"] + [f"стадия {i + 1}" for i in range(len(maps))],
                    shared=(0.0, 1.0, "вес внимания a_s"), own_scale_cols=(0,))

    # Channel attention of the last stage averaged per class: which channels each class uses.
    a_c = attentions[-1].last_channel.float().cpu()
    per_class = torch.stack([a_c[sample.labels == k].mean(0) if (sample.labels == k).any()
                             else torch.zeros(a_c.shape[1]) for k in range(len(sample.classes))])
    plot_matrix(per_class.numpy(), plots_dir / "attention_channel_per_class.png",
                "Канальное внимание a_c последней стадии, среднее по классу", "канал", "класс",
                row_labels=list(sample.classes), value_label="вес a_c")

    # Pooled outputs of the first pooling layer: max, mean and the learned mix, for the channels
    # with the most max-like, the median and the most mean-like learned mix.
    feats, pool = captured["x"][0], pools[0]
    mix = pool.mix.cpu()
    order = torch.argsort(mix, descending=True)
    channels = [int(order[0]), int(order[len(order) // 2]), int(order[-1])]
    with torch.no_grad():
        inp = feats[channels].unsqueeze(0).float()
        a = mix[channels].view(1, -1, 1, 1).to(inp.device)
        mx, avg = F.max_pool2d(inp, 2), F.avg_pool2d(inp, 2)
        mixed = a * mx + (1 - a) * avg
        up = lambda t: F.interpolate(t, size=inp.shape[-2:], mode="nearest")[0]  # noqa: E731
        panels = torch.stack([inp[0], up(mx), up(avg), up(mixed)], 1)
    plot_image_grid(panels, plots_dir / "pooled_outputs.png",
                    f"Выход MixedPool2d первой стадии ({sample.classes[int(sample.labels[0])]}, "
                    "1-е изображение выборки; шкала общая)",
                    row_labels=[f"канал {c}, a={mix[c]:.2f}" for c in channels],
                    col_labels=["вход", "максимум", "среднее", "смесь (обученная a)"],
                    shared=(float(panels.min()), float(panels.max()), "значение признака"))

    return {"swish_beta": [m.beta.item() for m in model.modules() if isinstance(m, Swish)],
            "pool_mix_mean": [float(p.mix.mean()) for p in pools],
            "pool_mix_min_max": [[float(p.mix.min()), float(p.mix.max())] for p in pools],
            "ws_gain_mean": [float(m.gain.detach().mean()) for m in model.modules()
                             if isinstance(m, WSConv2d)],
            "spatial_attention_std": [float(a.last_spatial.float().std()) for a in attentions]}


def layer_cnn_models(data: ImageSet) -> list[ModelSpec]:
    """The standard CNN, the all-custom one, and the standard one with one custom layer swapped
    in at a time (so that each layer's effect on accuracy and time is attributed)."""
    c, n = data.shape[0], len(data.classes)

    def build(layers: dict) -> Callable[[], nn.Module]:
        return lambda: LayerCNN(layers, c, n, widths=LAYER_CNN_WIDTHS)
    specs = [ModelSpec("CNN-standard", build(STANDARD_LAYERS),
                       notes="Conv2d, ReLU, torchvision SqueezeExcitation, MaxPool2d"),
             ModelSpec("CNN-custom", build(CUSTOM_LAYERS),
                       notes="WSConv2d, Swish, ChannelSpatialAttention, MixedPool2d")]
    for role, name in SWAPS.items():
        specs.append(ModelSpec(f"standard+{name}", build({**STANDARD_LAYERS, role: CUSTOM_LAYERS[role]}),
                               notes=f"стандартная, {role}: {name}"))
    return specs


SWAPS = {"conv": "WSConv2d", "attention": "ChannelSpatialAttention", "activation": "Swish",
         "pooling": "MixedPool2d"}


def analyse_layer_cnn(ctx: Context, spec: ModelSpec, model: nn.Module, result: ModelResult) -> None:
    """The custom CNN's learned parameters; its figures are drawn for the first seed."""
    if spec.name == "CNN-custom" and result["seed"] == ctx.args.seed:
        result["learned"] = layer_figures(model, ctx.test, ctx.plots, ctx.device)


def swish_figure(ctx: Context, results: list[ModelResult]) -> None:
    custom = by_model(results)["CNN-custom"][0]
    plot_swish_vs_relu(ctx.plots, custom.get("learned", {}).get("swish_beta", []))


# ---------------------------------------------------------------------------------------------
# 3.2 Residual blocks

BLOCKS = (("BasicBlock", BasicBlock, "2 x 3x3"),
          ("BottleneckBlock", BottleneckBlock, f"1x1-3x3-1x1, expansion {BottleneckBlock.expansion}"),
          (f"WideBlock-k{WIDE_K}", WideBlock.widen(WIDE_K), f"2 x 3x3, widening k={WIDE_K}"))


def block_models(data: ImageSet) -> list[ModelSpec]:
    """Basic, bottleneck and wide ResNets of the same depth and stage planes; then basic and
    bottleneck at the wide net's parameter count (planes in the same 1:2:4 ratios)."""
    c, n = data.shape[0], len(data.classes)

    def resnet(block: type, planes: Sequence[int]) -> Callable[[], nn.Module]:
        return lambda: ResNet(block, BLOCK_LAYERS, planes, c, n)
    specs = [ModelSpec(name, resnet(block, BLOCK_PLANES), notes=f"{note}; planes {BLOCK_PLANES}")
             for name, block, note in BLOCKS]
    with torch.device("meta"):
        budget = count_parameters(resnet(BLOCKS[2][1], BLOCK_PLANES)())
    for name, block, note in BLOCKS[:2]:
        planes = widths_for_budget(lambda ws, block=block: ResNet(block, BLOCK_LAYERS, ws, c, n),
                                   (1, 2, 4), budget)
        specs.append(ModelSpec(f"{name}-matched", resnet(block, planes),
                               notes=f"{note}; planes {planes}: параметров как у WideBlock ({budget})"))
    return specs


def flops(ctx: Context, spec: ModelSpec, model: nn.Module, result: ModelResult) -> None:
    result["mflops"] = count_flops(model, ctx.train.shape) / 1e6


def stability_rows(results: Sequence[ModelResult]) -> list[dict[str, Any]]:
    """Per block: mean ± std of the final metrics over seeds (``aggregate``) and statistics of
    the gradient norm over all its logged steps."""
    groups = by_model(results)
    rows = []
    for row in aggregate(results):
        runs = groups[row["model"]]
        grads = np.array([g for r in runs for h in r["history"] for g in h["grad_total_norm"]])
        # Spread of the loss curves: std across seeds of the running train loss, averaged over epochs.
        n = min(len(r["history"]) for r in runs)
        curves = np.array([[h["running_loss"] for h in r["history"][:n]] for r in runs])
        rows.append({
            "block": row["model"], "seeds": row["n"],
            **{k: row.get(k) for k in ("test_acc", "test_acc_std", "test_loss", "test_loss_std")},
            "loss_curve_std": float(curves.std(0, ddof=1).mean()) if len(runs) > 1 else 0.0,
            "grad_median": float(np.median(grads)), "grad_max": float(grads.max()),
            "grad_cv": float(grads.std() / grads.mean()),
            "grad_max_over_median": float(grads.max() / np.median(grads)),
            "diverged": row["diverged"],
        })
    return rows


STABILITY_COLUMNS = [
    ("block", "блок", "str"), ("seeds", "сидов", "int"), ("test_acc", "test acc, %", "pct"),
    ("test_loss", "test loss", "f4"),
    ("loss_curve_std", "разброс кривой train loss (std по сидам)", "f4"),
    ("grad_median", "‖∇‖ медиана", "f2"), ("grad_max", "‖∇‖ max", "f2"),
    ("grad_cv", "‖∇‖ std/mean", "f2"), ("grad_max_over_median", "‖∇‖ max/медиана", "f2"),
    ("diverged", "разошлось", "int")]


def throughput_rows(ctx: Context, results: Sequence[ModelResult]) -> list[dict[str, Any]]:
    """Per block: what one image costs, in FLOPs and in feature-map elements written (see
    ``count_activations``), against how fast the block trained (mean over seeds): which of the
    two the training time follows."""
    specs = {spec.name: spec for spec in ctx.experiment.models(ctx.train)}
    rows = []
    for row in aggregate(results):
        activations = count_activations(specs[row["model"]].build(), ctx.train.shape)
        speed = row["train_images_per_s"]
        rows.append({"block": row["model"], "params": row["params"], "mflops": row["mflops"],
                     "k_activations": activations / 1e3, "images_per_s": speed,
                     "gflops_per_s": row["mflops"] * speed / 1e3,
                     "m_activations_per_s": activations * speed / 1e6})
    return rows


THROUGHPUT_COLUMNS = [
    ("block", "блок", "str"), ("params", "параметры", "int"), ("mflops", "MFLOPs / изобр.", "f2"),
    ("k_activations", "тыс. элементов карт / изобр.", "int"),
    ("images_per_s", "обучение, изобр./с", "int"), ("gflops_per_s", "GFLOP/с (прямой проход)", "f1"),
    ("m_activations_per_s", "млн элементов карт / с", "int")]


def block_report(ctx: Context, results: list[ModelResult]) -> None:
    """3.2: training speed against FLOPs and feature-map size, and the training stability of each
    block from the full-length runs (the spread over seeds, the statistics of the gradient norm)."""
    write_markdown_table(ctx.out / "throughput.md", throughput_rows(ctx, results), THROUGHPUT_COLUMNS,
                         is_reduced(results), run_caption(results))
    groups = by_model(results)
    rows = stability_rows(results)
    write_json_atomic(ctx.out / "stability.json", rows)
    write_markdown_table(ctx.out / "stability.md", rows, STABILITY_COLUMNS, is_reduced(results),
                         run_caption(results))
    seeds = max(len(runs) for runs in groups.values())
    plot_seed_spread(groups, ctx.plots / "stability_loss_spread.png",
                     f"Кривые обучения {seeds} сидов: тонкие линии — сиды, полоса — ±std")
    spread = ": среднее по сидам, полоса — мин–макс" if seeds > 1 else ""
    plot_grad_norm_traces(groups, ctx.plots / "stability_grad_norms.png",
                          f"Норма градиента во время обучения{spread}")


LAYER_EXPERIMENT = "custom_layers"
BLOCK_EXPERIMENT = "residual_blocks"
EXPERIMENTS = {
    "3.1": Experiment(LAYER_EXPERIMENT, "своя и стандартная CNN", "cifar10", layer_cnn_models,
                      epochs=LAYER_CNN_EPOCHS, lr=LR, train=TRAIN,
                      analyse=analyse_layer_cnn, report=swish_figure,
                      contrasts=[("CNN-custom", "CNN-standard"),
                                 *[(f"standard+{name}", "CNN-standard") for name in SWAPS.values()]]),
    "3.2": Experiment(BLOCK_EXPERIMENT, "варианты residual-блоков", "cifar10", block_models,
                      epochs=BLOCK_EPOCHS, lr=LR, train=TRAIN, columns=BLOCK_COLUMNS, analyse=flops,
                      report=block_report,
                      contrasts=[("BottleneckBlock", "BasicBlock"), (f"WideBlock-k{WIDE_K}", "BasicBlock"),
                                 (f"WideBlock-k{WIDE_K}", "BasicBlock-matched"),
                                 (f"WideBlock-k{WIDE_K}", "BottleneckBlock-matched"),
                                 ("BottleneckBlock-matched", "BasicBlock-matched")]),
}


def main() -> argparse.Namespace:
    parser = base_parser(__doc__.splitlines()[0], parts=tuple(EXPERIMENTS))
    add_dataset_argument(parser, "cifar10", "data set of both parts")
    args = parser.parse_args()
    device = setup(args)
    experiments = chosen(EXPERIMENTS, args)
    layers = for_dataset(EXPERIMENTS["3.1"], args.dataset).name  # the layer benchmark writes there too

    def layer_benchmark() -> None:
        # Its timings are sensitive to anything else on the machine: --resume keeps a finished one.
        if args.resume and (args.results_dir / layers / "layer_benchmark.json").exists():
            print("[resume] layer benchmark: results exist, skipping")
            return
        benchmark_layers(args, device, layers)

    run_experiments(experiments, args, device, before=layer_benchmark if args.part in ("3.1", "all") else None)
    return args  # run_main records the run's wall time and peak memory


if __name__ == "__main__":
    run_main(main)
