"""What the committed results cost: minutes of training per seed of every sub-task, summed from
the result files themselves (``train_time_s`` of each model-seed), never projected.

A student's default run is one seed of each part, so the last row is what the whole homework's
training costs at the defaults on the machine named beside it (data loading, evaluation and the
analysis figures come on top). Writes ``benchmarks/results/run_costs.md``.

    python benchmarks/run_costs.py && python -m utils.results
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.results import HOMEWORK_PARTS, load_result, load_seed_results, write_text_atomic  # noqa: E402

def part_cost(folder: Path) -> dict | None:
    """Models, seeds, epochs and the training minutes of each seed (all its models together)."""
    results = load_seed_results(folder)
    if not results:
        return None
    minutes: dict[int, float] = defaultdict(float)
    for r in results:
        minutes[r["seed"]] += r["train_time_s"] / 60
    models = {r["model"] for r in results}
    trained = Counter(r["seed"] for r in results)  # models trained with each seed
    complete = [m for s, m in minutes.items() if trained[s] == len(models)]
    epochs = sorted({r["epochs"] for r in results})
    return {"models": len(models), "seeds": len(minutes), "complete": np.array(complete),
            "epochs": f"{epochs[0]}–{epochs[-1]}" if len(epochs) > 1 else str(epochs[0])}


def cost_table(results_dir: Path) -> str:
    """The markdown table: per part and in total, minutes of training per seed (mean and range
    over the seeds that trained every model of the part) and the CPU of the part's run record."""
    lines = ["| часть | моделей | сидов | эпох | обучение одного сида, мин: среднее (мин–макс) | процессор |",
             "| --- | --- | --- | --- | --- | --- |"]
    total, whole = 0.0, True
    for part, folder, script in HOMEWORK_PARTS:
        record = f"{script}_part{part}"
        cost = part_cost(results_dir / folder)
        if cost is None or not len(cost["complete"]):
            whole = False
            continue
        run = load_result(results_dir / "runs" / f"{record}.json") or {}
        cpu = run.get("cpu", "–").replace("(R)", "").replace("(TM)", "")
        m = cost["complete"]
        total += m.mean()
        lines.append(f"| {part} | {cost['models']} | {cost['seeds']} | {cost['epochs']} | "
                     f"{m.mean():.1f} ({m.min():.1f}–{m.max():.1f}) | {cpu} |")
    lines.append(f"| **весь ДЗ{'' if whole else ' (не все части)'}** | | | | **{total:.0f}** "
                 f"(≈ {total / 60:.1f} ч) | |")
    return "\n".join(lines) + ("\n\n_Сумма `train_time_s` закоммиченных результатов по сидам "
                               "(`benchmarks/run_costs.py`); загрузка данных, оценка и рисунки — сверху._\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results-dir", type=Path, default=ROOT / "results")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "run_costs.md")
    args = p.parse_args()
    if not args.results_dir.is_dir():
        print(f"error: {args.results_dir} is not a folder", file=sys.stderr)
        sys.exit(2)
    text = cost_table(args.results_dir)
    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
