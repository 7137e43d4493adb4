"""Running a comparison of several models, and writing and reading its results.

:func:`run_comparison` trains the models of one experiment one after the other with the same
:class:`~utils.training_utils.TrainConfig` (plus each model's stated overrides). Each model's
result is written atomically to ``<results>/<experiment>/<model>.json`` as soon as it finishes,
then the model is dropped, so memory stays flat and an interrupted run loses one model at most.
"""
from __future__ import annotations

import csv
import gc
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from models.cnn_models import count_parameters
from utils.data import ImageSet
from utils.training_utils import TrainConfig, evaluate, measure_inference, set_seed, train_model

SUMMARY_COLUMNS = ("model", "params", "epochs", "train_loss", "train_acc", "test_loss", "test_acc",
                   "train_time_s", "inference_time_s", "train_images_per_s")


@dataclass
class ModelSpec:
    """A model of a comparison: its name, how to build it, and what differs in its training."""

    name: str
    build: Callable[[], nn.Module]
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields, e.g. regularisation
    notes: str = ""


# ---------------------------------------------------------------------------------------------
# Files

def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def result_path(experiment_dir: Path, model_name: str) -> Path:
    return Path(experiment_dir) / f"{model_name}.json"


def load_result(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_results(experiment_dir: Path, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Results of an experiment, in the order of ``names`` (default: all JSON files, sorted)."""
    experiment_dir = Path(experiment_dir)
    if names is None:
        paths = sorted(experiment_dir.glob("*.json"))
    else:
        paths = [result_path(experiment_dir, n) for n in names]
    return [r for r in map(load_result, paths) if r is not None and "model" in r]


def write_summary(experiment_dir: Path, results: Sequence[dict[str, Any]],
                  extra_columns: Sequence[str] = ()) -> Path:
    """``summary.csv``: one row per model with the headline metrics."""
    columns = list(SUMMARY_COLUMNS) + [c for c in extra_columns if c not in SUMMARY_COLUMNS]
    path = Path(experiment_dir) / "summary.csv"
    lines = []
    with tempfile.TemporaryFile("w+", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            writer.writerow({c: r.get(c, "") for c in columns})
        f.seek(0)
        lines = f.read()
    write_text_atomic(path, lines)
    return path


# ---------------------------------------------------------------------------------------------
# Markdown tables (the README's tables are made by these functions from the results files)

def _fmt(value: Any, kind: str) -> str:
    if value is None or value == "":
        return "–"
    if kind == "pct":
        return f"{100 * value:.2f}"
    if kind == "int":
        return f"{int(value):,}".replace(",", " ")
    if kind == "s":
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    if kind == "f4":
        return f"{value:.4f}"
    if kind == "f2":
        return f"{value:.2f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """``columns`` are (key, header, format) with format one of pct, int, s, f4, f2, str."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(_fmt(r.get(k), f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


STANDARD_COLUMNS = (
    ("model", "модель", "str"), ("params", "параметры", "int"), ("epochs", "эпохи", "int"),
    ("train_acc", "train acc, %", "pct"), ("test_acc", "test acc, %", "pct"),
    ("train_loss", "train loss", "f4"), ("test_loss", "test loss", "f4"),
    ("train_time_s", "обучение, с", "s"), ("inference_time_s", "инференс test, с", "s"),
)


# ---------------------------------------------------------------------------------------------
# Running a comparison

def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> list[list[int]]:
    idx = labels.cpu() * num_classes + predictions.cpu()
    return torch.bincount(idx, minlength=num_classes ** 2).view(num_classes, num_classes).tolist()


def describe_data(train_set: ImageSet, test_set: ImageSet, name: str) -> dict[str, Any]:
    return {"dataset": name, "train_size": len(train_set), "test_size": len(test_set)}


def run_comparison(experiment_dir: Path, specs: Sequence[ModelSpec], train_set: ImageSet,
                   test_set: ImageSet, base_cfg: TrainConfig, data_info: dict[str, Any],
                   resume: bool = False,
                   after_training: Callable[[ModelSpec, nn.Module, dict[str, Any]], None] | None = None,
                   ) -> list[dict[str, Any]]:
    """Train every spec in turn; return the results (loaded from disk for resumed models).

    ``after_training(spec, model, result)`` runs while the trained model still exists (for figures
    such as feature maps); it may add keys to ``result`` before it is written.
    """
    experiment_dir = Path(experiment_dir)
    results = []
    for spec in specs:
        cfg = replace(base_cfg, **spec.overrides)
        set_seed(cfg.seed)
        model = spec.build()
        config = {**cfg.to_dict(), **data_info, "model": spec.name, "overrides": spec.overrides,
                  "architecture": repr(model)}
        path = result_path(experiment_dir, spec.name)
        previous = load_result(path) if resume else None
        if previous is not None and previous.get("config") == config:
            print(f"[resume] {spec.name}: results exist with the same config, skipping")
            results.append(previous)
            continue
        result: dict[str, Any] = {"model": spec.name, "params": count_parameters(model),
                                  "notes": spec.notes}
        result.update(train_model(model, train_set, test_set, cfg, desc=spec.name))
        result.update(measure_inference(model, test_set, cfg))
        preds = evaluate(model, test_set, cfg, return_predictions=True)["predictions"]
        result["confusion_matrix"] = confusion_matrix(test_set.labels, preds, len(test_set.classes))
        result["classes"] = list(test_set.classes)
        result["config"] = config
        if after_training is not None:
            after_training(spec, model, result)
        write_json_atomic(path, result)
        results.append(result)
        print(f"{spec.name}: test acc {result['test_acc']:.4f}, train {result['train_time_s']:.0f} s "
              f"-> {path}")
        del model, preds
        gc.collect()
    write_summary(experiment_dir, results)
    return results


def run_caption(results: Sequence[dict[str, Any]]) -> str:
    """One line saying how the numbers were produced (data size, epochs, device), from the configs."""
    if not results:
        return "_нет результатов_"
    cfgs = [r["config"] for r in results]
    epochs = sorted({r["epochs"] for r in results})
    parts = [f"{cfgs[0].get('dataset', '?')}: train {cfgs[0].get('train_size', '?')}"
             f" / test {cfgs[0].get('test_size', '?')} изображений",
             "эпох: " + "/".join(map(str, epochs)),
             f"batch {cfgs[0]['batch_size']}", f"устройство {cfgs[0]['device']}"]
    if any(c.get("quick") for c in cfgs):
        parts.append("**--quick: подвыборка и 1 эпоха, цифры не показательны**")
    if any(c.get("preset") for c in cfgs):
        parts.append(f"**пресет {cfgs[0]['preset']}: сокращённый прогон**")
    return "_" + "; ".join(parts) + "_"


def write_table(experiment_dir: Path, results: Sequence[dict[str, Any]],
                columns: Sequence[tuple[str, str, str]] = STANDARD_COLUMNS,
                name: str = "table.md") -> Path:
    """A markdown table of ``results`` with its caption, for the README (see utils/report.py)."""
    text = markdown_table(results, columns) + "\n\n" + run_caption(results) + "\n"
    path = Path(experiment_dir) / name
    write_text_atomic(path, text)
    return path
