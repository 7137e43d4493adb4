import pytest
import torch

from models.cnn_models import (BasicBlock, BottleneckBlock, CNNWithResidual, FullyConnected, ResNet, SimpleCNN,
                               count_activations, count_parameters)
from utils.data import load_dataset
from utils.training_utils import TrainConfig, evaluate, one_cycle, train_model


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_output_shapes(shape):
    x = torch.randn(4, *shape)
    for model in (FullyConnected(shape), SimpleCNN(shape[0], input_size=shape[-1]),
                  CNNWithResidual(shape[0])):
        assert model(x).shape == (4, 10)


def test_parameter_counts():
    # 784*512 + 512*256 + 256*128 weights (no bias, BN follows), BN 2*(512+256+128), head 128*10+10
    fc = FullyConnected((1, 28, 28), hidden=(512, 256, 128))
    assert count_parameters(fc) == 784 * 512 + 512 * 256 + 256 * 128 + 2 * (512 + 256 + 128) + 1290
    # A basic block without downsampling: two 3x3 convs and two BNs.
    block = BasicBlock(16, 16)
    assert count_parameters(block) == 2 * 16 * 16 * 9 + 4 * 16
    assert count_parameters(ResNet(BasicBlock, (1, 1, 1), (16, 32, 64))) < count_parameters(
        ResNet(BasicBlock, (2, 2, 2), (16, 32, 64)))


def test_residual_block_starts_as_identity_map():
    net = CNNWithResidual(3, widths=(8, 16, 32, 64))
    block = net.stages[0][1]
    x = torch.relu(torch.randn(2, 16, 8, 8))
    block.eval()
    assert torch.allclose(block(x), x)  # zero-initialised last BN: the branch adds nothing yet


def test_count_activations_counts_conv_bn_relu_outputs():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Conv2d(2, 3, 1))
    net.train()
    # 2x4x4 after conv, BN and ReLU (3 x 32), then 3x2x2 after the last conv; pooling is not counted
    assert count_activations(net, (1, 4, 4)) == 3 * 32 + 12
    assert count_activations(net, (1, 4, 4)) == 108 and net.training  # hooks removed, mode kept
    # the bottleneck writes 4x wider maps than the basic block of the same planes
    basic, bottleneck = (ResNet(b, (1, 1, 1), (8, 16, 32)) for b in (BasicBlock, BottleneckBlock))
    assert count_activations(bottleneck, (3, 32, 32)) > 2 * count_activations(basic, (3, 32, 32))


def test_one_cycle_schedule():
    f = one_cycle(100, 0.2)
    assert f(0) == pytest.approx(0.1)
    assert f(20) == pytest.approx(1.0)
    assert f(100) == 0.0
    assert f(60) == pytest.approx(0.5)


def test_training_lowers_the_loss(data_dir):
    torch.manual_seed(0)
    train = load_dataset("mnist", "train", data_dir, download=False)
    test = load_dataset("mnist", "test", data_dir, download=False)
    model = SimpleCNN(1, 10, channels=(8, 16))
    cfg = TrainConfig(epochs=4, batch_size=16, lr=0.05, grad_log_every=2)
    before = evaluate(model, test, cfg)["loss"]
    result = train_model(model, train, test, cfg, desc="test")
    assert result["test_loss"] < before
    assert result["test_acc"] > 0.5  # the synthetic classes are easy
    assert len(result["history"]) == 4
    assert len(result["grad_norms_init"]) == len(result["grad_layers"]) == 4  # 2 conv, 2 linear
    assert all(g > 0 for g in result["history"][-1]["grad_norms"])
    assert result["train_time_s"] > 0
    # the final model's test predictions come back with the result (for the confusion matrix)
    correct = (result["test_predictions"] == test.labels).float().mean().item()
    assert correct == pytest.approx(result["test_acc"])


def test_epoch_fraction_trains_that_share_of_the_batches(data_dir):
    train = load_dataset("mnist", "train", data_dir, download=False)  # 240 images: 15 batches of 16
    test = load_dataset("mnist", "test", data_dir, download=False)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, epoch_fraction=0.2)
    result = train_model(SimpleCNN(1, 10, channels=(4, 8)), train, test, cfg, desc="test")
    assert (result["steps_per_epoch"], result["full_steps_per_epoch"]) == (3, 15)
    assert [h["images_per_s"] * h["epoch_time_s"] for h in result["history"]] == pytest.approx([48, 48])


def test_compile_wraps_only_the_training_forward(data_dir, monkeypatch):
    """--compile: train_model runs its steps through torch.compile's module, evaluation stays eager
    (a fake compile that counts calls keeps the test fast and free of a C++ toolchain)."""
    calls = {"compiled": 0}

    def fake_compile(model, **kwargs):
        def compiled(x):
            calls["compiled"] += 1
            return model(x)
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    train = load_dataset("mnist", "train", data_dir, download=False)
    test = load_dataset("mnist", "test", data_dir, download=False)
    cfg = TrainConfig(epochs=1, batch_size=16, compile=True)
    train_model(SimpleCNN(1, 10, channels=(4, 8)), train, test, cfg, desc="test")
    assert calls["compiled"] == 1 + len(train) // 16  # the gradient-at-init batch + one epoch
