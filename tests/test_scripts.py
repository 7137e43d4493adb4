"""End-to-end runs of the homework scripts on synthetic data, and their CLI errors."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import ROOT


def run_script(script, *args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


def quick_args(tmp_path, data_dir):
    return ["--quick", "--no-download", "--device", "cpu", "--threads", "1", "--data-dir", data_dir,
            "--results-dir", tmp_path / "results", "--plots-dir", tmp_path / "plots"]


def test_task1_quick_end_to_end(tmp_path, data_dir):
    proc = run_script("homework_cnn_vs_fc_comparison.py", *quick_args(tmp_path, data_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for exp, models in (("mnist_comparison", ["FullyConnected", "SimpleCNN", "ResidualCNN"]),
                        ("cifar_comparison", ["DeepFullyConnected", "ResidualCNN", "ResidualCNN+reg"])):
        out = tmp_path / "results" / exp
        summary = pd.read_csv(out / "summary.csv")
        assert list(summary["model"]) == models
        for m in models:
            r = json.loads((out / f"{m}_seed0.json").read_text())
            for key in ("model", "params", "epochs", "train_loss", "train_acc", "test_loss", "test_acc",
                        "train_time_s", "inference_time_s", "history", "config"):
                assert key in r, key
            assert 0 <= r["test_acc"] <= 1 and r["epochs"] == 1 and r["config"]["quick"]
            assert (tmp_path / "plots" / exp / f"{r['config']['dataset']}_{m}_confusion.png").stat().st_size > 0
            assert (tmp_path / "plots" / exp / f"{r['config']['dataset']}_{m}_gradient_flow.png").is_file()
        assert "--quick" in (out / "table.md").read_text()
    cifar = tmp_path / "results" / "cifar_comparison"
    reg = json.loads((cifar / "ResidualCNN+reg_seed0.json").read_text())
    plain = json.loads((cifar / "ResidualCNN_seed0.json").read_text())
    assert reg["params"] == plain["params"]  # the same architecture
    assert reg["config"]["augment"] == "flip_crop" and plain["config"]["augment"] == "none"
    assert (cifar / "per_class.md").read_text().count("|") > 30
    assert (tmp_path / "plots" / "cifar_comparison" / "cifar10_learning_curves.png").is_file()
    assert (tmp_path / "plots" / "cifar_comparison" / "cifar10_overfitting.png").is_file()

    # --resume with the same config skips every model
    proc = run_script("homework_cnn_vs_fc_comparison.py", *quick_args(tmp_path, data_dir),
                      "--part", "1.1", "--resume")
    assert proc.returncode == 0
    assert proc.stdout.count("[resume]") == 3
    # ... and, having trained nothing, leaves the run records alone (a redraw is not a run)
    assert "run record in results/runs/ is kept" in proc.stdout
    assert not (tmp_path / "results" / "runs" / "homework_cnn_vs_fc_comparison_part1.1.json").exists()


def test_missing_data_is_one_line_exit_2(tmp_path):
    proc = run_script("homework_cnn_vs_fc_comparison.py", "--no-download", "--data-dir",
                      tmp_path / "empty", "--part", "1.1", "--results-dir", tmp_path / "r")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "not found" in proc.stderr and "--data-dir" in proc.stderr


@pytest.mark.parametrize("args", [["--epochs", "0"], ["--device", "tpu"], ["--part", "9"],
                                  ["--batch-size", "abc"], ["--epoch-fraction", "0"],
                                  ["--epoch-fraction", "1.5"]])
def test_bad_cli_arguments(args):
    proc = run_script("homework_cnn_vs_fc_comparison.py", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_unavailable_device(tmp_path, data_dir):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    proc = run_script("homework_cnn_vs_fc_comparison.py", "--device", "cuda", "--data-dir", data_dir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "CUDA is not available" in proc.stderr


def test_validation_holds_out_training_images_and_never_reads_the_test_set(tmp_path, data_dir):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(data_dir / "MNIST", data / "MNIST")
    for f in (data / "MNIST" / "raw").glob("t10k-*"):
        f.unlink()  # the test split is gone: a run that reads it fails
    proc = run_script("homework_cnn_vs_fc_comparison.py", "--part", "1.1", "--validation", 40, "--epochs", 1,
                      "--no-download", "--threads", 1, "--data-dir", data, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "results" / "quick" / "mnist_comparison"  # a reduced run: never in results/
    result = json.loads((out / "SimpleCNN_seed0.json").read_text())
    assert (result["config"]["train_size"], result["config"]["test_size"]) == (200, 40)
    assert "validation 40" in result["config"]["preset"]
    assert (out / "table.md").read_text().startswith("<!-- reduced run")
    proc = run_script("homework_cnn_vs_fc_comparison.py", "--part", "1.1", "--validation", 239,
                      "--no-download", "--data-dir", data, cwd=tmp_path)
    assert proc.returncode == 2 and "--validation 239" in proc.stderr and "Traceback" not in proc.stderr
