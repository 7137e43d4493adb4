"""Wall time of each homework script at its defaults, projected from a run on a share of each epoch.

Every script runs as a subprocess with its default settings except ``--epoch-fraction F``: each
epoch trains on a share F of its batches, while everything else (evaluation after every epoch,
inference timing, receptive fields, layer timings, figures) runs at full size. Each trained
model's result says how long its training steps took and how many steps a full epoch has, so

    projected = measured wall time + sum over models of train_time_s * (full steps / run steps - 1)

With ``--quick`` each script runs its smoke test instead (``--quick``: tiny data, one epoch,
every analysis and figure) and the table shows how long it took against the one-minute promise.

Outputs go to a temporary folder (never over results/). With ``--synthetic`` the data sets are
written at their real sizes in their real formats, random but learnable, so the projection can be
made on a machine without the data (on a GPU machine, say); speed does not depend on the pixels.

    python benchmarks/bench_scripts.py --data-dir ../shared/data --fraction 0.05
    python benchmarks/bench_scripts.py --synthetic --device cuda --fraction 0.25
    python benchmarks/bench_scripts.py --data-dir ../shared/data --quick
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from utils.cli import fraction, positive_int  # noqa: E402
from utils.synthetic_data import write_full_size  # noqa: E402

# The scripts and the time each may take at its defaults (1 seed) on a 2-core CPU: the whole
# homework in at most 4 hours (issue 12), shared out by the budgets each task was given.
SCRIPTS = {
    "homework_cnn_vs_fc_comparison.py": 30,
    "homework_cnn_architecture_analysis.py": 80,
    "homework_custom_layers_experiments.py": 130,
}
TOTAL_TARGET_MIN = 240
QUICK_TARGET_MIN = 1  # each script's --quick smoke test


def trained_models(results_dir: Path) -> list[dict]:
    """Every per-model result a run wrote (they are the JSON files with a training time); each
    gets ``part``, the folder it was written to (e.g. ``architecture_analysis/depth``)."""
    models = []
    for path in sorted(results_dir.rglob("*.json")):
        result = json.loads(path.read_text())
        if isinstance(result, dict) and "train_time_s" in result and "full_steps_per_epoch" in result:
            models.append({**result, "part": path.parent.relative_to(results_dir).as_posix()})
    return models


def model_costs(models: list[dict]) -> list[dict]:
    """Per model: seconds of training per full epoch and minutes for all its epochs (training
    steps only, projected like the total)."""
    rows = []
    for m in models:
        full = m["train_time_s"] * m["full_steps_per_epoch"] / m["steps_per_epoch"]
        rows.append({"part": m.get("part", "?"), "model": m["model"], "params": m["params"],
                     "epochs": m["epochs"], "s_per_epoch": full / m["epochs"], "min": full / 60})
    return rows


def print_model_costs(rows: dict[str, dict]) -> None:
    """The per-model costs of every script as a Markdown table, and the sum of each part."""
    costs = [c for r in rows.values() for c in r.get("costs", [])]
    if not costs:
        return
    print("\n| part | model | params | s / epoch | epochs | min of training |\n| --- | --- | --- | --- | --- | --- |")
    for c in costs:
        print(f"| {c['part']} | {c['model']} | {c['params']:,} | {c['s_per_epoch']:.1f} | {c['epochs']} "
              f"| {c['min']:.1f} |")
    parts: dict[str, float] = {}
    for c in costs:
        parts[c["part"]] = parts.get(c["part"], 0.0) + c["min"]
    print("\nmin of training per part (one seed): "
          + ", ".join(f"{part} {m:.1f}" for part, m in parts.items()) + f"; total {sum(parts.values()):.1f}")


def projection(run: dict, models: list[dict]) -> dict:
    """The measured run and its projection to full epochs, in minutes."""
    costs = model_costs(models)
    train = sum(m["train_time_s"] for m in models) / 60
    full_train = sum(c["min"] for c in costs)
    wall = run["wall_time_min"]
    argv = run.get("argv", [])
    data = argv[argv.index("--data-dir") + 1] if "--data-dir" in argv else "?"
    return {"wall": wall, "train": train, "other": wall - train, "full_train": full_train,
            "projected": wall - train + full_train, "peak_rss_mb": run["peak_rss_mb"],
            "models": len(models), "costs": costs, "how": f"{run.get('preset')}, {run.get('device')} "
                                         f"({run.get('cpu')}, torch {run.get('torch')}), data {data}"}


def run_script(script: str, args: argparse.Namespace, data_dir: Path, out: Path) -> dict | None:
    """Run ``script`` on a share of each epoch; return its projection (None if it failed)."""
    preset = ["--quick"] if args.quick else ["--epoch-fraction", str(args.fraction)]
    cmd = [sys.executable, str(ROOT / script), *preset, "--data-dir", str(data_dir), "--no-download", "--device", args.device,
           "--results-dir", str(out / "results"), "--plots-dir", str(out / "plots")]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:  # say why, and go on with the other scripts
        print(f"  FAILED with exit code {proc.returncode}:\n" + proc.stderr[-3000:], flush=True)
        return None
    return read_run(script, out)


def read_run(script: str, out: Path) -> dict:
    """The projection of a finished run of ``script`` whose outputs are under ``out``."""
    run = json.loads((out / "results" / "runs" / f"{Path(script).stem}.json").read_text())
    return projection(run, trained_models(out / "results"))


def print_table(rows: dict[str, dict], quick: bool = False) -> None:
    targets = {s: QUICK_TARGET_MIN for s in SCRIPTS} if quick else SCRIPTS
    print(f"\n{next(iter(rows.values()))['how']}; minutes")
    header = (f"{'script':<40}{'models':>7}{'wall':>8}{'train':>8}{'other':>8}{'train@1.0':>11}"
              f"{'projected':>11}{'target':>8}{'peak RSS MB':>13}")
    print(header)
    for script, r in rows.items():
        print(f"{script:<40}{r['models']:>7}{r['wall']:>8.1f}{r['train']:>8.1f}{r['other']:>8.1f}"
              f"{r['full_train']:>11.1f}{r['projected']:>11.1f}{targets[script]:>8}{r['peak_rss_mb']:>13.0f}")
    total = sum(r["projected"] for r in rows.values())
    target = TOTAL_TARGET_MIN if len(rows) == len(SCRIPTS) and not quick else sum(targets[s] for s in rows)
    print(f"{'total':<40}{'':>7}{sum(r['wall'] for r in rows.values()):>8.1f}{'':>8}{'':>8}{'':>11}"
          f"{total:>11.1f}{target:>8}")
    if quick:
        print("--quick smoke tests: every analysis and figure on a small subset, one epoch; nothing scaled.")
    else:
        print("'other' (evaluation, inference timing, figures, ...) is measured at full size; only the "
              "training steps are scaled.")
        print_model_costs(rows)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--fraction", type=fraction, default=0.05,
                   help="share of each epoch's batches that is trained")
    p.add_argument("--quick", action="store_true",
                   help="time each script's --quick smoke test instead (target: under a minute each)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data-dir", help="folder with MNIST/raw and cifar-10-batches-py")
    source.add_argument("--synthetic", action="store_true",
                        help="write full-size synthetic data sets in the real formats to a temp folder")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for PyTorch (default: PyTorch's choice, one per core)")
    p.add_argument("--scripts", nargs="+", choices=list(SCRIPTS), default=list(SCRIPTS),
                   metavar="SCRIPT", help="which homework scripts to time")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the runs' results and figures in this folder instead of a temp one")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: print the table again from the runs kept in --keep")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.report_only:
        if args.keep is None:
            sys.exit("error: --report-only reads the runs kept with --keep DIR; give that DIR")
        print_table({s: read_run(s, args.keep / Path(s).stem) for s in args.scripts}, args.quick)
        return
    if not (args.data_dir or args.synthetic):
        sys.exit("error: give --data-dir DIR or --synthetic")
    with tempfile.TemporaryDirectory(prefix="bench_scripts_") as tmp:
        out = args.keep or Path(tmp)
        data_dir = Path(args.data_dir) if args.data_dir else write_full_size(Path(tmp) / "synthetic_full_size")
        rows = {}
        for script in args.scripts:
            r = run_script(script, args, data_dir, out / Path(script).stem)
            if r is not None:
                rows[script] = r
                print(f"  {r['wall']:.1f} min measured ({r['train']:.1f} training), "
                      f"projected {r['projected']:.1f} min at full epochs", flush=True)
        if rows:
            print_table(rows, args.quick)
    if len(rows) < len(args.scripts):
        sys.exit(1)


if __name__ == "__main__":
    main()
