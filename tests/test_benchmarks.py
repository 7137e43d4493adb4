"""The benchmarks run end to end on tiny settings, and the naive pipeline matches the core's data."""
import json

import torch

from benchmarks.bench_pipeline import NaiveDataset, naive_transform
from benchmarks.bench_scripts import projection
from benchmarks.common import interleave, synthetic_set
from tests.test_scripts import run_script
from utils.data import BatchIterator


def test_naive_dataset_normalises_like_the_core():
    data = synthetic_set("cifar10", 8)
    naive = NaiveDataset(data, naive_transform(data, "none"))
    core_x, core_y = next(iter(BatchIterator(data, 8)))
    naive_x = torch.stack([naive[i][0] for i in range(8)])
    assert torch.allclose(naive_x, core_x, atol=1e-5)
    assert [naive[i][1] for i in range(8)] == core_y.tolist()


def test_interleave_alternates_the_order():
    calls = []
    interleave({"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]


def test_bench_pipeline_tiny(tmp_path):
    proc = run_script("benchmarks/bench_pipeline.py", "--steps", 2, "--repeats", 2, "--warmup", 1,
                      "--synthetic-size", 512, "--workers", 0, "--threads", 1, "--batch-size", 32)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("ratio core / best naive") == 2 and "peak RSS" in proc.stdout


def test_bench_options_tiny():
    proc = run_script("benchmarks/bench_options.py", "--dataset", "mnist", "--images", 64,
                      "--repeats", 1, "--warmup", 1, "--no-compile", "--synthetic-size", 256)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("baseline", "NCHW", "batch 256", "2 threads"):  # OMP_NUM_THREADS=1: 1 is the default
        assert name in proc.stdout


def test_bench_pipeline_missing_data_is_one_line_exit_2(tmp_path):
    proc = run_script("benchmarks/bench_pipeline.py", "--data-dir", tmp_path / "none", "--dataset", "mnist")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


def test_projection_scales_only_the_training_steps():
    run = {"wall_time_min": 10.0, "peak_rss_mb": 100.0}
    models = [{"train_time_s": 60.0, "steps_per_epoch": 5, "full_steps_per_epoch": 50, "epochs": 4,
               "model": "A", "params": 10, "part": "x"},
              {"train_time_s": 120.0, "steps_per_epoch": 10, "full_steps_per_epoch": 10, "epochs": 2,
               "model": "B", "params": 20, "part": "y"}]
    p = projection(run, models)
    assert (p["train"], p["other"], p["full_train"]) == (3.0, 7.0, 12.0)
    assert p["projected"] == 19.0 and p["models"] == 2
    # per model: 600 s of training at full epochs over 4 epochs; 120 s over 2
    assert [(c["model"], c["s_per_epoch"], c["min"]) for c in p["costs"]] == [("A", 150.0, 10.0), ("B", 60.0, 2.0)]


def test_bench_scripts_projects_a_script(tmp_path, data_dir):
    proc = run_script("benchmarks/bench_scripts.py", "--data-dir", data_dir, "--fraction", 0.5,
                      "--threads", 1, "--scripts", "homework_cnn_vs_fc_comparison.py",
                      "--keep", tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("homework_cnn_vs_fc"))
    assert row.split()[1] == "6"  # six models trained, each at half of its epochs' batches
    cost_rows = [line for line in proc.stdout.splitlines() if line.startswith("| mnist_comparison |")
                 or line.startswith("| cifar_comparison |")]
    assert len(cost_rows) == 6 and "min of training per part" in proc.stdout
    configs = [json.loads(p.read_text())["config"] for p in tmp_path.rglob("*comparison/*.json")]
    assert len(configs) == 6 and all(c["epoch_fraction"] == 0.5 for c in configs)
    run = json.loads((tmp_path / "homework_cnn_vs_fc_comparison/results/runs/"
                                 "homework_cnn_vs_fc_comparison.json").read_text())
    assert run["preset"] == "epoch-fraction 0.5"  # the run record says it was shortened
    # --quick mode: the same table against the one-minute promise of the smoke tests
    proc = run_script("benchmarks/bench_scripts.py", "--report-only", "--quick", "--keep", tmp_path,
                      "--scripts", "homework_cnn_vs_fc_comparison.py")
    row = next(line for line in proc.stdout.splitlines() if line.startswith("homework_cnn_vs_fc"))
    assert row.split()[-2] == "1" and "--quick smoke tests" in proc.stdout


def test_bench_scripts_reports_a_failing_script(tmp_path):
    proc = run_script("benchmarks/bench_scripts.py", "--data-dir", tmp_path / "none",
                      "--scripts", "homework_cnn_vs_fc_comparison.py")
    assert proc.returncode == 1 and "FAILED with exit code 2" in proc.stdout


def test_benchmark_models_are_task_1s_and_the_recipe_baseline():
    from types import SimpleNamespace

    from benchmarks.bench_time_to_accuracy import RECIPES
    from benchmarks.common import LR, MODELS, make_config
    from homework_cnn_vs_fc_comparison import EXPERIMENTS
    from models.cnn_models import CNNWithResidual
    from utils.data import DATASETS
    d = DATASETS["mnist"]
    spec = next(s for s in EXPERIMENTS["1.1"].models(SimpleNamespace(shape=d.shape, classes=d.classes))
                if s.name == MODELS["mnist"].name)
    assert repr(spec.build()) == repr(MODELS["mnist"].build()) and EXPERIMENTS["1.1"].lr == LR
    options, recipe = RECIPES["current"]
    assert repr(CNNWithResidual(3, 10, **options)) == repr(MODELS["cifar10"].build())
    baseline, bench = recipe(), make_config(MODELS["cifar10"])
    assert (bench.lr, bench.augment, bench.label_smoothing) == (baseline.lr, baseline.augment,
                                                               baseline.label_smoothing)


def test_summary_reads_what_bench_scripts_prints(tmp_path, capsys):
    from benchmarks.bench_scripts import print_table
    from benchmarks.summary import script_table
    row = {"wall": 2.0, "train": 1.0, "other": 1.0, "full_train": 10.0, "peak_rss_mb": 1234.0, "models": 3,
           "how": "test"}
    print_table({f"{s}.py": {**row, "projected": p} for s, p in
                 (("homework_cnn_vs_fc_comparison", 11.0), ("homework_cnn_architecture_analysis", 12.5),
                  ("homework_custom_layers_experiments", 13.0))})
    (tmp_path / "t.txt").write_text(capsys.readouterr().out)
    rows = script_table(tmp_path / "t.txt")
    assert rows["homework_cnn_architecture_analysis"] == {"projected": 12.5, "peak": 1234.0}
    assert rows["total"]["projected"] == 36.5


def test_run_costs_sum_training_per_seed_over_complete_seeds(tmp_path):
    from benchmarks.run_costs import cost_table
    folder = tmp_path / "mnist_comparison"
    folder.mkdir()
    # seed 0: 60 + 120 s = 3 min; seed 1: 90 + 150 s = 4 min; seed 2 has only one model so far
    for model, seed, seconds in (("A", 0, 60), ("B", 0, 120), ("A", 1, 90), ("B", 1, 150), ("A", 2, 30)):
        (folder / f"{model}_seed{seed}.json").write_text(json.dumps(
            {"model": model, "seed": seed, "epochs": 8, "train_time_s": seconds, "config": {}}))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "homework_cnn_vs_fc_comparison_part1.1.json").write_text(json.dumps(
        {"model": "homework_cnn_vs_fc_comparison", "cpu": "Intel(R) Xeon(R) Processor, 2 threads"}))
    table = cost_table(tmp_path)
    assert "| 1.1 | 2 | 3 | 8 | 3.5 (3.0–4.0) | Intel Xeon Processor, 2 threads |" in table
    assert "| 1.2 |" not in table and "весь ДЗ (не все части)" in table and "**4**" in table


def test_layers_in_network_finds_every_place_and_sets_predicted_beside_measured(tmp_path):
    from benchmarks.bench_layers_in_network import layer_places, measured_extra
    from models.custom_layers import STANDARD_LAYERS
    places = layer_places(STANDARD_LAYERS, batch=2)
    stages = [(16, (2, 16, 32, 32)), (32, (2, 32, 16, 16)), (64, (2, 64, 8, 8))]
    assert places["conv"] == places["attention"] == places["pooling"] == stages
    assert places["activation"] == [(16, (2, 16, 32, 32))] + stages  # the stem's activation too
    for model, seed, seconds in (("CNN-standard", 0, 100), ("CNN-standard", 1, 110), ("standard+Swish", 1, 150),
                                 ("standard+Swish", 0, 120), ("CNN-custom", 2, 500)):
        (tmp_path / f"{model}_seed{seed}.json").write_text(json.dumps(
            {"model": model, "seed": seed, "epochs": 2, "steps_per_epoch": 5, "train_time_s": seconds, "config": {}}))
    extra, steps = measured_extra(tmp_path)
    assert extra["standard+Swish"] == [20, 40] and extra["CNN-custom"] == [] and steps == 10
    proc = run_script("benchmarks/bench_layers_in_network.py", "--batch-size", 2, "--repeats", 1, "--warmup", 1,
                      "--threads", 1, "--results", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + 4 + 1 and "| +20 / +40 |" in rows[4]  # activation: Swish's measured row
    bad = run_script("benchmarks/bench_layers_in_network.py", "--results", tmp_path / "none")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
