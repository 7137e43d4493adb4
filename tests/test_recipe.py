"""The fast recipe's options (issue 11): each changes what it should, and the defaults nothing."""
import json
from dataclasses import fields

import pytest
import torch

from models.cnn_models import BasicBlock, CNNWithResidual, FullyConnected, WhiteningStem
import benchmarks.bench_time_to_accuracy as bench
from tests.test_scripts import run_script
from utils.data import BatchIterator, ImageSet, load_dataset, random_crop
from utils.optim import Muon, zeropower_via_newtonschulz
from utils.training_utils import (FAST_MODEL_OPTIONS, TrainConfig, fast_recipe, lr_lambdas,
                                  make_optimizer, one_cycle, train_model)


def tiny_set(n=8, seed=0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(n) % 10, tuple("abcdefghij"), (0.5,) * 3, (0.25,) * 3)


def test_defaults_keep_todays_recipe():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.flip, cfg.crop_padding, cfg.crop_mode, cfg.bn_momentum, cfg.tta) == (
        "sgd", "random", None, "constant", None, False)
    opt = make_optimizer(CNNWithResidual(3), cfg)
    assert type(opt) is torch.optim.SGD and len(opt.param_groups) == 2
    assert one_cycle(100, 0.2)(0) == pytest.approx(0.1)  # warm-up unchanged


def test_no_warmup_is_a_linear_decay_from_the_peak():
    f = one_cycle(100, 0.0)
    assert f(0) == 1.0 and f(50) == pytest.approx(0.5) and f(100) == 0.0


def test_newton_schulz_orthogonalises():
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(32, 32))
    v, _ = torch.linalg.qr(torch.randn(144, 32))
    g = u @ torch.diag(torch.logspace(0, 1, 32)) @ v.T  # singular values 1 .. 10
    s = torch.linalg.svdvals(zeropower_via_newtonschulz(g))
    assert s.min() > 0.5 and s.max() < 1.3  # every direction about the same size


def test_muon_step_is_orthogonal_and_keeps_the_filter_norm():
    w = torch.nn.Parameter(torch.randn(16, 8, 3, 3))
    w.grad = torch.randn_like(w)
    opt = Muon([dict(params=[w], muon=True)], lr=0.1, momentum=0.0)
    before = w.detach().clone() * 16 ** 0.5 / w.detach().norm()
    opt.step()
    update = (before - w.detach()).reshape(16, -1) / 0.1
    s = torch.linalg.svdvals(update)
    assert s.min() > 0.5 and s.max() < 1.3
    assert before.norm() == pytest.approx(16 ** 0.5, rel=1e-4)


def test_muon_groups_split_filters_head_and_biases():
    model = CNNWithResidual(**FAST_MODEL_OPTIONS)
    cfg = fast_recipe()
    opt = make_optimizer(model, cfg)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"rest", "head", "filters", "whiten_bias"}
    assert groups["filters"]["muon"] and groups["filters"]["lr"] == cfg.muon_lr
    assert all(p.ndim == 4 for p in groups["filters"]["params"])
    assert groups["head"]["lr"] == pytest.approx(cfg.lr * cfg.head_lr_mult)
    # decoupled weight decay: lr * wd is the same in every SGD group
    assert groups["head"]["lr"] * groups["head"]["weight_decay"] == pytest.approx(
        groups["rest"]["lr"] * groups["rest"]["weight_decay"])
    lambdas = lr_lambdas(opt, cfg, steps_per_epoch=10)
    w = [g["name"] for g in opt.param_groups].index("whiten_bias")
    r = [g["name"] for g in opt.param_groups].index("rest")
    assert lambdas[w](30) == 0.0 and lambdas[r](30) > 0  # the whitening bias stops after 3 epochs

def test_muon_takes_the_hidden_layers_of_a_fully_connected_net_and_it_trains():
    model = FullyConnected((3, 32, 32), 10, hidden=(64, 32), scaled_head=True)
    groups = {g["name"]: g for g in make_optimizer(model, fast_recipe()).param_groups}
    head = model.net[-1]
    assert [p.shape for p in groups["filters"]["params"]] == [(64, 3072), (32, 64)]
    assert groups["head"]["params"] == [head.weight] and head.bias is None
    # the classifier's large lr is safe only with the scaled head: the loss stays finite
    result = train_model(model, tiny_set(64), tiny_set(16, seed=1),
                         fast_recipe(epochs=3, batch_size=32, train_eval_size=16, tta=False))
    assert not result.get("diverged") and result["train_loss"] < 5



def test_alternating_flip_flips_every_other_epoch():
    data = tiny_set(16)
    it = BatchIterator(data, 16, augment="flip", flip="alternate", seed=1)
    plain = next(iter(BatchIterator(data, 16)))[0]
    views = []
    for epoch in range(3):
        it.set_epoch(epoch)
        views.append(next(iter(it))[0])
    flipped = [(v == plain.flip(3)).flatten(1).all(1) for v in views]
    same = [(v == plain).flatten(1).all(1) for v in views]
    assert all((f | s).all() for f, s in zip(flipped, same))    # each image: mirrored or not
    assert (flipped[0] != flipped[1]).all() and (flipped[0] == flipped[2]).all()
    assert 0 < flipped[0].sum() < 16                              # epoch 0: a random half


def test_reflect_translation_has_no_black_border():
    x = torch.rand(64, 3, 32, 32) + 1.0  # no zeros anywhere
    out = random_crop(x, 2, torch.Generator().manual_seed(0), mode="reflect")
    assert out.shape == x.shape and (out >= 1.0).all()
    assert (random_crop(x, 2, torch.Generator().manual_seed(0)) == 0).any()  # zero padding


def test_architecture_options():
    model = CNNWithResidual(**FAST_MODEL_OPTIONS)
    images = torch.randn(64, 3, 32, 32) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    model.init_from_data(images)
    stem = model.stem[0]
    assert isinstance(stem, WhiteningStem) and not stem.conv.weight.requires_grad
    z = stem(images)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    cov = (z - stem.conv.bias[:12]).T @ (z - stem.conv.bias[:12]) / len(z)
    assert torch.allclose(cov, torch.eye(12), atol=0.05)  # whitened patches
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.weight.requires_grad for m in bns)
    block = next(m for m in model.modules() if isinstance(m, BasicBlock))
    assert torch.equal(block.conv1.weight[:, :, 1, 1], torch.eye(block.conv1.in_channels))  # Dirac
    assert isinstance(block.relu, torch.nn.GELU) and model.fc.bias is None
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError):
        CNNWithResidual(whiten=True)  # widths[0] must be the stem's 24 channels


def test_train_model_with_the_fast_recipe_reports_tta_separately(data_dir):
    train = load_dataset("cifar10", "train", data_dir, download=False)
    test = load_dataset("cifar10", "test", data_dir, download=False)
    cfg = fast_recipe(epochs=1, batch_size=60, train_eval_size=60)
    model = CNNWithResidual(**FAST_MODEL_OPTIONS)
    r = train_model(model, train, test, cfg)
    assert 0 <= r["test_acc_tta"] <= 1 and r["test_acc"] == r["history"][-1]["test_acc"]
    assert "test_acc_tta" not in r["history"][-1]
    assert all(m.momentum == 0.4 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    plain = train_model(CNNWithResidual(3, widths=(8, 16, 32, 64)), train, test,
                        TrainConfig(epochs=1, batch_size=60, train_eval_size=60))
    assert "test_acc_tta" not in plain


def test_holdout_split_is_the_end_of_the_training_set():
    data = tiny_set(10)
    train, val = data.split(3)
    assert len(train) == 7 and torch.equal(val.images, data.images[7:])


def test_bench_time_to_accuracy_quick(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["--quick", "--threads", "1", "--out", str(out), "--recipes", "current,new"]
    bench.main(args)
    stdout = capsys.readouterr().out
    results = {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(results) == {"current_seed0.json", "new_seed0.json"}
    new = results["new_seed0.json"]
    assert new["config"]["optimizer"] == "muon" and new["acc_tta"] is not None
    assert results["current_seed0.json"]["acc_tta"] is None
    assert set(new["config"]) == {f.name for f in fields(TrainConfig)}  # the full config
    assert len(new["history"]) == 1 and new["mflops_per_image"] > 1 and "TTA %" in stdout
    bench.main(args + ["--resume"])  # nothing is trained again
    assert json.loads((out / "new_seed0.json").read_text())["finished"] == new["finished"]
    capsys.readouterr()
    bench.main(["--report", "--out", str(out)])
    assert "mean ± std" in capsys.readouterr().out
    with pytest.raises(bench.UsageError):
        bench.main(["--quick", "--set", "lr"])


def test_bench_time_to_accuracy_bad_input_is_one_line_exit_2():
    proc = run_script("benchmarks/bench_time_to_accuracy.py", "--quick", "--recipes", "nope")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
