"""Figures shared by the three homework scripts. Every function saves one PNG and closes it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

DPI = 100


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _series(result: dict[str, Any], key: str) -> tuple[list[int], list[float]]:
    history = result["history"]
    return [h["epoch"] for h in history], [h[key] for h in history]


def plot_learning_curves(results: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Loss and accuracy per epoch: train (solid) and test (dashed), one colour per model."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = sns.color_palette("tab10", len(results))
    for r, c in zip(results, colors):
        for key, style, part in (("train", "-", "train"), ("test", "--", "test")):
            axes[0].plot(*_series(r, f"{key}_loss"), style, color=c, label=f"{r['model']} ({part})")
            axes[1].plot(*_series(r, f"{key}_acc"), style, color=c, label=f"{r['model']} ({part})")
    axes[0].set(title="Loss", xlabel="epoch", ylabel="cross-entropy", yscale="log")
    axes[1].set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    return _save(fig, path)


def plot_overfitting(results: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Generalisation gap per epoch: clean train accuracy minus test accuracy."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        epochs, train = _series(r, "train_acc")
        _, test = _series(r, "test_acc")
        ax.plot(epochs, 100 * (np.array(train) - np.array(test)), marker="o", label=r["model"])
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(title=title, xlabel="epoch", ylabel="train acc − test acc, p.p.")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(result: dict[str, Any], path: Path) -> Path:
    """Row-normalised confusion matrix (each row: how one true class was classified)."""
    cm = np.array(result["confusion_matrix"], dtype=float)
    cm = cm / cm.sum(1, keepdims=True).clip(min=1)
    classes = result["classes"]
    fig, ax = plt.subplots(figsize=(8, 6.5))
    sns.heatmap(cm, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, ax=ax,
                xticklabels=classes, yticklabels=classes, annot_kws={"size": 7},
                cbar_kws={"label": "доля класса"})
    ax.set(title=f"{result['model']}: confusion matrix (test acc {100 * result['test_acc']:.2f} %)",
           xlabel="predicted class", ylabel="true class")
    return _save(fig, path)


def plot_gradient_flow(result: dict[str, Any], path: Path) -> Path:
    """Per-layer gradient L2 norm (log scale): at initialisation and averaged over each epoch."""
    layers = result["grad_layers"]
    fig, ax = plt.subplots(figsize=(max(7, 0.35 * len(layers) + 3), 4.8))
    x = np.arange(len(layers))
    ax.plot(x, result["grad_norms_init"], "k--", marker=".", label="init")
    cmap = plt.get_cmap("viridis")
    history = result["history"]
    for i, h in enumerate(history):
        ax.plot(x, h["grad_norms"], marker=".", color=cmap(i / max(1, len(history) - 1)),
                label=f"epoch {h['epoch']}")
    ax.set_yscale("log")
    ax.set_xticks(x, [n.removesuffix(".weight") for n in layers], rotation=70, fontsize=7)
    ax.set(title=f"{result['model']}: gradient flow", xlabel="layer (input → output)",
           ylabel="‖∂L/∂W‖₂")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_metric_bars(results: Sequence[dict[str, Any]], path: Path, title: str,
                     metrics: Sequence[tuple[str, str]] = (("test_acc", "test accuracy"),
                                                           ("params", "parameters"),
                                                           ("train_time_s", "training time, s"),
                                                           ("inference_time_s", "inference time, s"))
                     ) -> Path:
    """One bar chart per metric, models side by side."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 4))
    names = [r["model"] for r in results]
    colors = sns.color_palette("tab10", len(results))
    for ax, (key, label) in zip(np.atleast_1d(axes), metrics):
        values = [r.get(key, np.nan) for r in results]
        ax.bar(range(len(names)), values, color=colors)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set(title=label)
        if key == "test_acc":
            lo = min(values)
            ax.set_ylim(max(0, lo - 0.05), 1)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_image_grid(images: torch.Tensor | np.ndarray, path: Path, title: str,
                    row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
                    cmap: str = "viridis", symmetric: bool = False) -> Path:
    """A grid of 2-D maps, ``images`` shaped (rows, cols, H, W), each panel scaled on its own."""
    images = torch.as_tensor(images).detach().float().cpu().numpy()
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1, 1.3 * rows + 0.6), squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            img = images[i, j]
            if symmetric:
                v = np.abs(img).max() or 1.0
                ax.imshow(img, cmap=cmap, vmin=-v, vmax=v)
            else:
                ax.imshow(img, cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=8)
            if i == 0 and col_labels is not None:
                ax.set_title(col_labels[j], fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def save_comparison_figures(results: Sequence[dict[str, Any]], plots_dir: Path, prefix: str,
                            title: str, per_model: bool = True) -> list[Path]:
    """Learning curves, overfitting gap, bars and (per model) confusion matrix and gradient flow."""
    plots_dir = Path(plots_dir)
    paths = [plot_learning_curves(results, plots_dir / f"{prefix}_learning_curves.png", title),
             plot_overfitting(results, plots_dir / f"{prefix}_overfitting.png",
                              f"{title}: generalisation gap"),
             plot_metric_bars(results, plots_dir / f"{prefix}_comparison.png", title)]
    if per_model:
        for r in results:
            paths.append(plot_confusion_matrix(r, plots_dir / f"{prefix}_{r['model']}_confusion.png"))
            paths.append(plot_gradient_flow(r, plots_dir / f"{prefix}_{r['model']}_gradient_flow.png"))
    return paths
