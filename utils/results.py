"""Results on disk: the per-model JSON files, tables (mean ± std over seeds), run records, and
the README blocks made from them.

One trained model with one seed is one :class:`ModelResult`, written atomically to
``<results>/<experiment>/<model>_seed<k>.json`` as soon as it exists. Everything else (the
``summary.csv`` of every model and seed, the ``table.md`` of means, the README's tables) is made
from those files, never typed by hand: ``python -m utils.results`` fills the marked blocks of
README.md (``--readme`` for another file).
"""
from __future__ import annotations

import argparse
import csv
import fcntl
import io
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypedDict

import numpy as np
import torch

from utils.comparison_utils import compare, verdict


class ModelResult(TypedDict, total=False):
    """What one model trained with one seed leaves behind (the keys of its JSON file).

    ``train_model`` fills the metrics and ``history``; the runner adds the identity, the
    confusion matrix and ``config`` (the full TrainConfig, the data and the architecture); an
    experiment's analysis hook may add its own keys (receptive fields, gradient ratios, ...).
    """

    model: str                    # the model's name in its experiment
    seed: int                     # initialisation and batch order
    params: int
    notes: str
    epochs: int                   # epochs actually trained (fewer if it diverged)
    train_loss: float | None      # clean metrics of the final model (None: not finite)
    train_acc: float | None
    test_loss: float | None
    test_acc: float | None
    gap: float                    # train_acc - test_acc (absent when a model diverged)
    train_time_s: float           # optimisation steps only
    inference_time_s: float
    train_images_per_s: float
    diverged: bool
    history: list[dict[str, Any]]  # one entry per epoch (see training_utils.train_model)
    grad_layers: list[str]
    grad_norms_init: list[float]
    confusion_matrix: list[list[int]]
    classes: list[str]
    config: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Files

class OutputError(Exception):
    """An output folder cannot be used; the message is one line meant for the user."""


def _file_mode() -> int:
    """The permissions a plain ``open()`` would give a new file under the user's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_atomic(path: Path, mode: str, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file in the same folder, then rename it over ``path``:
    a reader never sees a half-written file, and an interrupted run leaves the old one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())  # mkstemp makes 0600 files; results are for everyone to read
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None: JSON has no NaN or Infinity, and a
    diverged model's loss is one of them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: Any) -> None:
    _write_atomic(path, "w", lambda f: json.dump(strict_json(obj), f, indent=1, allow_nan=False))


def write_text_atomic(path: Path, text: str) -> None:
    _write_atomic(path, "w", lambda f: f.write(text))


def prepare_output_dir(path: Path) -> Path:
    """Create ``path`` and prove it writable now, so that a bad ``--results-dir`` fails before any
    training rather than when the first result is saved."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OutputError(f"cannot write to {path}: {reason}; choose another folder") from None
    return path


@contextmanager
def experiment_lock(experiment_dir: Path) -> Iterator[Path]:
    """Hold an exclusive lock on an experiment's folder while a run writes into it.

    A second run that wants the same folder fails at once with :class:`OutputError` instead of
    silently overwriting the first one's results. The lock is ``flock`` on ``.lock`` in the
    folder: the operating system releases it when the process ends, however it ends, so a killed
    run never blocks the next ``--resume``. Temporary files a killed run left behind are removed.
    """
    experiment_dir = prepare_output_dir(experiment_dir)
    f = open(experiment_dir / ".lock", "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise OutputError(f"another run (pid {holder}) is writing into {experiment_dir}; wait for "
                              "it to finish or pass another --results-dir") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        for stale in experiment_dir.rglob(".*.tmp"):  # ours are atomic writes a killed run left
            stale.unlink(missing_ok=True)
        yield experiment_dir
    finally:
        f.close()  # releases the lock


def write_npz_atomic(path: Path, **arrays: Any) -> None:
    """Arrays saved with ``numpy.savez_compressed``, atomically (see :func:`_write_atomic`)."""
    _write_atomic(path, "wb", lambda f: np.savez_compressed(
        f, **{k: np.asarray(v) for k, v in arrays.items()}))


def result_path(experiment_dir: Path, model_name: str, seed: int) -> Path:
    return Path(experiment_dir) / f"{model_name}_seed{seed}.json"


def load_result(path: Path, warn: bool = False) -> ModelResult | None:
    """The result saved at ``path``, or None if there is none or the file is not a result
    (with ``warn``, a file that exists but is not a result is reported in one line)."""
    path = Path(path)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        result, why = None, f"unreadable ({type(e).__name__})"
    else:
        why = "not a result"
    if isinstance(result, dict) and isinstance(result.get("model"), str) \
            and isinstance(result.get("config", {}), dict):
        return result  # type: ignore[return-value]
    if warn:
        print(f"warning: {path} is {why}; ignoring it", file=sys.stderr)
    return None


def load_results(folder: Path) -> list[dict[str, Any]]:
    """Every result (or run record) in ``folder``, sorted by file name; files that are not
    results are skipped with a warning."""
    paths = sorted(Path(folder).glob("*.json"))
    return [r for r in (load_result(p, warn=True) for p in paths) if r is not None]


def load_seed_results(folder: Path) -> list[ModelResult]:
    """The model-seed results (``<model>_seed<k>.json``) in ``folder``; none if it does not exist."""
    found = (load_result(p, warn=True) for p in sorted(Path(folder).glob("*_seed*.json")))
    return [r for r in found if r is not None and "seed" in r]


SUMMARY_COLUMNS = ("model", "seed", "params", "epochs", "train_loss", "train_acc", "test_loss",
                   "test_acc", "gap", "train_time_s", "inference_time_s", "train_images_per_s", "diverged")


def write_summary(experiment_dir: Path, results: Sequence[ModelResult],
                  extra_columns: Sequence[str] = ()) -> Path:
    """``summary.csv``: one row per model and seed with the headline metrics."""
    columns = list(SUMMARY_COLUMNS) + [c for c in extra_columns if c not in SUMMARY_COLUMNS]
    path = Path(experiment_dir) / "summary.csv"
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in results:
        writer.writerow({c: r.get(c, "") for c in columns})
    write_text_atomic(path, buffer.getvalue())
    return path


# ---------------------------------------------------------------------------------------------
# Seeds: which results may be pooled, and their mean ± std

def config_differences(old: dict[str, Any], new: dict[str, Any], ignore: Sequence[str] = ()) -> list[str]:
    """The keys on which two saved configs differ, as ``key: old -> new`` (long values shortened)."""
    def short(v: Any) -> str:
        text = repr(v)
        return text if len(text) <= 24 else text[:21] + "..."
    keys = sorted((set(old) | set(new)) - set(ignore))
    return [f"{k}: {short(old.get(k))} -> {short(new.get(k))}" for k in keys if old.get(k) != new.get(k)]


def check_replicates(runs: Sequence[dict[str, Any]]) -> None:
    """Refuse to pool results into one mean ± std unless their configs differ only in the seed."""
    def without_seed(config: dict[str, Any]) -> dict[str, Any]:
        overrides = {k: v for k, v in (config.get("overrides") or {}).items() if k != "seed"}
        return {**{k: v for k, v in config.items() if k not in ("seed", "model")}, "overrides": overrides}
    configs = [without_seed(r.get("config") or {}) for r in runs]
    for r, c in zip(runs[1:], configs[1:]):
        if c != configs[0]:
            changes = "; ".join(config_differences(configs[0], c)[:3])
            raise OutputError(f"{runs[0]['model']} and {r['model']} differ in more than the seed "
                              f"({changes}); they cannot be pooled into one row")


def by_model(results: Sequence[ModelResult]) -> dict[str, list[ModelResult]]:
    """The results grouped by model, in the order the models first appear."""
    groups: dict[str, list[ModelResult]] = {}
    for r in results:
        groups.setdefault(r["model"], []).append(r)
    return groups


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def aggregate(results: Sequence[ModelResult]) -> list[dict[str, Any]]:
    """One row per model: every numeric top-level value as the mean over its seeds, with
    ``<key>_std`` (sample std, ddof 1) when there are several that differ, and ``n`` the number of seeds.
    A value missing (None) in some seed, such as the loss of a diverged one, is averaged over the
    others. Results whose configs differ in more than the seed are refused."""
    rows = []
    for name, runs in by_model(results).items():
        check_replicates(runs)
        row: dict[str, Any] = {"n": len(runs), "seeds": [r.get("seed") for r in runs]}
        for key, value in runs[0].items():
            if key in row:
                continue
            values = [r.get(key) for r in runs]
            numbers = [v for v in values if _is_number(v)]
            if numbers and all(v is None or _is_number(v) for v in values):
                row[key] = float(np.mean(numbers)) if len(runs) > 1 else numbers[0]
                # A value the same in every seed (FLOPs) is a property of the model, not a spread.
                if len(numbers) > 1 and not np.allclose(numbers, numbers[0], rtol=1e-9, atol=0):
                    row[f"{key}_std"] = float(np.std(numbers, ddof=1))
            else:
                row[key] = value
        row["diverged"] = sum(bool(r.get("diverged")) for r in runs)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Whether two models differ (see utils/comparison_utils.py)

METRIC_NAMES = {"test_acc": "test acc", "gap": "train − test", "train_acc": "train acc",
                "test_acc_tta": "test acc с TTA"}


def write_contrasts(experiment_dir: Path, results: Sequence[ModelResult],
                    contrasts: Sequence[tuple[str, ...]]) -> Path:
    """``contrasts.md``: for each declared pair (A, B[, key]), A − B in ``key`` (default test
    accuracy; any fraction-valued result key) with its 95 % interval."""
    groups = by_model(results)
    rows = []
    for a, b, *rest in contrasts:
        key = rest[0] if rest else "test_acc"
        if a not in groups or b not in groups:
            continue
        c = compare(groups[a], groups[b], key)
        rows.append({"contrast": f"{a} − {b}", "metric": METRIC_NAMES.get(key, key), "diff": c["diff"],
                     "ci": "–" if c["low"] is None else f"[{100 * c['low']:+.2f}; {100 * c['high']:+.2f}]",
                     "test": c["test"], "n": c["n"],
                     "verdict": verdict(c)})
    columns = [("contrast", "сравнение", "str"), ("metric", "метрика", "str"), ("diff", "разница, п.п.", "pct"),
               ("ci", "95 % ДИ, п.п.", "str"), ("test", "t-интервал", "str"), ("n", "сидов", "int"),
               ("verdict", "вывод", "str")]
    kinds = {(r["test"], r["n"]) for r in rows}
    caption = ("_95 % t-интервал разницы средних ({}); различие реально, только если интервал не содержит "
               "нуля._")
    if kinds == {("n < 2", 1)}:  # a one-seed check run: its differences show the order, not the noise
        caption = "_Один сид: разница этого сида, без интервала; о различии судят прогоны с ≥ 2 сидами._"
        columns = [c for c in columns if c[0] not in ("ci", "test", "n", "verdict")]
    elif len(kinds) == 1 and next(iter(kinds))[0] == "paired":  # the usual case: say it once, in the caption
        caption = caption.format(f"парный по {next(iter(kinds))[1]} общим сидам")
        columns = [c for c in columns if c[0] not in ("test", "n")]
    else:
        caption = caption.format("парный по общим сидам, иначе Уэлча")
    return write_markdown_table(Path(experiment_dir) / "contrasts.md", rows, columns, is_reduced(results),
                                caption)


# ---------------------------------------------------------------------------------------------
# Markdown tables (the README's tables are made by these functions from the results files)

def _fmt(value: Any, kind: str) -> str:
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if kind == "pct":
        return f"{100 * value:.2f}"
    if kind == "int":
        return f"{int(round(value)):,}".replace(",", " ")
    if kind == "s":  # seconds: 2 significant digits below 1 s (GPU inference takes ~0.02 s)
        return f"{value:.2g}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"
    if kind == "f4":
        return f"{value:.4f}"
    if kind == "f2":
        return f"{value:.2f}"
    if kind == "f1":
        return f"{value:.1f}"
    if kind == "g3":
        return f"{value:.3g}"
    return str(value)


def _cell(row: dict[str, Any], key: str, kind: str) -> str:
    """A value, as ``mean ± std`` where the row pools several seeds."""
    text = _fmt(row.get(key), kind)
    std = row.get(f"{key}_std")
    if std is not None and kind in ("pct", "f4", "f2", "g3", "s") and text != "–":
        text += " ± " + _fmt(std, kind)
    return text


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """``columns`` are (key, header, format) with format one of pct, int, s, f4, f2, g3, str."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(_cell(r, k, f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def write_markdown_table(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]],
                         reduced: bool, caption: str = "") -> Path:
    """A markdown table file (with ``caption`` below it), marked when it comes from a reduced run
    so that :func:`update_readme` never copies it into a README."""
    text = reduced_mark(reduced) + markdown_table(rows, columns) + "\n"
    write_text_atomic(Path(path), text + ("\n" + caption + "\n" if caption else ""))
    return Path(path)


STANDARD_COLUMNS = (
    ("model", "модель", "str"), ("params", "параметры", "int"), ("epochs", "эпохи", "int"),
    ("train_acc", "train acc, %", "pct"), ("test_acc", "test acc, %", "pct"),
    ("gap", "train − test, п.п.", "pct"),
    ("train_loss", "train loss", "f4"), ("test_loss", "test loss", "f4"),
    ("train_time_s", "обучение, с", "s"), ("inference_time_s", "инференс test, с", "s"),
)


def run_caption(results: Sequence[dict[str, Any]]) -> str:
    """One line saying how the numbers were produced (data size, epochs, device), from the configs."""
    if not results:
        return "_нет результатов_"
    cfgs = [r["config"] for r in results]
    epochs = sorted({r["epochs"] for r in results})
    seeds = sorted({r.get("seed", c.get("seed", 0)) for r, c in zip(results, cfgs)})
    parts = [f"{cfgs[0].get('dataset', '?')}: train {cfgs[0].get('train_size', '?')}"
             f" / test {cfgs[0].get('test_size', '?')} изображений",
             "эпох: " + "/".join(map(str, epochs)),
             f"сиды: {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"сид {seeds[0]}",
             f"batch {cfgs[0]['batch_size']}", f"устройство {cfgs[0]['device']}"]
    if any(c.get("quick") for c in cfgs):
        parts.append("**--quick: подвыборка и 1 эпоха, цифры не показательны**")
    if any(c.get("preset") for c in cfgs):
        parts.append(f"**пресет {cfgs[0]['preset']}: сокращённый прогон**")
    return "_" + "; ".join(parts) + "_"


# The first line of a table made from a reduced run (--quick, --budget, --epoch-fraction < 1):
# update_readme never copies such a table into a README.
REDUCED_MARK = "<!-- reduced run: not for the README -->"


def is_reduced(results: Sequence[dict[str, Any]]) -> bool:
    """Whether any of ``results`` comes from a reduced run (a smoke test or a preview)."""
    return any((r.get("config") or {}).get("reduced") or (r.get("config") or {}).get("quick")
               for r in results)


def reduced_mark(reduced: bool) -> str:
    return REDUCED_MARK + "\n" if reduced else ""


def write_table(experiment_dir: Path, results: Sequence[dict[str, Any]],
                columns: Sequence[tuple[str, str, str]] = STANDARD_COLUMNS,
                name: str = "table.md") -> Path:
    """A markdown table of ``results`` (one row per model: mean ± std over its seeds) with its
    caption, for the README (see :func:`update_readme`)."""
    rows = aggregate(results)
    if any(r["n"] > 1 for r in rows) and not any(k == "n" for k, _, _ in columns):
        columns = [columns[0], ("n", "сидов", "int"), *columns[1:]]
    return write_markdown_table(Path(experiment_dir) / name, rows, columns, is_reduced(results),
                                run_caption(results))


# ---------------------------------------------------------------------------------------------
# Run records: wall time and peak memory of whole script runs, in <results>/runs/

def cpu_name() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {torch.get_num_threads()} threads"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


RUN_COLUMNS = (("script", "скрипт", "str"), ("part", "часть", "str"), ("preset", "режим", "str"),
               ("wall_time_min", "время, мин", "f2"), ("peak_rss_mb", "пик RSS, МБ", "int"),
               ("device", "устройство", "str"), ("cpu", "процессор", "str"), ("commit", "коммит", "str"),
               ("flags", "флаги", "str"))
PATH_FLAGS = ("--data-dir", "--results-dir", "--plots-dir")  # left out of a run's "flags"


def run_flags(argv: Sequence[str]) -> str:
    """The flags of a run that change what it does (seeds, --resume, epochs...), without paths."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in PATH_FLAGS:
            skip = True
        elif not a.startswith(PATH_FLAGS):
            kept.append(a)
    return " ".join(kept)


def git_commit() -> str | None:
    """The checked-out commit of the repository (with ``+dirty`` if files differ), or None."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# The homework's sub-tasks in the README's order: the folder under ``results/`` each writes and
# the script that runs it (its run record is ``results/runs/<script>_part<sub-task>.json``).
HOMEWORK_PARTS = (("1.1", "mnist_comparison", "homework_cnn_vs_fc_comparison"),
                  ("1.2", "cifar_comparison", "homework_cnn_vs_fc_comparison"),
                  ("2.1", "architecture_analysis/kernels", "homework_cnn_architecture_analysis"),
                  ("2.2", "architecture_analysis/depth", "homework_cnn_architecture_analysis"),
                  ("3.1", "custom_layers", "homework_custom_layers_experiments"),
                  ("3.2", "residual_blocks", "homework_custom_layers_experiments"))


EARLIER_KEYS = ("preset", "flags", "wall_time_min", "peak_rss_mb", "device", "cpu", "commit", "finished")


def record_run(results_dir: Path, script: str, part: str, preset: str, seconds: float,
               device: str, commit: str | None = None) -> None:
    """Write the wall time and peak memory of a whole script run to ``<results>/runs/``, with the
    git commit it ran (``commit``, taken when it started; by default the one checked out now).
    The record of the same script and part's earlier launches moves to its ``earlier`` list, so
    that a study resumed over several sittings keeps the cost of each."""
    out = Path(results_dir) / "runs"
    name = script if part == "all" else f"{script}_part{part}"
    previous = load_result(out / f"{name}.json") or {}
    earlier = list(previous.pop("earlier", []))
    if previous:
        earlier.append({k: previous[k] for k in EARLIER_KEYS if k in previous})
    write_json_atomic(out / f"{name}.json", {
        "model": script, "script": script, "part": part, "preset": preset,
        "argv": sys.argv[1:], "flags": run_flags(sys.argv[1:]), "wall_time_min": seconds / 60, "peak_rss_mb": peak_rss_mb(),
        "device": device, "cpu": cpu_name(), "torch": torch.__version__,
        "commit": commit or git_commit(), "finished": time.strftime("%Y-%m-%d %H:%M"),
        **({"earlier": earlier} if earlier else {})})
    runs = load_results(out)
    reduced = any(r.get("preset") != "default" for r in runs)
    write_markdown_table(out / "table.md", runs, RUN_COLUMNS, reduced)


# ---------------------------------------------------------------------------------------------
# README blocks
#
# A block in a README looks like
#     <!-- BEGIN results/mnist_comparison/table.md -->
#     ...generated, do not edit...
#     <!-- END results/mnist_comparison/table.md -->
# and is replaced by the current content of that file (a path relative to the README's folder);
# a file that is not markdown, such as a benchmark's output, is shown verbatim in a text block.
# Only full-run results reach a README: a table made by a reduced run starts with REDUCED_MARK,
# and its block is left as it was, with a warning.

BLOCK = re.compile(r"(<!-- BEGIN (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- END (?P=path) -->)", re.S)


class ReportError(Exception):
    """A file the README is made from cannot be read; the message is one line for the user."""


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ReportError(f"{path} is not UTF-8 text; regenerate it with the script that writes it") from None
    except OSError as e:
        raise ReportError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None


def update_readme(readme: Path) -> tuple[list[str], list[str]]:
    """Rewrite every marked block of ``readme``; return the paths of the missing table files and
    of the tables left out because they come from a reduced run."""
    readme = Path(readme)
    root = readme.parent
    missing: list[str] = []
    reduced: list[str] = []

    def fill(m: re.Match) -> str:
        table = root / m.group("path")
        if not table.is_file():
            missing.append(m.group("path"))
            return m.group(0)
        body = _read(table).rstrip("\n")
        if body.startswith(REDUCED_MARK):
            reduced.append(m.group("path"))
            return m.group(0)
        if table.suffix != ".md":  # plain text (benchmark output): show it verbatim
            body = "```text\n" + body + "\n```"
        return m.group(1) + body + "\n" + m.group(4)

    text = _read(readme)
    new = BLOCK.sub(fill, text)
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return missing, reduced


def main() -> None:
    p = argparse.ArgumentParser(description="Regenerate the result tables inside a README from the "
                                            "table files the scripts write.")
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    args = p.parse_args()
    if not args.readme.is_file():
        print(f"error: {args.readme} not found", file=sys.stderr)
        sys.exit(2)
    try:
        missing, reduced = update_readme(args.readme)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for path in missing:
        print(f"warning: {path} does not exist yet (run the script that makes it)", file=sys.stderr)
    for path in reduced:
        print(f"warning: {path} comes from a reduced run (--quick, --budget or --epoch-fraction); "
              "the README keeps its previous table", file=sys.stderr)
    print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
