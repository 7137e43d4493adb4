"""What protects results and users: reduced runs kept apart, checks before training, one-line
errors, no silent wrong results (issue 9). Synthetic data in the real on-disk formats."""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import ROOT
from tests.test_scripts import run_script
from utils import cli
from utils.data import DataError, ImageSet, file_fingerprint, load_dataset
from utils.results import (REDUCED_MARK, OutputError, ReportError, check_replicates, experiment_lock, load_results,
                           prepare_output_dir, record_run, update_readme, write_json_atomic)
from utils.runner import Context, Experiment, ModelSpec, train_models
from utils.synthetic_data import class_images, write_cifar10, write_idx, write_mnist
from utils.training_utils import TrainConfig

TASK1 = "homework_cnn_vs_fc_comparison.py"


def one_line_exit_2(proc):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    return proc.stderr


def tiny_set(n=64, shape=(1, 8, 8), seed=0):
    images, labels = class_images(n, shape, seed)
    return ImageSet(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)),
                    tuple(map(str, range(10))), (0.5,) * shape[0], (0.25,) * shape[0], "fp")


def tiny_cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


class NaNNet(nn.Module):
    """A model whose loss is NaN from the first step: stands for a diverging one."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        return self.linear(x.flatten(1)) * float("nan")


def tiny_cfg(**kw):
    return TrainConfig(**{"epochs": 1, "batch_size": 16, "lr": 0.05, "train_eval_size": 32,
                          "channels_last": False, **kw})


def run_comparison(out, specs, train, test, cfg, info, resume=False, overwrite=False, seeds=(0,)):
    """The runner's training of ``specs`` (every seed) into ``out``, without an experiment script."""
    args = argparse.Namespace(resume=resume, overwrite=overwrite, seed=seeds[0])
    exp = Experiment("t", "t", "tiny", lambda data: list(specs), epochs=cfg.epochs, lr=cfg.lr)
    ctx = Context(exp, Path(out), Path(out) / "plots", train, test, torch.device("cpu"), args)
    return train_models(ctx, specs, list(seeds), cfg, info)


def strict_load(path):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


# 1. Reduced runs never touch the full results; the README takes only full-run tables -----------

def test_quick_run_writes_to_its_own_ignored_folders(tmp_path, data_dir):
    proc = run_script(TASK1, "--quick", "--part", "1.1", "--no-download", "--threads", "1",
                      "--data-dir", data_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "results/quick" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["quick"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["quick"]
    table = (tmp_path / "results" / "quick" / "mnist_comparison" / "table.md").read_text()
    assert table.startswith(REDUCED_MARK)
    runs = (tmp_path / "results" / "quick" / "runs" / "table.md").read_text()
    assert runs.startswith(REDUCED_MARK)
    # --quick --epochs 2: both flags are honoured
    proc = run_script(TASK1, "--quick", "--epochs", "2", "--part", "1.1", "--no-download", "--threads", "1",
                      "--data-dir", data_dir, "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "results/quick/mnist_comparison/SimpleCNN_seed0.json").read_text())
    assert result["epochs"] == 2 and result["config"]["quick"]


def test_default_reduced_outputs_are_git_ignored():
    for folder in cli.REDUCED_OUTPUTS:
        path = f"{folder}/mnist_comparison/SimpleCNN_seed0.json"
        proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        if proc.returncode == 128:
            pytest.skip("not a git checkout")
        assert proc.returncode == 0, f"{path} is not ignored by .gitignore"
    for full in cli.FULL_OUTPUTS:
        assert subprocess.run(["git", "check-ignore", "-q", f"{full}/x/table.md"], cwd=ROOT).returncode == 1


@pytest.mark.parametrize("argv, reduced", [([], False), (["--part", "1.1"], False), (["--quick"], True),
                                           (["--budget"], True), (["--epoch-fraction", "0.5"], True)])
def test_output_folders_by_preset(tmp_path, monkeypatch, argv, reduced):
    monkeypatch.chdir(tmp_path)
    args = cli.base_parser("t", ("1.1", "1.2")).parse_args(argv)
    cli.resolve_outputs(args)
    assert (args.results_dir, args.plots_dir) == (cli.REDUCED_OUTPUTS if reduced else cli.FULL_OUTPUTS)
    args = cli.base_parser("t", ("1.1",)).parse_args(argv + ["--results-dir", "mine", "--plots-dir", "p"])
    cli.resolve_outputs(args)
    assert str(args.results_dir) == "mine"  # a folder the user names is used as named


def test_readme_keeps_its_table_when_the_new_one_is_reduced(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "table.md").write_text(REDUCED_MARK + "\n| a |\n| --- |\n| 20.31 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- BEGIN r/table.md -->\n| 99.32 |\n<!-- END r/table.md -->\n")
    missing, reduced = update_readme(readme)
    assert reduced == ["r/table.md"] and not missing
    assert "99.32" in readme.read_text() and "20.31" not in readme.read_text()


def test_readme_generator_non_utf8_table_is_one_line_exit_2(tmp_path):
    (tmp_path / "t.md").write_bytes(b"| \xff\xfe |\n")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- BEGIN t.md -->\n<!-- END t.md -->\n")
    with pytest.raises(ReportError, match="not UTF-8"):
        update_readme(readme)
    proc = subprocess.run([sys.executable, "-m", "utils.results", "--readme", str(readme)], cwd=ROOT,
                          capture_output=True, text=True)
    assert "not UTF-8" in one_line_exit_2(proc)


def test_result_with_another_config_is_never_replaced_silently(tmp_path):
    data = tiny_set()
    specs = [ModelSpec("M", tiny_cnn)]
    info = {"dataset": "tiny", "data_fingerprint": "a/b"}
    run_comparison(tmp_path, specs, data, data, tiny_cfg(), info)
    before = (tmp_path / "M_seed0.json").read_text()
    with pytest.raises(OutputError, match=r"another config \(lr: 0.05 -> 0.1\)"):
        run_comparison(tmp_path, specs, data, data, tiny_cfg(lr=0.1), info)
    with pytest.raises(OutputError, match="data_fingerprint"):  # other data: not reused, not replaced
        run_comparison(tmp_path, specs, data, data, tiny_cfg(), {**info, "data_fingerprint": "c/d"},
                       resume=True)
    assert (tmp_path / "M_seed0.json").read_text() == before
    result, = run_comparison(tmp_path, specs, data, data, tiny_cfg(lr=0.1), info, overwrite=True)
    assert result["config"]["lr"] == 0.1 and strict_load(tmp_path / "M_seed0.json")["config"]["lr"] == 0.1


def test_replicates_pool_only_when_they_differ_in_the_seed():
    a = {"model": "A_seed0", "config": {"lr": 0.1, "seed": 0, "model": "A_seed0", "overrides": {"seed": 0}}}
    b = {"model": "A_seed1", "config": {"lr": 0.1, "seed": 1, "model": "A_seed1", "overrides": {"seed": 1}}}
    check_replicates([a, b])
    c = {"model": "A_seed2", "config": {**b["config"], "lr": 0.2, "seed": 2}}
    with pytest.raises(OutputError, match="lr"):
        check_replicates([a, c])


# 2. Checked before training ------------------------------------------------------------------

def test_unwritable_output_folder_fails_before_training(tmp_path, data_dir):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        prepare_output_dir(tmp_path / "file" / "results")
    start = time.perf_counter()
    proc = run_script(TASK1, "--quick", "--no-download", "--data-dir", data_dir,
                      "--results-dir", tmp_path / "file" / "results", "--plots-dir", tmp_path / "p")
    assert "cannot write" in one_line_exit_2(proc)
    assert not (tmp_path / "p" / "mnist_comparison").exists()  # nothing ran
    assert time.perf_counter() - start < 60


def test_labels_out_of_range_and_wrong_shapes_are_refused(tmp_path):
    raw = tmp_path / "m" / "MNIST" / "raw"
    write_mnist(tmp_path / "m")
    images, labels = class_images(20, (28, 28), 0)
    write_idx(raw / "train-labels-idx1-ubyte", (labels + 5).astype(np.uint8), compress=True)
    write_idx(raw / "train-images-idx3-ubyte", images[:20], compress=True)
    with pytest.raises(DataError, match=r"labels from \d+ to 1\d, expected 0..9"):
        load_dataset("mnist", "train", tmp_path / "m", download=False)
    images32, labels32 = class_images(20, (32, 32), 0)
    write_idx(raw / "train-images-idx3-ubyte", images32, compress=True)
    write_idx(raw / "train-labels-idx1-ubyte", labels32, compress=True)
    with pytest.raises(DataError, match=r"shape \(1, 32, 32\), expected \(1, 28, 28\)"):
        load_dataset("mnist", "train", tmp_path / "m", download=False)

    import pickle
    write_cifar10(tmp_path / "c")
    path = tmp_path / "c" / "cifar-10-batches-py" / "data_batch_3"
    batch = pickle.loads(path.read_bytes())
    batch["labels"][0] = 10
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match="labels from 0 to 10"):
        load_dataset("cifar10", "train", tmp_path / "c", download=False)


# 3. One line, exit 2 -------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--seed", "-1"], ["--seed", str(2**32)], ["--batch-size", "1"],
                                  ["--lr", "inf"], ["--lr", "nan"], ["--lr", "0"], ["--lr", "-0.1"],
                                  ["--quick", "--budget"]])
def test_nonsense_values_are_refused_up_front(args):
    with pytest.raises(SystemExit) as e:
        cli.base_parser("t", ("1.1",)).parse_args(args)
    assert e.value.code == 2


def test_unreadable_data_says_so(tmp_path, monkeypatch):
    write_mnist(tmp_path)
    import utils.data

    def denied(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(utils.data.gzip, "open", denied)
    with pytest.raises(DataError, match=r"cannot read .*train-images-idx3-ubyte.gz: permission denied"):
        load_dataset("mnist", "train", tmp_path, download=False)
    monkeypatch.undo()

    def unlistable(self):
        raise PermissionError(13, "Permission denied", str(self.parent))
    monkeypatch.setattr(utils.data.Path, "is_file", unlistable)
    with pytest.raises(DataError, match="cannot read .*raw: permission denied"):
        load_dataset("mnist", "train", tmp_path, download=False)


def test_resume_retrains_a_file_that_is_not_a_result(tmp_path, capsys):
    data = tiny_set()
    (tmp_path / "M_seed0.json").write_text("[1, 2]")
    result, = run_comparison(tmp_path, [ModelSpec("M", tiny_cnn)], data, data, tiny_cfg(), {},
                             resume=True)
    assert "M_seed0.json is not a result" in capsys.readouterr().err
    assert strict_load(tmp_path / "M_seed0.json")["model"] == "M" and result["epochs"] == 1


def test_malformed_run_records_are_skipped(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a.json").write_text("5")
    (tmp_path / "runs" / "b.json").write_text("{not json")
    record_run(tmp_path, "script", "all", "default", 60.0, "cpu")
    record, = load_results(tmp_path / "runs")
    assert record["model"] == "script" and "cpu" in record and "commit" in record
    assert "a.json is not a result" in capsys.readouterr().err
    assert "| script |" in (tmp_path / "runs" / "table.md").read_text()
    record_run(tmp_path, "script", "all", "quick", 30.0, "cpu")  # a second launch keeps the first
    record_run(tmp_path, "script", "all", "default", 90.0, "cpu")
    record, = load_results(tmp_path / "runs")
    assert record["wall_time_min"] == 1.5 and [r["wall_time_min"] for r in record["earlier"]] == [1.0, 0.5]
    assert [r["preset"] for r in record["earlier"]] == ["default", "quick"] and "earlier" not in record["earlier"][1]


# 4. No silent wrong results ------------------------------------------------------------------

def test_data_fingerprint_follows_the_files(tmp_path):
    write_mnist(tmp_path)
    first = load_dataset("mnist", "train", tmp_path, download=False).fingerprint
    assert first and load_dataset("mnist", "train", tmp_path, download=False).fingerprint == first
    write_mnist(tmp_path, n_train=241)
    assert load_dataset("mnist", "train", tmp_path, download=False).fingerprint != first
    files = sorted((tmp_path / "MNIST" / "raw").iterdir())
    assert file_fingerprint(files) != file_fingerprint(files[:1])


def test_diverged_model_is_recorded_and_the_run_goes_on(tmp_path):
    data = tiny_set()
    specs = [ModelSpec("NaN", NaNNet), ModelSpec("OK", tiny_cnn)]
    nan, ok = run_comparison(tmp_path, specs, data, data, tiny_cfg(), {})
    assert nan["diverged"] and nan["test_loss"] is None
    assert not ok["diverged"] and ok["test_loss"] > 0
    saved = strict_load(tmp_path / "NaN_seed0.json")  # strict JSON: no NaN tokens
    assert saved["diverged"] and saved["history"][0]["running_loss"] is None


def test_diverging_script_run_finishes_with_strict_json(tmp_path, data_dir):
    proc = run_script(TASK1, "--quick", "--epochs", "3", "--part", "1.1", "--lr", "1e30", "--no-download", "--threads", "1",
                      "--data-dir", data_dir, "--results-dir", tmp_path / "r", "--plots-dir", tmp_path / "p")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [strict_load(p) for p in (tmp_path / "r" / "mnist_comparison").glob("*_seed0.json")]
    assert len(results) == 3 and any(r["diverged"] for r in results)
    assert (tmp_path / "p" / "mnist_comparison" / "mnist_learning_curves.png").is_file()


def test_second_run_into_one_experiment_is_refused(tmp_path, data_dir):
    with experiment_lock(tmp_path / "r" / "mnist_comparison"):
        proc = run_script(TASK1, "--quick", "--part", "1.1", "--no-download", "--data-dir", data_dir,
                          "--results-dir", tmp_path / "r", "--plots-dir", tmp_path / "p")
        assert "another run" in one_line_exit_2(proc) and str(os.getpid()) in proc.stderr
        with experiment_lock(tmp_path / "r" / "cifar_comparison"):  # another experiment: free
            pass


def test_a_killed_run_releases_its_lock_and_leaves_no_temporary_files(tmp_path):
    folder = tmp_path / "exp"
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); "
            "from utils.results import experiment_lock as L\n"
            "with L(sys.argv[2]):\n    print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(folder)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(OutputError):
        with experiment_lock(folder):
            pass
    (folder / ".M.json.abc.tmp").write_text("half")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with experiment_lock(folder):
        assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))


def test_results_files_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        write_json_atomic(tmp_path / "b.json", {"x": 1})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_failed_download_leaves_no_folders(tmp_path, monkeypatch):
    import torchvision.datasets

    class FailingMNIST:
        def __init__(self, root, train, download):
            (tmp_path / "new" / "data" / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
            raise ConnectionError("no network")
    monkeypatch.setattr(torchvision.datasets, "MNIST", FailingMNIST)
    with pytest.raises(DataError, match="download failed"):
        load_dataset("mnist", "train", tmp_path / "new" / "data", download=True)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    monkeypatch.setattr(torchvision.datasets, "MNIST", lambda root, train, download: (_ for _ in ()).throw(
        ConnectionError("no network")))
    with pytest.raises(DataError):
        load_dataset("mnist", "train", tmp_path / "kept", download=True)
    assert (tmp_path / "kept").is_dir()  # a folder that was there before stays
