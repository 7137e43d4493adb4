"""The figures show what the README says they show: bars from zero with their values above the
error bars, curves that coincide said to coincide, one gradient scale for models read side by
side, exact zeros explained in the legend, saturated feature maps flagged by the colourbar."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils import visualization_utils as vis


@pytest.fixture
def figures(monkeypatch):
    """The figures the plotting functions would save, kept open for inspection."""
    saved = {}

    def keep(fig, path):
        saved[path.name] = fig
        return path

    monkeypatch.setattr(vis, "_save", keep)
    yield saved
    for fig in saved.values():
        vis.plt.close(fig)


def result(model: str, seed: int, acc: float, loss: float = 1.0, grads=(0.1, 0.2), epochs: int = 3) -> dict:
    history = [{"epoch": e + 1, "train_loss": loss, "test_loss": loss, "train_acc": acc, "test_acc": acc,
                "grad_norms": [g / (e + 1) for g in grads]} for e in range(epochs)]
    return {"model": model, "seed": seed, "test_acc": acc, "params": 1000 + seed, "train_time_s": 10.0 + seed,
            "inference_time_s": 1.0, "history": history, "grad_layers": ["conv.weight", "fc.weight"],
            "grad_norms_init": list(grads), "confusion_matrix": [[5, 1], [2, 4]], "classes": ["a", "b"]}


def test_bars_start_at_zero_with_room_for_the_values_above_the_error_bars(figures, tmp_path):
    results = [result("A", s, acc) for s, acc in enumerate((0.90, 0.92, 0.94))] + [result("B", 0, 0.5)]
    vis.plot_metric_bars(results, tmp_path / "bars.png", "t")
    error_axis = figures["bars.png"].axes[0]
    bottom, top = error_axis.get_ylim()
    assert bottom == 0
    mean_a, std_a = 8.0, 2.0  # error of A in %: 10, 8, 6
    assert top > mean_a + std_a and top > 50  # B's 50 % error fits too
    labels = {t.get_text(): t.xy for t in error_axis.texts}
    assert set(labels) == {"8.00", "50.00"}  # % with two decimals, like the tables
    assert labels["8.00"][1] == pytest.approx(mean_a + std_a)  # placed on top of the error bar


def test_identical_curves_are_marked_as_coinciding(figures, tmp_path):
    results = [result("stuck", 0, 0.1, loss=2.3026), result("stuck-too", 0, 0.1, loss=2.30261),
               result("learns", 0, 0.8, loss=0.5)]
    vis.plot_learning_curves(results, tmp_path / "curves.png", "t")
    legend = [t.get_text() for t in figures["curves.png"].axes[1].get_legend().get_texts()]
    assert "stuck-too (на графике совпадает с stuck)" in legend
    assert "learns" in legend and "stuck" in legend
    assert legend[-2:] == ["обучение", "тест"]
    vis.plot_overfitting(results, tmp_path / "gap.png", "t")
    gap_legend = [t.get_text() for t in figures["gap.png"].axes[0].get_legend().get_texts()]
    assert "stuck-too (на графике совпадает с stuck)" in gap_legend and "learns" in gap_legend


def test_gradient_flow_figures_of_one_comparison_share_one_scale(figures, tmp_path):
    results = [result("small", 0, 0.5, grads=(1e-4, 1e-3)), result("large", 0, 0.5, grads=(1.0, 10.0))]
    vis.save_comparison_figures(results, tmp_path, "d", "t")
    small = figures["d_small_gradient_flow.png"].axes[0].get_ylim()
    large = figures["d_large_gradient_flow.png"].axes[0].get_ylim()
    assert small == large
    assert small[0] <= 1e-4 / 3 and small[1] >= 10.0  # every epoch of both models is inside


def test_exact_zero_gradients_are_explained_in_the_legend_not_over_the_data(figures, tmp_path):
    r = result("zero-init", 0, 0.5, grads=(0.0, 0.2))
    vis.plot_gradient_flow(r, tmp_path / "flow.png")
    ax = figures["flow.png"].axes[0]
    assert any("ровно 0" in t.get_text() for t in ax.get_legend().get_texts())
    assert not ax.texts
    vis.plot_gradient_flow(result("healthy", 0, 0.5), tmp_path / "healthy.png")
    legend = [t.get_text() for t in figures["healthy.png"].axes[0].get_legend().get_texts()]
    assert not any("ровно 0" in text for text in legend)


@pytest.mark.parametrize("vmax, extend", [(None, "neither"), (0.5, "max")])
def test_feature_map_colourbar_says_when_values_saturate(figures, tmp_path, vmax, extend):
    maps = [torch.linspace(0, 1, 2 * 4 * 4).view(2, 4, 4)]
    vis.plot_maps_with_inputs([None], maps, tmp_path / "maps.png", "t", vmax=vmax)
    colorbar = figures["maps.png"].axes[-1]
    assert colorbar.get_ylim()[1] == pytest.approx(vmax or 1.0)
    assert figures["maps.png"].axes[0].images[0].colorbar is None  # one canvas, one shared colourbar
    bar = [a for a in figures["maps.png"].axes if hasattr(a, "_colorbar")][0]._colorbar
    assert bar.extend == extend


def test_large_counts_on_axes_have_no_scientific_offset():
    assert vis._axis_number(3_000_000) == "3 млн"
    assert vis._axis_number(40_000) == "40 тыс."
    assert vis._axis_number(250) == "250"
    assert vis._bar_text(302766) == "302 766"
    assert vis._bar_text(0.4767) == "0.477"
    assert vis._bar_text(float("nan")) == "–"


def test_grad_norm_range_ignores_zeros_and_missing_values():
    r = result("m", 0, 0.5, grads=(0.0, 4.0))
    r["history"][0]["grad_norms"] = [None, 8.0]
    low, high = vis.grad_norm_range([r])
    assert low == pytest.approx(4.0 / 3 / 2) and high == pytest.approx(16.0)
    assert vis.grad_norm_range([{"history": []}]) is None
    assert np.isfinite(low)
