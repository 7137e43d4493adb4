"""The experiment runner (seeds, resume per seed, mean ± std tables) and the data-set registry."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from tests.test_scripts import run_script
from utils import cli
from utils.data import DATASETS, BatchIterator, DataError, ImageSet, load_dataset
from utils.results import OutputError, aggregate, markdown_table, write_table
from utils.runner import Experiment, ModelSpec, run_experiment
from utils.synthetic_data import class_images, write_cifar10, write_idx, write_mnist


def tiny_models(data: ImageSet) -> list[ModelSpec]:
    c, n = data.shape[0], len(data.classes)

    def cnn():
        return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n))
    return [ModelSpec("CNN", cnn), ModelSpec("CNN+ls", cnn, overrides={"label_smoothing": 0.1})]


def cli_args(tmp_path, data_dir, *extra):
    args = cli.base_parser("t", ("x",)).parse_args(
        ["--quick", "--no-download", "--device", "cpu", "--data-dir", str(data_dir),
         "--results-dir", str(tmp_path / "r"), "--plots-dir", str(tmp_path / "p"), *map(str, extra)])
    return args, cli.setup(args)


def experiment(**kw):
    return Experiment(**{"name": "exp", "title": "tiny", "dataset": "mnist", "models": tiny_models,
                         "epochs": 1, "lr": 0.05, **kw})


def test_seeds_give_one_file_each_and_a_mean_std_table(tmp_path, data_dir, capsys):
    args, device = cli_args(tmp_path, data_dir, "--seeds", 3, "--seed", 5)
    analysed = []
    exp = experiment(analyse=lambda ctx, spec, model, r: analysed.append((spec.name, r["seed"])),
                     contrasts=[("CNN+ls", "CNN"), ("CNN+ls", "CNN", "gap")])
    results = run_experiment(exp, args, device)
    out = tmp_path / "r" / "exp"
    assert {p.name for p in out.glob("*.json")} == {f"{m}_seed{s}.json" for m in ("CNN", "CNN+ls")
                                                    for s in (5, 6, 7)}
    assert analysed == [(m, s) for s in (5, 6, 7) for m in ("CNN", "CNN+ls")]  # seed by seed
    assert {r["config"]["seed"] for r in results} == {5, 6, 7}
    accs = [r["test_acc"] for r in results if r["model"] == "CNN"]
    assert len(set(r["history"][0]["running_loss"] for r in results if r["model"] == "CNN")) == 3
    table = (out / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| CNN |"))
    assert f"{100 * np.mean(accs):.2f} ± {100 * np.std(accs, ddof=1):.2f}" in row
    assert "| 3 |" in row and "сиды: 5, 6, 7" in table
    assert len((out / "summary.csv").read_text().splitlines()) == 1 + 6
    assert (tmp_path / "p" / "exp" / "mnist_learning_curves.png").stat().st_size > 0
    contrast = (out / "contrasts.md").read_text()
    assert "| CNN+ls − CNN | test acc |" in contrast and "парный по 3 общим сидам" in contrast
    gaps = {m: [r["gap"] for r in results if r["model"] == m] for m in ("CNN", "CNN+ls")}
    gap_row = next(line for line in contrast.splitlines() if "| train − test |" in line)
    assert f"| {100 * (np.mean(gaps['CNN+ls']) - np.mean(gaps['CNN'])):.2f} |" in gap_row

    # --resume per seed: a lost seed is retrained, the others are read back
    (out / "CNN_seed6.json").unlink()
    capsys.readouterr()
    args.resume = True
    again = run_experiment(exp, args, device)
    log = capsys.readouterr().out
    assert log.count("[resume]") == 5 and "CNN (seed 6): test acc" in log
    assert [r["test_acc"] for r in again if r["model"] == "CNN"] == accs  # same seed, same result


def test_explicit_seed_list_and_fixed_seed_count(tmp_path, data_dir):
    args, device = cli_args(tmp_path, data_dir, "--seed", "3,1")
    assert cli.seed_list(args) == [3, 1] and args.seed == 3
    assert cli.seed_list(args, fixed=2) == [3, 4]
    results = run_experiment(experiment(seeds=2, subset=(100, 50)), args, device)
    assert sorted({r["seed"] for r in results}) == [3, 4]
    assert all(r["config"]["train_size"] == 100 and r["config"]["test_size"] == 50 for r in results)
    with pytest.raises(cli.UsageError):
        cli_args(tmp_path, data_dir, "--seed", "1,2", "--seeds", 2)
    with pytest.raises(SystemExit):
        cli.base_parser("t", ("x",)).parse_args(["--seed", "1,1"])


def test_aggregate_refuses_to_pool_other_configs():
    base = {"model": "A", "params": 10, "test_acc": 0.5, "config": {"lr": 0.1, "seed": 0}}
    rows = aggregate([{**base, "seed": 0}, {**base, "seed": 1, "test_acc": 0.7,
                                            "config": {"lr": 0.1, "seed": 1}}])
    assert rows[0]["n"] == 2 and rows[0]["test_acc"] == pytest.approx(0.6)
    assert rows[0]["test_acc_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert "60.00 ± 14.14" in markdown_table(rows, [("test_acc", "acc", "pct")])
    flops = aggregate([{**base, "seed": 0, "mflops": 12.5}, {**base, "seed": 1, "mflops": 12.5,
                                                              "config": {"lr": 0.1, "seed": 1}}])
    assert "| 12.50 |" in markdown_table(flops, [("mflops", "MFLOPs", "f2")])  # the same in every seed: no "± 0"
    with pytest.raises(OutputError, match="lr"):
        aggregate([base, {**base, "seed": 1, "config": {"lr": 0.2, "seed": 1}}])


def test_a_diverged_seed_is_left_out_of_the_mean(tmp_path):
    base = {"model": "A", "epochs": 1, "config": {"seed": 0, "batch_size": 2, "device": "cpu"}}
    results = [{**base, "seed": 0, "test_loss": 1.0}, {**base, "seed": 1, "test_loss": None, "diverged": True},
               {**base, "seed": 2, "test_loss": 3.0}]
    row, = aggregate(results)
    assert row["test_loss"] == 2.0 and row["diverged"] == 1 and row["n"] == 3
    write_table(tmp_path, results, [("model", "m", "str"), ("test_loss", "loss", "f4")])
    assert "| A | 3 | 2.0000 ± 1.4142 |" in (tmp_path / "table.md").read_text()


# The registry -----------------------------------------------------------------------------------

def write_fashion(root, n=40):
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        images, labels = class_images(n, (28, 28), 3)
        write_idx(raw / f"{split}-images-idx3-ubyte", images, compress=True)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels, compress=False)


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_record_loads_its_files(tmp_path, name):
    {"mnist": write_mnist, "cifar10": write_cifar10, "fashion_mnist": write_fashion}[name](tmp_path)
    d = DATASETS[name]
    for split in ("train", "test"):
        data = load_dataset(name, split, tmp_path, download=False)
        assert data.shape == d.shape and data.classes == d.classes and len(d.classes) == 10
        assert data.images.dtype == torch.uint8 and int(data.labels.max()) < len(d.classes)
        assert len(d.mean) == len(d.std) == d.shape[0]
        assert BatchIterator(data.subset(8), 4).crop_padding == d.crop_padding  # the record's, kept by subset
    with pytest.raises(DataError, match="not found"):  # each record reads its own folder
        other = next(n for n in DATASETS if DATASETS[n].folder != d.folder)
        load_dataset(other, "train", tmp_path, download=False)


def test_unknown_dataset_is_one_line_exit_2(data_dir):
    with pytest.raises(DataError, match="unknown data set 'svhn'"):
        load_dataset("svhn", "train", data_dir)
    proc = run_script("homework_custom_layers_experiments.py", "--dataset", "svhn")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "invalid choice" in proc.stderr


def test_task3_runs_on_mnist(tmp_path, data_dir):
    proc = run_script("homework_custom_layers_experiments.py", "--quick", "--part", "3.1", "--dataset", "mnist",
                      "--no-download", "--threads", "1", "--data-dir", data_dir,
                      "--results-dir", tmp_path / "r", "--plots-dir", tmp_path / "p")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "r" / "custom_layers_mnist" / "CNN-custom_seed0.json").read_text())
    assert result["config"]["dataset"] == "mnist" and result["classes"] == list(DATASETS["mnist"].classes)
    assert (tmp_path / "p" / "custom_layers_mnist" / "attention_spatial_maps.png").is_file()


def test_compare_paired_by_seed_and_welch_otherwise():
    from utils.comparison_utils import compare, t_quantile, verdict
    assert [round(t_quantile(0.975, df), 3) for df in (1, 2, 4, 30)] == [12.706, 4.303, 2.776, 2.042]
    a = [{"seed": s, "test_acc": v} for s, v in zip((0, 1, 2), (0.90, 0.91, 0.92))]
    b = [{"seed": s, "test_acc": v} for s, v in zip((0, 1, 2), (0.88, 0.885, 0.90))]
    paired = compare(a, b)
    d = np.array([0.02, 0.025, 0.02])  # per-seed differences
    half = 4.303 * d.std(ddof=1) / np.sqrt(3)
    assert paired["test"] == "paired" and paired["diff"] == pytest.approx(d.mean())
    assert paired["high"] - paired["diff"] == pytest.approx(half, rel=1e-3) and paired["real"]
    other_seeds = [{**r, "seed": r["seed"] + 10} for r in b]
    welch = compare(a, other_seeds)
    assert welch["test"] == "Welch" and welch["low"] < 0 < welch["high"] and not welch["real"]
    half_welch = 100 * (welch["high"] - welch["low"]) / 2
    assert verdict(welch) == f"в пределах шума (±{half_welch:.2f} п.п.)" and verdict(paired) == "различие реально"
    one = compare(a[:1], b[:1])  # one shared seed: its difference, no interval
    assert one["diff"] == pytest.approx(a[0]["test_acc"] - b[0]["test_acc"]) and one["low"] is None
    assert verdict(one) == "один сид: без интервала" and not one["real"]
    apart = compare(a[:1], b[1:2])  # different seeds: nothing to pair
    assert apart["diff"] is None and verdict(apart) == "нужно ≥ 2 сидов"


def test_run_records_keep_the_flags_that_change_a_run_but_not_paths():
    from utils.results import run_flags
    argv = ["--data-dir", "../shared/data", "--no-download", "--seeds", "3", "--results-dir=out",
            "--resume", "--plots-dir", "p", "--threads", "2"]
    assert run_flags(argv) == "--no-download --seeds 3 --resume --threads 2"
