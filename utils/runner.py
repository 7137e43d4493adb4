"""One runner for every experiment of the homework: declare an :class:`Experiment`, run it.

An experiment names its data, its models, their training budget, the columns of its table and
what is measured on each trained model; :func:`run_experiment` does the rest the same way for
all of them: seeds, ``--resume`` per model and seed, one JSON file per model and seed written
as soon as it trains (memory stays flat, a stop loses one model at most), ``summary.csv`` with
every seed, ``table.md`` with mean ± std over seeds, and the comparison figures with the spread.
"""
from __future__ import annotations

import argparse
import gc
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from models.cnn_models import count_parameters
from utils.cli import load_splits, locked_experiments, make_config, seed_list
from utils.data import DATASETS, ImageSet
from utils.results import (STANDARD_COLUMNS, ModelResult, OutputError, config_differences, load_result,
                           prepare_output_dir, result_path, strict_json, write_contrasts, write_json_atomic,
                           write_summary, write_table)
from utils.training_utils import TrainConfig, measure_inference, set_seed, train_model
from utils.visualization_utils import save_comparison_figures

Column = tuple[str, str, str]  # (result key, table header, format: pct, int, s, f4, f2, g3, str)


@dataclass
class ModelSpec:
    """A model of an experiment: its name, how to build it, and what differs in its training."""

    name: str
    build: Callable[[], nn.Module]
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields, e.g. regularisation
    notes: str = ""


@dataclass
class Context:
    """What an experiment's hooks may use: its folders, its data and the device."""

    experiment: "Experiment"
    out: Path      # <results>/<experiment name>
    plots: Path    # <plots>/<experiment name>
    train: ImageSet
    test: ImageSet
    device: torch.device
    args: argparse.Namespace


@dataclass
class Experiment:
    """One sub-task of the homework, as a declaration."""

    name: str                                    # folder under results/ and plots/
    title: str                                   # the figures' title (after the data set's name)
    dataset: str                                 # a name in utils.data.DATASETS
    models: Callable[[ImageSet], list[ModelSpec]]  # built for the data's shape and classes
    epochs: int
    lr: float                                    # peak learning rate
    columns: Sequence[Column] = STANDARD_COLUMNS
    summary_columns: Sequence[str] = ()          # result keys for summary.csv beyond the table's
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields shared by all models
    subset: tuple[int | None, int | None] = (None, None)  # a fixed train / test subset
    seeds: int | None = None                     # a fixed number of seeds (default: --seeds)
    per_model_figures: bool = True               # confusion matrix and gradient flow per model
    # The pairs of models whose difference the experiment is about (declared before the runs):
    # contrasts.md gives each difference with its 95 % interval (test accuracy, or the result key
    # named third, e.g. ("A", "B", "gap")).
    contrasts: Sequence[tuple[str, ...]] = ()
    # Called with every trained model while it exists; may add keys to the result before it is
    # written (receptive fields, FLOPs, saved arrays for figures).
    analyse: Callable[[Context, ModelSpec, nn.Module, ModelResult], None] | None = None
    # Called once with every result (all models and seeds) for the experiment's own tables/figures.
    report: Callable[[Context, list[ModelResult]], None] | None = None


def for_dataset(exp: Experiment, dataset: str | None) -> Experiment:
    """``exp`` on another data set (None: its own); the folders get the data set's name."""
    if dataset is None or dataset == exp.dataset:
        return exp
    return replace(exp, dataset=dataset, name=f"{exp.name}_{dataset}")


def chosen(experiments: dict[str, Experiment], args: argparse.Namespace) -> list[Experiment]:
    """The sub-tasks ``--part`` names (all for "all"), on the ``--dataset`` if one is given."""
    return [for_dataset(e, args.dataset) for part, e in experiments.items() if args.part in (part, "all")]


def run_experiments(experiments: Sequence[Experiment], args: argparse.Namespace, device: torch.device,
                    before: Callable[[], Any] | None = None) -> list[list[ModelResult]]:
    """Run ``experiments`` in order, holding the lock of every folder they write (and ``before``,
    a script's own step such as a layer benchmark, inside the locks) for the whole run."""
    with locked_experiments(args, [e.name for e in experiments]):
        if before is not None:
            before()
        return [run_experiment(e, args, device) for e in experiments]


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> list[list[int]]:
    idx = labels.cpu() * num_classes + predictions.cpu()
    return torch.bincount(idx, minlength=num_classes ** 2).view(num_classes, num_classes).tolist()


def run_experiment(exp: Experiment, args: argparse.Namespace, device: torch.device) -> list[ModelResult]:
    """Train every model of ``exp`` with every seed, then write its summary, table and figures."""
    train, test, info = load_splits(exp.dataset, args, *exp.subset)
    cfg = make_config(args, device, epochs=exp.epochs, lr=exp.lr, **exp.train)
    ctx = Context(exp, Path(args.results_dir) / exp.name, Path(args.plots_dir) / exp.name,
                  train, test, device, args)
    results = train_models(ctx, exp.models(train), seed_list(args, exp.seeds), cfg, info)
    write_summary(ctx.out, results, extra_columns=[k for k, _, _ in exp.columns] + list(exp.summary_columns))
    write_table(ctx.out, results, exp.columns)
    if exp.contrasts:
        write_contrasts(ctx.out, results, exp.contrasts)
    save_comparison_figures(results, ctx.plots, exp.dataset,
                            f"{DATASETS[exp.dataset].title}: {exp.title} (эпох: {cfg.epochs})",
                            per_model=exp.per_model_figures)
    if exp.report is not None:
        exp.report(ctx, results)
    print(f"{exp.name}: {len(results)} results in {ctx.out}, figures in {ctx.plots}")
    return results


def train_models(ctx: Context, specs: Sequence[ModelSpec], seeds: Sequence[int], base_cfg: TrainConfig,
                 data_info: dict[str, Any]) -> list[ModelResult]:
    """Train every spec with every seed (seed by seed, so that a stop leaves whole comparisons);
    return the results, loaded from disk for those ``--resume`` skips.

    Before anything trains, each saved result is compared with the config it would get now: with
    ``--resume`` an identical one is reused; one made with another config (other hyperparameters,
    other data) is never replaced silently: :class:`OutputError` unless ``--overwrite``. A model
    whose loss stops being finite is recorded as diverged, and the next one trains.
    """
    args = ctx.args
    prepare_output_dir(ctx.out)
    architectures = {spec.name: repr(spec.build()) for spec in specs}  # the same for every seed
    plans = []
    for seed in seeds:
        for spec in specs:
            cfg = replace(base_cfg, **spec.overrides, seed=seed)
            config = {**cfg.to_dict(), **data_info, "model": spec.name, "overrides": spec.overrides,
                      "architecture": architectures[spec.name]}
            path = result_path(ctx.out, spec.name, seed)
            previous = load_result(path, warn=path.exists())
            if previous is not None and previous.get("config") != config and not args.overwrite:
                changes = config_differences(previous.get("config") or {}, config)
                raise OutputError(f"{path} holds a result made with another config "
                                  f"({'; '.join(changes[:3])}{'; ...' if len(changes) > 3 else ''}); "
                                  "pass --overwrite to replace it or --results-dir to write elsewhere")
            plans.append((spec, seed, cfg, config, path, previous))

    results: list[ModelResult] = []
    for spec, seed, cfg, config, path, previous in plans:
        if args.resume and previous is not None and previous.get("config") == config:
            print(f"[resume] {spec.name} (seed {seed}): results exist with the same config, skipping")
            results.append(previous)
            continue
        set_seed(seed)
        model = spec.build()
        result: ModelResult = {"model": spec.name, "seed": seed, "params": count_parameters(model),
                               "notes": spec.notes}
        result.update(train_model(model, ctx.train, ctx.test, cfg, desc=f"{spec.name} s{seed}"))
        preds = result.pop("test_predictions")
        result.update(measure_inference(model, ctx.test, cfg))
        result["confusion_matrix"] = confusion_matrix(ctx.test.labels, preds, len(ctx.test.classes))
        result["classes"] = list(ctx.test.classes)
        result["config"] = config
        if result.get("train_acc") is not None and result.get("test_acc") is not None:
            result["gap"] = result["train_acc"] - result["test_acc"]  # overfitting, on clean train images
        if ctx.experiment.analyse is not None:
            ctx.experiment.analyse(ctx, spec, model, result)
        result = strict_json(result)  # what is kept in memory is what the file says
        write_json_atomic(path, result)
        args.models_trained = getattr(args, "models_trained", 0) + 1  # run_main records only real work
        results.append(result)
        status = ("DIVERGED (non-finite loss)" if result.get("diverged")
                  else f"test acc {result['test_acc']:.4f}")
        print(f"{spec.name} (seed {seed}): {status}, train {result['train_time_s']:.0f} s -> {path}")
        del model, preds
        gc.collect()
    return results
