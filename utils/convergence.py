"""Convergence checks: does a comparison's ranking hold at twice the epochs?

Each part's committed comparison ran N epochs with 3 seeds (``results/<experiment>``); its check
ran 2N epochs with seed 0 (``--results-dir results/check_2x``, the same experiment folders). This
module writes ``results/check_2x/convergence.md``: per part, each model's test accuracy at N and
2N epochs and each declared contrast (read from the committed ``contrasts.md``) at both budgets,
with whether seed 0's sign held. One seed at 2N says whether the order held, not by how much.

    python -m utils.convergence
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from utils.results import HOMEWORK_PARTS, ReportError, _read, aggregate, by_model, load_seed_results, write_text_atomic
from utils.comparison_utils import compare

# The experiment folders of the homework, in the README's order, with their sub-task.
PARTS = {folder: part for part, folder, _ in HOMEWORK_PARTS}


def _table_rows(table_md: Path) -> list[list[str]]:
    """The body rows of a markdown table file as stripped cells (no header, no --- row)."""
    if not table_md.is_file():
        return []
    rows = [line.strip().strip("|").split("|") for line in _read(table_md).splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in cells] for cells in rows[2:]]


def declared_contrasts(contrasts_md: Path) -> list[tuple[str, str]]:
    """The test-accuracy pairs (A, B) of a ``contrasts.md`` written by ``write_contrasts``."""
    return [tuple(cells[0].split(" − ", 1)) for cells in _table_rows(contrasts_md)  # type: ignore[misc]
            if len(cells) > 2 and cells[1] == "test acc" and " − " in cells[0]]


def table_order(table_md: Path) -> list[str]:
    """The model names in the first column of a committed ``table.md`` (the experiment's own order)."""
    return [cells[0] for cells in _table_rows(table_md)]


def _acc(runs: Sequence[dict[str, Any]] | None, seed: int) -> float | None:
    """Test accuracy of ``seed`` among ``runs`` (None if it has none)."""
    return next((r.get("test_acc") for r in runs or () if r.get("seed") == seed), None)


def _pct(value: float | None, signed: bool = False) -> str:
    return "–" if value is None else f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _order(accs: dict[str, float | None]) -> list[str]:
    return sorted((m for m, a in accs.items() if a is not None), key=lambda m: -accs[m])  # type: ignore[operator]


def part_report(name: str, committed: list[dict[str, Any]], check: list[dict[str, Any]],
                pairs: Sequence[tuple[str, str]], order: Sequence[str] = (), seed: int = 0) -> str:
    """The markdown section of one part (see the module docstring); models in ``order`` first."""
    rank = {m: i for i, m in enumerate(order)}
    committed = sorted(committed, key=lambda r: rank.get(r["model"], len(rank)))
    main, twice = by_model(committed), by_model(check)
    rows = {r["model"]: r for r in aggregate(committed)}
    n_ep = "/".join(sorted({str(r["epochs"]) for r in committed}))
    n2_ep = "/".join(sorted({str(r["epochs"]) for r in check}))
    seeds = sorted({r.get("seed") for r in committed}, key=str)
    lines = [f"### {PARTS.get(name, name)}: `{name}`, {n_ep} → {n2_ep} эпох", ""]
    missing = [m for m in main if m not in twice]
    if missing:
        lines += [f"**Проверка не закончена:** нет {', '.join(missing)}.", ""]
    lines += [f"| модель | {n_ep} эпох, {len(seeds)} сида | {n_ep} эпох, сид {seed} | {n2_ep} эпох, сид {seed} "
              f"| прирост сида {seed}, п.п. |", "| --- | --- | --- | --- | --- |"]
    for model, runs in main.items():
        row = rows[model]
        mean = _pct(row.get("test_acc")) + (f" ± {_pct(row['test_acc_std'])}" if "test_acc_std" in row else "")
        a, b = _acc(runs, seed), _acc(twice.get(model), seed)
        gain = None if a is None or b is None else b - a
        lines.append(f"| {model} | {mean} | {_pct(a)} | {_pct(b)} | {_pct(gain, signed=True)} |")
    lines.append("")
    if pairs:
        lines += [f"| сравнение (test acc) | {n_ep} эпох: разница [95 % ДИ], п.п. | {n_ep} эпох, сид {seed} "
                  f"| {n2_ep} эпох, сид {seed} | знак сида {seed} при {n2_ep} эпохах |", "| --- | --- | --- | --- | --- |"]
        for a, b in pairs:
            if a not in main or b not in main:
                continue
            c = compare(main[a], main[b])
            now = "–" if c["low"] is None else (f"{_pct(c['diff'], True)} [{_pct(c['low'], True)}; "
                                                  f"{_pct(c['high'], True)}]")
            d1 = _diff(main.get(a), main.get(b), seed)
            d2 = _diff(twice.get(a), twice.get(b), seed)
            ref = d1 if d1 is not None else c["diff"]  # the same seed at N, so that only the budget differs
            if d2 is None or ref is None:
                sign = "–"
            elif (d2 > 0) == (ref > 0) or d2 == ref == 0:
                sign = "тот же"
            else:
                sign = "**сменился**" + ("" if c["real"] else " (при N — в пределах шума)")
            lines.append(f"| {a} − {b} | {now} | {_pct(d1, True)} | {_pct(d2, True)} | {sign} |")
        lines.append("")
    before = _order({m: rows[m].get("test_acc") for m in main})
    after = _order({m: _acc(twice.get(m), seed) for m in main})
    if not missing:
        same = before == after
        lines += [f"Порядок моделей по test acc (среднее при {n_ep}, сид {seed} при {n2_ep} эпохах): "
                  + ("тот же." if same else f"изменился: {' > '.join(before)} → {' > '.join(after)}."), ""]
    return "\n".join(lines)


def _diff(a: Sequence[dict[str, Any]] | None, b: Sequence[dict[str, Any]] | None, seed: int) -> float | None:
    x, y = _acc(a, seed), _acc(b, seed)
    return None if x is None or y is None else x - y


def write_report(results_dir: Path, check_dir: Path) -> Path | None:
    """Write ``<check_dir>/convergence.md`` for every part that has a check; None if none has."""
    sections = []
    for name in PARTS:
        check, committed = load_seed_results(check_dir / name), load_seed_results(results_dir / name)
        if check and committed:
            sections.append(part_report(name, committed, check,
                                        declared_contrasts(results_dir / name / "contrasts.md"),
                                        table_order(results_dir / name / "table.md")))
    if not sections:
        return None
    head = ("# Проверка сходимости: те же сравнения при вдвое большем числе эпох (сид 0)\n\n"
            "Сгенерировано `python -m utils.convergence` из `results/<эксперимент>` и "
            f"`{check_dir.as_posix()}/<эксперимент>`. Один сид при 2N эпохах показывает, сохранился ли порядок, "
            "но не величину разницы.\n\n")
    path = check_dir / "convergence.md"
    write_text_atomic(path, head + "\n".join(sections).rstrip("\n") + "\n")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description="Compare each part's committed results with its run at twice "
                                            "the epochs (results/check_2x).")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--check-dir", type=Path, default=Path("results/check_2x"))
    args = p.parse_args()
    for folder in (args.results_dir, args.check_dir):
        if not folder.is_dir():
            print(f"error: {folder} is not a folder", file=sys.stderr)
            sys.exit(2)
    try:
        path = write_report(args.results_dir, args.check_dir)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if path is None:
        print(f"error: no part has results in both {args.results_dir} and {args.check_dir}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
