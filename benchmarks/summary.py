"""The README's performance summary, made from the benchmark outputs (never typed by hand).

Reads the committed outputs of ``bench_scripts.py`` (CPU and GPU), ``bench_pipeline.py`` (CPU and
GPU) and the ``--budget`` run records, and writes ``benchmarks/results/summary.md``: one table of
what a default run costs and the measures that matter, each cell naming the file it comes from.

    python benchmarks/summary.py && python -m utils.results
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SOURCES = {
    "cpu_scripts": RESULTS / "bench_scripts_cpu.txt",
    "gpu_scripts": RESULTS / "cuda_h200" / "bench_scripts_cuda_fraction1.txt",
    "cpu_pipeline": RESULTS / "bench_pipeline.txt",
    "gpu_pipeline": RESULTS / "cuda_h200" / "bench_pipeline_cuda.txt",
    "budget": RESULTS / "budget_runs.md",
}
SCRIPTS = ("homework_cnn_vs_fc_comparison", "homework_cnn_architecture_analysis",
           "homework_custom_layers_experiments")


def script_table(path: Path) -> dict[str, dict[str, float]]:
    """Rows of a ``bench_scripts.py`` table: projected minutes and peak RSS per script, and the total."""
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = line.split()
        if cells and cells[0].removesuffix(".py") in SCRIPTS:
            rows[cells[0].removesuffix(".py")] = {"projected": float(cells[6]), "peak": float(cells[8])}
        elif cells[:1] == ["total"]:
            rows["total"] = {"projected": float(cells[2]) if len(cells) == 4 else float(cells[-2])}
    return rows


def best_naive_ratios(path: Path) -> list[str]:
    """Per data set: the core's speed-up over the best naive pipeline (the slowest ratio)."""
    blocks, out = path.read_text(encoding="utf-8").split("pipeline ")[1:], []
    for block in blocks:
        ratios = {line.split("  ")[0]: float(re.search(r"(\d+\.\d+)x", line).group(1))
                  for line in block.splitlines() if re.search(r"\d+\.\d+x", line)}
        core = next(v for k, v in ratios.items() if k.startswith("core"))
        best_naive = max(v for k, v in ratios.items() if k.startswith("naive"))
        out.append(f"{core / best_naive:.2f}")
    return out


def budget_minutes(path: Path) -> dict[str, float]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0] in SCRIPTS:
            out[cells[0]] = float(cells[3])
    return out


def main() -> None:
    missing = [str(p) for p in SOURCES.values() if not p.is_file()]
    if missing:
        print(f"error: missing benchmark outputs: {', '.join(missing)}", file=sys.stderr)
        sys.exit(2)
    cpu, gpu = script_table(SOURCES["cpu_scripts"]), script_table(SOURCES["gpu_scripts"])
    per_script = lambda t, key: " / ".join(f"{t[s][key]:.1f}" for s in SCRIPTS)  # noqa: E731
    budget = budget_minutes(SOURCES["budget"])
    cpu_pipe, gpu_pipe = best_naive_ratios(SOURCES["cpu_pipeline"]), best_naive_ratios(SOURCES["gpu_pipeline"])
    rows = [
        ("весь ДЗ по умолчанию, мин (задания 1 / 2 / 3)",
         f"**{cpu['total']['projected']:.1f}** ({per_script(cpu, 'projected')}), прогноз по доле эпохи",
         f"**{gpu['total']['projected']:.1f}** ({per_script(gpu, 'projected')}), измерено целиком"),
        ("пиковая память скрипта, МБ", f"до {max(cpu[s]['peak'] for s in SCRIPTS):.0f}",
         f"до {max(gpu[s]['peak'] for s in SCRIPTS):.0f} (с библиотеками CUDA)"),
        ("ускорение конвейера данных против лучшего наивного, MNIST / CIFAR-10",
         " / ".join(f"{r}×" for r in cpu_pipe), " / ".join(f"{r}×" for r in gpu_pipe)),
        ("`--budget`, мин (задания 1 / 2 / 3)", " / ".join(f"{budget[s]:.1f}" for s in SCRIPTS), "–"),
    ]
    lines = ["| что | 2-ядерный CPU, 2 потока | GPU (NVIDIA H200) |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    sources = ", ".join(f"`{p.relative_to(RESULTS.parent)}`" for p in SOURCES.values())
    text = "\n".join(lines) + f"\n\n_Собрано `benchmarks/summary.py` из {sources}._\n"
    (RESULTS / "summary.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
