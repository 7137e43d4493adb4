"""Task 3.1's custom layers at the shapes they meet inside ``LayerCNN``: what each adds to a step.

The 3.1 run's layer benchmark times every layer on one input (64x32x32x32). Here each custom layer
and its standard counterpart run at every place where ``LayerCNN`` uses them (input shapes recorded
by forward hooks at the training batch), forward + backward, summed over the places: the
milliseconds one training step spends in that role. Custom and standard alternate (A B, B A ...).
The extra milliseconds per step times the steps of training predict how much longer
``standard+<layer>`` trains than ``CNN-standard``; with ``--results`` the committed runs give the
measured difference beside it, seed by seed (those ran in other launches: machine drift included).

    python benchmarks/bench_layers_in_network.py --threads 2 --results results/custom_layers
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from benchmarks.common import interleave, machine_line, median, run_benchmark  # noqa: E402
from models.custom_layers import CUSTOM_LAYERS, STANDARD_LAYERS, LayerCNN  # noqa: E402
from utils.cli import positive_int  # noqa: E402
from utils.results import by_model, load_seed_results  # noqa: E402
from utils.training_utils import timed  # noqa: E402

WIDTHS = (16, 32, 64)  # LayerCNN's stages in task 3.1 (homework_custom_layers_experiments.py)
Place = tuple[int, tuple[int, ...]]  # (channels the factory got, input shape)


def layer_places(layers: dict[str, Callable[[int], nn.Module]], batch: int,
                 image: tuple[int, int, int] = (3, 32, 32)) -> dict[str, list[Place]]:
    """For each role, the channels and input shape of every layer of that role in ``LayerCNN``."""
    places: dict[str, list[Place]] = {role: [] for role in layers}

    def recording(role: str) -> Callable[[int], nn.Module]:
        def make(c: int) -> nn.Module:
            layer = layers[role](c)
            layer.register_forward_pre_hook(lambda m, inputs: places[role].append((c, tuple(inputs[0].shape))))
            return layer
        return make

    net = LayerCNN({role: recording(role) for role in layers}, image[0], widths=WIDTHS)
    with torch.no_grad():
        net.eval()(torch.zeros(batch, *image))
    return places


def role_step(factory: Callable[[int], nn.Module], places: list[Place]) -> Callable[[], float]:
    """A call that runs forward + backward of one fresh layer per place and returns its seconds."""
    layers = [factory(c).to(memory_format=torch.channels_last).train() for c, _ in places]
    inputs = [torch.randn(shape).to(memory_format=torch.channels_last).requires_grad_() for _, shape in places]

    def step() -> None:
        for layer, x in zip(layers, inputs):
            x.grad = None
            layer.zero_grad(set_to_none=True)
            layer(x).sum().backward()

    return lambda: timed(step, "cpu")[0]


def measured_extra(results_dir: Path) -> tuple[dict[str, list[float]], int | None]:
    """Seconds of training each model took beyond ``CNN-standard``, per shared seed (in seed
    order), and the training steps of ``CNN-standard``."""
    groups = by_model(load_seed_results(results_dir))
    base = {r["seed"]: r for r in groups.get("CNN-standard", [])}
    extra = {model: [r["train_time_s"] - base[r["seed"]]["train_time_s"]
                     for r in sorted(runs, key=lambda r: r["seed"]) if r["seed"] in base]
             for model, runs in groups.items()}
    steps = next((r["epochs"] * r["steps_per_epoch"] for r in base.values()), None)
    return extra, steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=positive_int, default=128, help="the training batch of 3.1")
    p.add_argument("--repeats", type=positive_int, default=20, help="alternating timed calls per variant")
    p.add_argument("--warmup", type=positive_int, default=3)
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--results", type=Path, default=None,
                   help="a 3.1 results folder (e.g. results/custom_layers): measured differences beside")
    args = p.parse_args()
    if args.results is not None and not args.results.is_dir():
        p.error(f"--results: no folder {args.results}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line())
    torch.manual_seed(0)
    places = layer_places(STANDARD_LAYERS, args.batch_size)
    measured, steps = measured_extra(args.results) if args.results else ({}, None)
    print(f"batch {args.batch_size}; median of {args.repeats} alternating calls after {args.warmup} warm-up; "
          f"forward + backward of every place of the role in one training step")
    head = "| роль | мест (входы) | свой, мс/шаг | станд., мс/шаг | разница, мс/шаг | × шаги обучения, с | измерено, с |"
    print(head + "\n" + "| --- " * (head.count(" | ") + 1) + "|")
    total = 0.0
    for role in CUSTOM_LAYERS:
        runs = {"custom": role_step(CUSTOM_LAYERS[role], places[role]),
                "standard": role_step(STANDARD_LAYERS[role], places[role])}
        for run in runs.values():
            for _ in range(args.warmup):
                run()
        ms = {k: 1000 * median(v) for k, v in interleave(runs, args.repeats).items()}
        diff = ms["custom"] - ms["standard"]
        total += diff
        shapes = ", ".join(f"{s[1]}@{s[2]}²" for _, s in places[role])
        model = f"standard+{type(CUSTOM_LAYERS[role](places[role][0][0])).__name__}"
        print(f"| {role} | {len(places[role])} ({shapes}) | {ms['custom']:.1f} | {ms['standard']:.1f} | {diff:+.1f} | "
              f"{_predicted(diff, steps)} | {_measured(measured.get(model))} |")
    print(f"| все четыре | | | | {total:+.1f} | {_predicted(total, steps)} | "
          f"{_measured(measured.get('CNN-custom'))} |")
    if steps:
        print(f"\nmeasured: train_time_s of the model minus CNN-standard's, per seed, from {args.results} "
              f"({steps} training steps)")


def _predicted(diff_ms: float, steps: int | None) -> str:
    return "–" if steps is None else f"{diff_ms * steps / 1000:+.0f}"


def _measured(seconds: list[float] | None) -> str:
    return "–" if not seconds else " / ".join(f"{s:+.0f}" for s in seconds)


if __name__ == "__main__":
    run_benchmark(main)
