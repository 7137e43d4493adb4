"""Figures shared by the three homework scripts. Every function saves one PNG and closes it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib
import matplotlib.cm
import matplotlib.colors
import matplotlib.lines
import matplotlib.ticker

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from utils.results import by_model  # noqa: E402

DPI = 100


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # long row labels and legends are never cut off
    plt.close(fig)
    return path


def _series(result: dict[str, Any], key: str) -> tuple[list[int], list[float]]:
    history = result["history"]
    return [h["epoch"] for h in history], [h[key] for h in history]


def _curve(runs: Sequence[dict[str, Any]], key: str, scale: float = 1.0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, mean and std over seeds of a per-epoch metric (the epochs every seed has)."""
    n = min(len(r["history"]) for r in runs)
    values = np.array([[np.nan if h.get(key) is None else h[key] for h in r["history"][:n]] for r in runs],
                      dtype=float) * scale
    std = np.nanstd(values, 0, ddof=1) if len(runs) > 1 else np.zeros(n)
    return np.arange(1, n + 1), np.nanmean(values, 0), std


def _label(name: str, runs: Sequence[dict[str, Any]]) -> str:
    return f"{name} ({len(runs)} сид.)" if len(runs) > 1 else name


def _same_curves(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> bool:
    """Whether two models' mean test curves coincide on a plot (within 0.1 %; e.g. two nets stuck
    at chance): the later one would hide the earlier."""
    pairs = [(_curve(a, k)[1], _curve(b, k)[1]) for k in ("test_loss", "test_acc")]
    return all(x.shape == y.shape and np.allclose(x, y, rtol=1e-3, atol=1e-6, equal_nan=True) for x, y in pairs)


def _twin(name: str, groups: dict[str, Sequence[dict[str, Any]]]) -> str | None:
    """The first model drawn before ``name`` whose curves coincide with its curves, if any."""
    names = list(groups)
    return next((other for other in names[:names.index(name)] if _same_curves(groups[name], groups[other])), None)


def _log_ticks(ax: plt.Axes) -> None:
    """Labels at 1, 1.5, 2, 3, 5, 7 x 10^k on a log y-axis: a loss axis spanning less than a
    decade otherwise shows one or two labelled ticks."""
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def plot_learning_curves(results: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Loss and accuracy per epoch: train (solid) and test (dashed), one colour per model; with
    several seeds the mean and a ±std band. The legend (one entry per model) sits outside the
    axes, so that it hides no curve however many models there are; a model whose curves
    coincide with an earlier one's is drawn with crosses and says so in the legend."""
    groups = by_model(results)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    colors = sns.color_palette("tab10", len(groups))
    for (name, runs), c in zip(groups.items(), colors):
        twin = _twin(name, groups)
        label = name if twin is None else f"{name} (на графике совпадает с {twin})"
        for part, style in (("train", "-"), ("test", "--")):
            for ax, key, scale in ((axes[0], f"{part}_loss", 1.0), (axes[1], f"{part}_acc", 100.0)):
                epochs, mean, std = _curve(runs, key, scale)
                ax.plot(epochs, mean, style, color=c, marker="." if twin is None else "x",
                        label=label if part == "train" else None)
                if len(runs) > 1:
                    ax.fill_between(epochs, mean - std, mean + std, color=c, alpha=0.15)
    axes[0].set(title="Функция потерь", xlabel="эпоха", ylabel="кросс-энтропия", yscale="log")
    _log_ticks(axes[0])
    axes[1].set(title="Точность", xlabel="эпоха", ylabel="точность, %")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    styles = [matplotlib.lines.Line2D([], [], color="black", ls=ls, label=label)
              for ls, label in (("-", "обучение"), ("--", "тест"))]
    axes[1].legend(handles=axes[1].get_legend_handles_labels()[0] + styles, fontsize=8,
                   loc="center left", bbox_to_anchor=(1.02, 0.5))
    seeds = max(len(runs) for runs in groups.values())
    fig.suptitle(title + (f" (среднее и ±std по {seeds} сидам)" if seeds > 1 else ""))
    return _save(fig, path)


# Bar-chart metrics computed from a result rather than read from it.
DERIVED = {"test_error": lambda r: None if r.get("test_acc") is None else 1 - r["test_acc"]}


def _bar_text(value: float, percent: bool = False) -> str:
    """A bar's value as the tables write it: % with two decimals, counts with thousands spaced."""
    if not np.isfinite(value):
        return "–"
    if percent:
        return f"{value:.2f}"
    if abs(value) >= 100:
        return f"{value:,.0f}".replace(",", " ")
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _axis_number(value: float, _: Any = None) -> str:
    """Tick labels without a "1e6" offset: 300 тыс., 3.8 млн."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:g} млн"
    if abs(value) >= 1e4:
        return f"{value / 1e3:g} тыс."
    return f"{value:g}"


def plot_overfitting(results: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Generalisation gap per epoch: clean train accuracy minus test accuracy (mean ± std over seeds)."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    groups = by_model(results)
    for name, runs in groups.items():
        twin = _twin(name, groups)
        epochs = _curve(runs, "train_acc")[0]
        gaps = np.array([100 * (np.array(_series(r, "train_acc")[1][:len(epochs)], dtype=float)
                                - np.array(_series(r, "test_acc")[1][:len(epochs)], dtype=float))
                         for r in runs])
        gap = np.nanmean(gaps, 0)
        ax.plot(epochs, gap, marker="o" if twin is None else "x",
                label=_label(name, runs) + ("" if twin is None else f" (на графике совпадает с {twin})"))
        if len(runs) > 1:
            std = np.nanstd(gaps, 0, ddof=1)
            ax.fill_between(epochs, gap - std, gap + std, alpha=0.15)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(title=title, xlabel="эпоха", ylabel="точность на обучении − на тесте, п.п.")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))  # outside: hides no curve
    return _save(fig, path)


def plot_confusion_matrix(runs: Sequence[dict[str, Any]], path: Path) -> Path:
    """Confusion matrix of one model, summed over its seeds: counts where the test set is large
    and a few classes dominate (MNIST reads 0.00 almost everywhere when normalised), and with
    each row normalised otherwise."""
    result = runs[0]
    cm = np.sum([np.array(r["confusion_matrix"], dtype=float) for r in runs], 0)
    classes = result["classes"]
    accs = [r["test_acc"] for r in runs if r.get("test_acc") is not None]
    acc = f"{100 * np.mean(accs):.2f} %" if accs else "–"
    counts = cm.sum() / len(runs) > 1000 and np.trace(cm) / max(cm.sum(), 1) > 0.95
    fig, ax = plt.subplots(figsize=(8, 6.5))
    if counts:
        sns.heatmap(cm.astype(int), annot=True, fmt="d", cmap="Blues", ax=ax, xticklabels=classes,
                    yticklabels=classes, annot_kws={"size": 7},
                    cbar_kws={"label": "изображений (лог. шкала; пустая клетка — 0)"},
                    norm=matplotlib.colors.LogNorm(vmin=1, vmax=max(2, cm.max())))
    else:
        sns.heatmap(cm / cm.sum(1, keepdims=True).clip(min=1), annot=True, fmt=".2f", cmap="Blues",
                    vmin=0, vmax=1, ax=ax, xticklabels=classes, yticklabels=classes,
                    annot_kws={"size": 7}, cbar_kws={"label": "доля класса"})
    seeds = f", сумма по {len(runs)} сидам" if len(runs) > 1 else ""
    ax.set(title=f"{result['model']}: матрица ошибок (точность на тесте {acc}{seeds})",
           xlabel="предсказанный класс", ylabel="истинный класс")
    return _save(fig, path)


def _plot_log(ax: plt.Axes, x: np.ndarray, values: Sequence[float | None], **style: Any) -> bool:
    """A line on a log axis whose exact zeros (and missing values) are drawn as ▼ markers at the
    bottom of the axes instead of falling off it; returns whether there were any."""
    v = np.array([np.nan if y is None else y for y in values], dtype=float)
    positive = np.where(v > 0, v, np.nan)
    line, = ax.plot(x, positive, **style)
    zeros = ~(v > 0)
    if zeros.any():
        ax.plot(np.asarray(x)[zeros], np.zeros(zeros.sum()), "v", color=line.get_color(), ms=7, clip_on=False,
                transform=ax.get_xaxis_transform())
    return bool(zeros.any())


def _zero_handle() -> matplotlib.lines.Line2D:
    """The legend entry of the ▼ markers (a note inside the axes would sit on the data)."""
    return matplotlib.lines.Line2D([], [], ls="none", marker="v", color="grey", ms=7,
                                   label="у нижнего края: ровно 0 (на лог. оси его нет)")


def grad_norm_range(results: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """One y-range (log axis) for the per-layer gradient norms of several models, so that their
    gradient-flow figures, read side by side, compare by eye."""
    values = np.array([v for r in results for series in [r.get("grad_norms_init") or []]
                       + [h.get("grad_norms") or [] for h in r.get("history", [])]
                       for v in series if v is not None and v > 0], dtype=float)
    if not values.size:
        return None
    return float(values.min()) / 2, float(values.max()) * 2


def plot_gradient_flow(result: dict[str, Any], path: Path, ylim: tuple[float, float] | None = None) -> Path:
    """Per-layer gradient L2 norm (log scale): at initialisation (dashed) and averaged over each
    epoch (colour = epoch, read off the colourbar: a legend of every epoch would hide the lines).
    ``ylim`` gives the models of one comparison one scale (see :func:`grad_norm_range`)."""
    layers = result["grad_layers"]
    fig, ax = plt.subplots(figsize=(max(7, 0.35 * len(layers) + 3), 4.8))
    x = np.arange(len(layers))
    ax.set_yscale("log")
    zeros = _plot_log(ax, x, result["grad_norms_init"], ls="--", color="k", marker=".", label="инициализация")
    history = result["history"]
    epochs = [h["epoch"] for h in history]
    norm = matplotlib.colors.Normalize(min(epochs), max(max(epochs), min(epochs) + 1))
    cmap = plt.get_cmap("viridis")
    for h in history:
        zeros |= _plot_log(ax, x, h["grad_norms"], marker=".", color=cmap(norm(h["epoch"])))
    if ylim is not None:
        ax.set_ylim(*ylim)
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax)
    bar.set_label("эпоха (среднее за эпоху)")
    bar.locator = matplotlib.ticker.MaxNLocator(integer=True)
    bar.update_ticks()
    ax.set_xticks(x, [n.removesuffix(".weight") for n in layers], rotation=70, fontsize=8)
    ax.set(title=f"{result['model']} (сид {result.get('seed', 0)}): нормы градиентов по слоям",
           xlabel="слой (вход → выход)", ylabel="‖∂L/∂W‖₂")
    ax.grid(alpha=0.3, which="both")
    handles = ax.get_legend_handles_labels()[0] + ([_zero_handle()] if zeros else [])
    ax.legend(handles=handles, fontsize=7, loc="upper left")
    return _save(fig, path)


def plot_metric_bars(results: Sequence[dict[str, Any]], path: Path, title: str,
                     metrics: Sequence[tuple[str, str, float]] = (("test_error", "ошибка на тесте, %", 100.0),
                                                                  ("params", "параметры", 1.0),
                                                                  ("train_time_s", "обучение, с", 1.0),
                                                                  ("inference_time_s", "инференс на тесте, с", 1.0))
                     ) -> Path:
    """One bar chart per metric, models side by side: the mean over seeds with ±std error bars
    and its value on the bar; every axis starts at zero (so accuracy is shown as the error,
    100 − accuracy: from zero, 99.0 and 99.5 % would look the same)."""
    groups = by_model(results)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 4))
    names = list(groups)
    colors = sns.color_palette("tab10", len(names))
    for ax, (key, label, scale) in zip(np.atleast_1d(axes), metrics):
        get = DERIVED.get(key, lambda r, key=key: r.get(key))
        values = [[get(r) * scale for r in runs if get(r) is not None] for runs in groups.values()]
        means = [np.mean(v) if v else np.nan for v in values]
        stds = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
        ax.bar(range(len(names)), means, yerr=stds if any(stds) else None, color=colors, capsize=4)
        crowded = len(names) > 4  # side by side, the value labels of many bars would overlap
        for i, (mean, std) in enumerate(zip(means, stds)):  # above the error bar, not across it
            if np.isfinite(mean):
                ax.annotate(_bar_text(mean, percent=scale == 100.0), (i, mean + std), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7,
                            rotation=90 if crowded else 0)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set(title=label)
        top = np.nanmax(np.add(means, stds)) if np.isfinite(means).any() else 1.0
        ax.set_ylim(0, (1.35 if crowded else 1.15) * top or 1.0)  # from zero, with room for the labels
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_axis_number))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_image_grid(images: torch.Tensor | np.ndarray, path: Path, title: str,
                    row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
                    cmap: str = "viridis", symmetric: bool = False,
                    shared: tuple[float, float, str] | None = None, own_scale_cols: Sequence[int] = ()) -> Path:
    """A grid of 2-D maps, ``images`` shaped (rows, cols, H, W). With ``shared`` = (vmin, vmax,
    label) every panel but the columns in ``own_scale_cols`` (e.g. the input image) uses that
    scale, with a colourbar; otherwise each panel is scaled on its own."""
    images = torch.as_tensor(images).detach().float().cpu().numpy()
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1, 1.3 * rows + 0.6), squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            img = images[i, j]
            if shared is not None and j not in own_scale_cols:
                im = ax.imshow(img, cmap=cmap, vmin=shared[0], vmax=shared[1])
            elif symmetric:
                v = np.abs(img).max() or 1.0
                ax.imshow(img, cmap=cmap, vmin=-v, vmax=v)
            else:
                ax.imshow(img, cmap="gray" if j in own_scale_cols else cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=8)
            if i == 0 and col_labels is not None:
                ax.set_title(col_labels[j], fontsize=8)
    fig.suptitle(title)
    if shared is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label=shared[2])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight")  # tight_layout does not handle a shared colorbar
        plt.close(fig)
        return path
    return _save(fig, path)


def save_comparison_figures(results: Sequence[dict[str, Any]], plots_dir: Path, prefix: str,
                            title: str, per_model: bool = True) -> list[Path]:
    """Learning curves, overfitting gap, bars and (per model) confusion matrix and gradient flow."""
    plots_dir = Path(plots_dir)
    paths = [plot_learning_curves(results, plots_dir / f"{prefix}_learning_curves.png", title),
             plot_overfitting(results, plots_dir / f"{prefix}_overfitting.png",
                              f"{title}: разрыв обучение − тест"),
             plot_metric_bars(results, plots_dir / f"{prefix}_comparison.png", title)]
    if per_model:
        for name, runs in by_model(results).items():
            paths.append(plot_confusion_matrix(runs, plots_dir / f"{prefix}_{name}_confusion.png"))
        paths += plot_gradient_flows(results, plots_dir, prefix)
    return paths


def plot_gradient_flows(results: Sequence[dict[str, Any]], plots_dir: Path, prefix: str) -> list[Path]:
    """The gradient flow of every model (its first seed), all on one y-range: read side by side."""
    first = [runs[0] for runs in by_model(results).values()]
    ylim = grad_norm_range(first)
    return [plot_gradient_flow(r, Path(plots_dir) / f"{prefix}_{r['model']}_gradient_flow.png", ylim) for r in first]


# --- Task 3: function curves, heatmaps, spread across seeds ---------------------------------

def plot_function_panels(x: np.ndarray, panels: Sequence[tuple[str, dict[str, np.ndarray]]],
                         path: Path, title: str, dashed_labels: Sequence[str] = (), dashed: str = "--") -> Path:
    """Side-by-side line plots over the same ``x``: each panel is (title, {label: y}); the curves
    named in ``dashed_labels`` (references) are dashed, so that a solid curve on top of one shows."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels):
        for label, y in curves.items():
            ax.plot(x, y, label=label, ls=dashed if label in dashed_labels else "-")
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set(title=name, xlabel="x")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_matrix(matrix: np.ndarray, path: Path, title: str, xlabel: str, ylabel: str,
                row_labels: Sequence[str] | None = None, cmap: str = "viridis", value_label: str = "") -> Path:
    """A heatmap of a 2-D array (rows labelled, columns numbered; the colourbar says its range,
    which is the data's, not from zero)."""
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(min(16, 3 + 0.18 * matrix.shape[1]), 1.2 + 0.35 * matrix.shape[0]))
    sns.heatmap(matrix, cmap=cmap, ax=ax, yticklabels=row_labels if row_labels is not None else "auto",
                xticklabels=max(1, matrix.shape[1] // 16),
                cbar_kws={"label": f"{value_label} (шкала {matrix.min():.2f}…{matrix.max():.2f}, не от нуля)".strip()})
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _save(fig, path)


def plot_seed_spread(groups: dict[str, Sequence[dict[str, Any]]], path: Path, title: str,
                     keys: Sequence[tuple[str, str]] = (("running_loss", "потери на обучении (бегущее среднее)"),
                                                        ("test_loss", "потери на тесте"),
                                                        ("test_acc", "точность на тесте, %"))) -> Path:
    """Per group (e.g. a block type) the curves of every seed (thin) and their mean ± std (band);
    accuracies in %, like the tables."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.2), squeeze=False)
    colors = sns.color_palette("tab10", len(groups))
    for (name, runs), c in zip(groups.items(), colors):
        for ax, (key, label) in zip(axes[0], keys):
            n = min(len(r["history"]) for r in runs)
            curves = np.array([[np.nan if h.get(key) is None else h[key] for h in r["history"][:n]]
                               for r in runs], dtype=float) * (100 if "acc" in key else 1)
            epochs = np.arange(1, n + 1)
            for curve in curves:
                ax.plot(epochs, curve, color=c, lw=0.7, alpha=0.5)
            mean = np.nanmean(curves, 0)
            std = np.nanstd(curves, 0, ddof=1) if len(runs) > 1 else np.zeros(n)
            ax.plot(epochs, mean, color=c, lw=2, marker="o", label=_label(name, runs))
            ax.fill_between(epochs, mean - std, mean + std, color=c, alpha=0.2)
            ax.set(title=label, xlabel="эпоха")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_grad_norm_traces(groups: dict[str, Sequence[dict[str, Any]]], path: Path, title: str) -> Path:
    """Total gradient norm over training, x in epochs: per group the mean over seeds (line) and
    their min..max (band), so that a seed that spikes shows as a widening band."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = sns.color_palette("tab10", len(groups))
    for (name, runs), c in zip(groups.items(), colors):
        n = min(len(r["history"]) for r in runs)
        # Sample j of an epoch is taken at its step j * grad_log_every.
        every = runs[0].get("config", {}).get("grad_log_every", 50)
        steps = runs[0].get("steps_per_epoch") or every * len(runs[0]["history"][0]["grad_total_norm"])
        x = [e + j * every / steps for e, h in enumerate(runs[0]["history"][:n])
             for j in range(len(h["grad_total_norm"]))]
        traces = np.array([[g for h in r["history"][:n] for g in h["grad_total_norm"]][:len(x)]
                           for r in runs], dtype=float)
        ax.plot(x, traces.mean(0), color=c, lw=1.2, label=_label(name, runs))
        if len(runs) > 1:
            ax.fill_between(x, traces.min(0), traces.max(0), color=c, alpha=0.2)
    ax.set_yscale("log")
    ax.set(title=title, xlabel="пройдено эпох", ylabel="‖∇L‖₂ весов свёрток и классификатора", xlim=(0, None))
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


# --- Task 2: activations, filters, receptive fields, per-layer gradient norms -----------------

def _to_rgb(tile: torch.Tensor | np.ndarray, cmap: str, symmetric: bool = False,
            vmax: float | None = None) -> np.ndarray:
    """A (C, H, W) image (RGB when C == 3) or an (H, W) map through ``cmap``, scaled to its own
    range (around zero when ``symmetric``), or to 0..``vmax`` when given (a scale shared by the
    maps being compared), as (H, W, 3) floats in 0..1."""
    t = torch.as_tensor(tile).detach().float().cpu().numpy()
    if t.ndim == 3 and t.shape[0] == 3:
        return ((t - t.min()) / max(t.max() - t.min(), 1e-12)).transpose(1, 2, 0)
    t = t[0] if t.ndim == 3 else t
    if vmax is not None:
        t = np.clip(t / max(vmax, 1e-12), 0, 1)
    elif symmetric:
        v = max(np.abs(t).max(), 1e-12)
        t = (t + v) / (2 * v)
    else:
        t = (t - t.min()) / max(t.max() - t.min(), 1e-12)
    return plt.get_cmap("gray" if cmap == "image" else cmap)(t)[..., :3]


def _mosaic(rows: Sequence[Sequence[np.ndarray | None]], path: Path, title: str,
            row_labels: Sequence[str] | None, cell_inches: float = 0.9,
            colorbar: tuple[str, float, str] | None = None, clipped: bool = False) -> Path:
    """RGB tiles laid out in rows on one canvas and drawn as a single image: far faster than one
    axes per tile. Tiles are resized (nearest) to a common side; None leaves a blank cell."""
    sizes = [t.shape[0] for row in rows for t in row if t is not None]
    side = int(np.lcm.reduce(sizes)) if np.lcm.reduce(sizes) <= 128 else max(sizes)
    gap = max(1, side // 8)
    cols = max(len(r) for r in rows)
    canvas = np.ones((len(rows) * (side + gap), cols * (side + gap), 3))
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            if t is not None:
                idx_y = np.arange(side) * t.shape[0] // side
                idx_x = np.arange(side) * t.shape[1] // side
                y, x = i * (side + gap), j * (side + gap)
                canvas[y:y + side, x:x + side] = t[idx_y][:, idx_x]
    fig, ax = plt.subplots(figsize=(cell_inches * cols + 2.4, cell_inches * len(rows) + 0.7))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_anchor("E")  # the row labels need the room on the left
    ax.set_xticks([])
    ax.set_yticks([i * (side + gap) + side / 2 for i in range(len(rows))],
                  row_labels if row_labels is not None else [""] * len(rows), fontsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=10)
    if colorbar is not None:  # (cmap, vmax, label): the scale every map of the figure shares
        cmap, vmax, label = colorbar
        mappable = plt.cm.ScalarMappable(matplotlib.colors.Normalize(0, vmax), plt.get_cmap(cmap))
        fig.colorbar(mappable, ax=ax, shrink=0.8, label=label, pad=0.01, extend="max" if clipped else "neither")
    return _save(fig, path)


def plot_maps_with_inputs(inputs: Sequence[torch.Tensor | None], maps: Sequence[torch.Tensor],
                          path: Path, title: str, row_labels: Sequence[str] | None = None,
                          cmap: str = "viridis", vmax: float | None = None) -> Path:
    """Rows of feature maps (after ReLU, so >= 0), each row after its input image: ``inputs[i]``
    (C, H, W) or None, ``maps[i]`` (K, h, w). All maps share one scale 0..``vmax`` (default:
    the largest value drawn), shown by a colourbar, so that weak activations look weak; values
    above a given ``vmax`` saturate, and the colourbar's arrow says so."""
    largest = max(float(torch.as_tensor(m).max()) for m in maps)
    vmax = largest if vmax is None else vmax
    rows = [[None if image is None else _to_rgb(image, "image")] + [_to_rgb(m, cmap, vmax=vmax) for m in row]
            for image, row in zip(inputs, maps)]
    return _mosaic(rows, path, title, row_labels, colorbar=(cmap, vmax, "активация"), clipped=largest > vmax)


def plot_filters(weights: dict[str, torch.Tensor], path: Path, title: str, max_filters: int = 16) -> Path:
    """One row of convolution kernels per model: an RGB picture (each kernel stretched to its own
    range, so colour is the kernel's colour preference, not its sign) when the layer sees an RGB
    image, otherwise the slice of the first input channel (red positive, blue negative).
    ``weights[name]`` is (out, in, k, k)."""
    rows = [[_to_rgb(w if w.shape[0] == 3 else w[0], "RdBu_r", symmetric=True)
             for w in torch.as_tensor(ws)[:max_filters]] for ws in weights.values()]
    labels = [f"{name} {tuple(torch.as_tensor(w).shape[2:])}" for name, w in weights.items()]
    return _mosaic(rows, path, title, labels, cell_inches=0.6)


def plot_heatmap_grid(maps: torch.Tensor | np.ndarray, path: Path, title: str,
                      row_labels: Sequence[str], col_labels: Sequence[str],
                      boxes: Sequence[tuple[float, float, float] | None] | None = None,
                      cmap: str = "magma", value_label: str = "") -> Path:
    """Heat maps shaped (rows, cols, H, W) on a shared 0..1 scale; ``boxes[col]`` = (centre x,
    centre y, side) draws a square on every panel of that column (e.g. a theoretical receptive field)."""
    maps = torch.as_tensor(maps).detach().float().cpu().numpy()
    rows, cols = maps.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols + 1.2, 2.3 * rows + 0.6), squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            im = ax.imshow(maps[i, j], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            if boxes is not None and boxes[j] is not None:
                cx, cy, side = boxes[j]
                ax.add_patch(plt.Rectangle((cx - side / 2, cy - side / 2), side, side, fill=False,
                                           edgecolor="cyan", lw=1.2, ls="--"))
                if side >= max(maps.shape[2:]):  # the dashed square lies (partly) outside the picture
                    ax.text(0.5, 0.04, f"{side:g} px > кадра", transform=ax.transAxes, ha="center",
                            fontsize=7, color="cyan")
                ax.set_xlim(-0.5, maps.shape[3] - 0.5)
                ax.set_ylim(maps.shape[2] - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=8)
            if i == 0:
                ax.set_title(col_labels[j], fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label=value_label)
    fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # no tight_layout: it does not handle a colorbar shared by a grid
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_layer_norms(panels: Sequence[tuple[str, dict[str, Sequence[float]]]], path: Path, title: str,
                     ylabel: str = "‖∂L/∂W‖₂") -> Path:
    """Per-layer values (log scale) against the layer's relative depth, one line per model, one
    panel per moment (e.g. at initialisation and in the last epoch); the panels share one y-range
    and exact zeros are marked at the bottom."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6), squeeze=False, sharey=True)
    colors = sns.color_palette("tab10", max(len(s) for _, s in panels))
    any_zeros = False
    for ax, (name, series) in zip(axes[0], panels):
        ax.set_yscale("log")
        zeros = False
        for (label, values), c in zip(series.items(), colors):
            x = np.linspace(0, 1, len(values)) if len(values) > 1 else np.zeros(1)
            zeros |= _plot_log(ax, x, values, marker=".", color=c, label=label)
        ax.set(title=name, xlabel="относительная глубина слоя (0 — вход, 1 — классификатор)")
        any_zeros |= zeros
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(ylabel)
    handles = axes[0][0].get_legend_handles_labels()[0] + ([_zero_handle()] if any_zeros else [])
    axes[0][-1].legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(title)
    return _save(fig, path)
