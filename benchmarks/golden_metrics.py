"""Golden metrics: prove that a refactor changes no result.

Runs the three homework scripts on small synthetic data (fixed seeds, one thread, ``--quick
--epochs 2``) and collects every model's metrics per epoch. ``--write FILE`` saves them before a
refactor; ``--check FILE`` runs again and lists every metric that differs (exit 1 if any).
Floating-point results depend on the CPU and the PyTorch build, so compare only runs made on one
machine (the file records which).

    python benchmarks/golden_metrics.py --write /tmp/golden.json   # before
    python benchmarks/golden_metrics.py --check /tmp/golden.json   # after
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from utils.synthetic_data import write_cifar10, write_mnist  # noqa: E402

SCRIPTS = ("homework_cnn_vs_fc_comparison.py", "homework_cnn_architecture_analysis.py",
           "homework_custom_layers_experiments.py")
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "running_loss")


def collect(results_dir: Path) -> dict[str, dict]:
    """Per model result (keyed by its path under ``results_dir``): the metrics of every epoch."""
    out = {}
    for path in sorted(results_dir.rglob("*.json")):
        r = json.loads(path.read_text())
        if isinstance(r, dict) and "history" in r:
            key = str(path.relative_to(results_dir))
            out[key] = {"params": r["params"], "epochs": [{m: h.get(m) for m in METRICS} for h in r["history"]]}
    return out


def run_all(tmp: Path) -> dict:
    data = tmp / "data"
    write_mnist(data, 600, 300)
    write_cifar10(data, 120, 300)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for script in SCRIPTS:
        cmd = [sys.executable, str(ROOT / script), "--quick", "--epochs", "2", "--threads", "1",
               "--no-download", "--device", "cpu", "--data-dir", str(data),
               "--results-dir", str(tmp / "results"), "--plots-dir", str(tmp / "plots")]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    from utils.results import cpu_name
    return {"cpu": cpu_name(), "models": collect(tmp / "results")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path, help="save the golden metrics to this file")
    mode.add_argument("--check", type=Path, help="compare with the golden metrics in this file")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="golden_") as tmp:
        now = run_all(Path(tmp))
    if args.write:
        args.write.write_text(json.dumps(now, indent=1))
        print(f"{len(now['models'])} models -> {args.write}")
        return
    golden = json.loads(args.check.read_text())
    # Files of one seed were once named <model>.json; they are <model>_seed<k>.json now.
    now["models"] = {k if k in golden["models"] else re.sub(r"_seed0\.json$", ".json", k): v
                     for k, v in now["models"].items()}
    if golden["cpu"] != now["cpu"]:
        print(f"warning: golden metrics from {golden['cpu']}, this is {now['cpu']}")
    diffs = [f"{k}: missing now" for k in golden["models"] if k not in now["models"]]
    new = [k for k in now["models"] if k not in golden["models"]]
    if new:
        print(f"{len(new)} models not in the golden file (added since): {', '.join(new)}")
    for k in sorted(set(golden["models"]) & set(now["models"])):
        if golden["models"][k] != now["models"][k]:
            diffs.append(f"{k}: {golden['models'][k]} != {now['models'][k]}")
    print("\n".join(diffs) or f"identical: {len(golden['models'])} models, every epoch's metrics")
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
