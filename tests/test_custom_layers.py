"""Task 3: hand-written backward passes (gradcheck), equivalence to standard layers, residual
blocks, and a --quick end-to-end run of homework_custom_layers_experiments.py."""
import copy
import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck
from torchvision.ops import SqueezeExcitation

from models.cnn_models import BasicBlock, BottleneckBlock, ResNet, WideBlock, conv1x1, count_parameters
from models.custom_layers import (CUSTOM_LAYERS, STANDARD_LAYERS, ChannelSpatialAttention, LayerCNN,
                                  MixedPool2d, Swish, WSConv2d, ws_weight_fwd)
from tests.test_scripts import quick_args, run_script


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial parameters (some start at zero, which would hide wrong gradients)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 + (1.0 if p.ndim == 0 else 0.0))
    return module


@pytest.mark.parametrize("role", sorted(CUSTOM_LAYERS))
def test_gradcheck_wrt_input_and_parameters(role):
    torch.manual_seed(0)
    layer = randomize(CUSTOM_LAYERS[role](4).double().eval())
    params = [p for p in layer.parameters() if p.requires_grad]
    assert params, "every custom layer has learnable parameters"
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64, requires_grad=True)  # odd width: pooling edge
    # gradcheck perturbs the parameters in place, so the layer sees them through ``params``.
    assert gradcheck(lambda x, *ps: layer(x), (x, *params), eps=1e-6, atol=1e-5)


def test_registry_shapes():
    x = torch.randn(2, 8, 10, 10)
    shapes = {role: tuple(f(8)(x).shape) for role, f in CUSTOM_LAYERS.items()}
    assert shapes == {"conv": (2, 8, 10, 10), "attention": (2, 8, 10, 10),
                      "activation": (2, 8, 10, 10), "pooling": (2, 8, 5, 5)}
    assert {role: tuple(f(8)(x).shape) for role, f in STANDARD_LAYERS.items()} == shapes


def grads(out, *tensors):
    return torch.autograd.grad(out.pow(2).sum(), tensors)


def assert_same(a, b):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_conv_without_standardisation_is_conv2d():
    conv = WSConv2d(3, 5, standardize=False).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    w = conv.weight.detach().clone().requires_grad_()
    y, y_ref = conv(x), F.conv2d(x, w, padding=1)
    assert_same(y, y_ref)
    for g, g_ref in zip(grads(y, x, conv.weight), grads(y_ref, x, w)):
        assert_same(g, g_ref)


def test_conv_with_standardisation_matches_autograd_reference():
    conv = randomize(WSConv2d(3, 5, stride=2).double())
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    w, gain = (conv.weight.detach().clone().requires_grad_(), conv.gain.detach().clone().requires_grad_())
    mean = w.mean((1, 2, 3), keepdim=True)
    var = w.var((1, 2, 3), unbiased=False, keepdim=True)
    y_ref = F.conv2d(x, gain.view(-1, 1, 1, 1) * (w - mean) / torch.sqrt(var + conv.eps), stride=2, padding=1)
    y = conv(x)
    assert_same(y, y_ref)
    for g, g_ref in zip(grads(y, x, conv.weight, conv.gain), grads(y_ref, x, w, gain)):
        assert_same(g, g_ref)
    # the standardised kernel has zero mean and unit variance per output channel
    _, w_std, _ = ws_weight_fwd(conv.weight.detach(), conv.gain.detach(), eps=0.0)
    assert_same(w_std.mean((1, 2, 3)), torch.zeros(5, dtype=torch.float64))
    assert_same(w_std.var((1, 2, 3), unbiased=False), torch.ones(5, dtype=torch.float64))


def test_swish_beta_one_is_silu():
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    y, y_ref = Swish(1.0).double()(x), F.silu(x)
    assert_same(y, y_ref)
    assert_same(grads(y, x)[0], grads(y_ref, x)[0])


def test_channel_attention_is_torchvision_squeeze_excitation():
    att = randomize(ChannelSpatialAttention(8, reduction=4, spatial=False).double())
    se = SqueezeExcitation(8, 2).double()
    with torch.no_grad():
        se.fc1.weight.copy_(att.fc1.weight.view(2, 8, 1, 1))
        se.fc1.bias.copy_(att.fc1.bias)
        se.fc2.weight.copy_(att.fc2.weight.view(8, 2, 1, 1))
        se.fc2.bias.copy_(att.fc2.bias)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    y, y_ref = att(x), se(x)
    assert_same(y, y_ref)
    gx, gw1, gw2 = grads(y, x, att.fc1.weight, att.fc2.weight)
    gx_ref, gw1_ref, gw2_ref = grads(y_ref, x, se.fc1.weight, se.fc2.weight)
    assert_same(gx, gx_ref)
    assert_same(gw1, gw1_ref.view(2, 8))
    assert_same(gw2, gw2_ref.view(8, 2))


def test_spatial_attention_matches_autograd_reference():
    att = randomize(ChannelSpatialAttention(6, reduction=2).double()).eval()
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64, requires_grad=True)
    a_c = torch.sigmoid(att.fc2(F.relu(att.fc1(x.mean((2, 3))))))
    a_s = torch.sigmoid((x * att.spatial_weight.view(1, -1, 1, 1)).sum(1, keepdim=True) + att.spatial_bias)
    y_ref = x * a_c[:, :, None, None] * a_s
    y = att(x)
    assert_same(y, y_ref)
    params = (x, att.spatial_weight, att.spatial_bias, att.fc1.weight, att.fc2.bias)
    for g, g_ref in zip(grads(y, *params), grads(y_ref, *params)):
        assert_same(g, g_ref)
    assert att.last_spatial.shape == (2, 1, 4, 5) and att.last_channel.shape == (2, 6)


@pytest.mark.parametrize("logit,reference", [(60.0, F.max_pool2d), (-60.0, F.avg_pool2d)])
def test_mixed_pooling_limits_are_max_and_average(logit, reference):
    pool = MixedPool2d(3, init_logit=logit).double()
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)  # odd height: floor like torch
    y, y_ref = pool(x), reference(x, 2)
    assert_same(y, y_ref)
    assert_same(grads(y, x)[0], grads(y_ref, x)[0])


def test_layer_cnn_with_either_registry():
    x = torch.randn(2, 3, 32, 32)
    for layers in (CUSTOM_LAYERS, STANDARD_LAYERS):
        model = LayerCNN(layers, widths=(8, 16))
        model(x).sum().backward()
        assert model(x).shape == (2, 10)
        assert all(p.grad is not None for p in model.parameters())


def test_custom_layers_train_under_bf16_autocast():
    """train_model runs CUDA under bf16 autocast; the custom layers must then run in float32
    (their backward passes assume one dtype). CPU autocast casts the same ops, so it checks this
    without a GPU."""
    torch.manual_seed(0)
    model = LayerCNN(CUSTOM_LAYERS, widths=(8, 16))
    reference = copy.deepcopy(model.state_dict())
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    assert logits.dtype == torch.bfloat16  # the standard layers around them did use bf16
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name
    # the same step in float32 gives close gradients (bf16 keeps ~3 significant digits)
    fp32 = LayerCNN(CUSTOM_LAYERS, widths=(8, 16))
    fp32.load_state_dict(reference)
    F.cross_entropy(fp32(x), y).backward()
    mixed = torch.cat([p.grad.flatten() for p in model.parameters()])
    full = torch.cat([p.grad.flatten() for p in fp32.parameters()])
    assert (mixed - full).norm() < 0.1 * full.norm()


def test_residual_block_shapes_and_parameter_counts():
    x = torch.randn(2, 64, 8, 8)
    bottleneck = BottleneckBlock(64, 16)  # 64 -> 64 channels through a 16-channel 3x3
    basic = BasicBlock(64, 64)
    assert bottleneck(x).shape == basic(x).shape == (2, 64, 8, 8)
    assert count_parameters(bottleneck) < count_parameters(basic)

    wide_cls = WideBlock.widen(4)
    wide = wide_cls(16, 16, downsample=conv1x1(16, 64))
    assert wide_cls.expansion == 4 and wide(torch.randn(2, 16, 8, 8)).shape == (2, 64, 8, 8)
    assert count_parameters(wide) > count_parameters(BasicBlock(16, 16))

    strided = BottleneckBlock(64, 32, stride=2, downsample=conv1x1(64, 128, stride=2))
    assert strided(x).shape == (2, 128, 4, 4)

    params = {}
    for name, block in (("basic", BasicBlock), ("bottleneck", BottleneckBlock), ("wide", WideBlock)):
        model = ResNet(block, (1, 1, 1), (8, 16, 32))
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        params[name] = count_parameters(model)
        # zero-initialised last BN of every residual branch
        last_bn = [m.bn3 if block is BottleneckBlock else m.bn2 for m in model.modules() if isinstance(m, block)]
        assert last_bn and all(float(bn.weight.detach().abs().sum()) == 0 for bn in last_bn)
    assert params["wide"] > params["basic"]


def test_task3_quick_end_to_end(tmp_path, data_dir):
    proc = run_script("homework_custom_layers_experiments.py", *quick_args(tmp_path, data_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    results, plots = tmp_path / "results", tmp_path / "plots"

    bench = json.loads((results / "custom_layers" / "layer_benchmark.json").read_text())
    assert [r["role"] for r in bench["rows"]][:4] == ["conv", "attention", "activation", "pooling"]
    assert all(r["custom_forward_backward_ms"] > 0 and r["standard_forward_ms"] > 0 for r in bench["rows"])
    assert "--quick" in (results / "custom_layers" / "layer_benchmark.md").read_text()
    # --resume keeps the finished layer benchmark (its timings depend on the machine's load)
    before = (results / "custom_layers" / "layer_benchmark.json").read_bytes()
    proc = run_script("homework_custom_layers_experiments.py", *quick_args(tmp_path, data_dir), "--part", "3.1",
                      "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[resume] layer benchmark" in proc.stdout
    assert (results / "custom_layers" / "layer_benchmark.json").read_bytes() == before
    assert list(pd.read_csv(results / "custom_layers" / "summary.csv")["model"]) == [
        "CNN-standard", "CNN-custom", "standard+WSConv2d", "standard+ChannelSpatialAttention", "standard+Swish",
        "standard+MixedPool2d"]
    assert (results / "custom_layers" / "contrasts.md").read_text().count("− CNN-standard") == 5
    custom = json.loads((results / "custom_layers" / "CNN-custom_seed0.json").read_text())
    assert len(custom["learned"]["swish_beta"]) == 4 and len(custom["learned"]["pool_mix_mean"]) == 3
    for name in ("swish_vs_relu", "attention_spatial_maps", "attention_channel_per_class", "pooled_outputs",
                 "cifar10_learning_curves"):
        assert (plots / "custom_layers" / f"{name}.png").stat().st_size > 0, name

    blocks = pd.read_csv(results / "residual_blocks" / "summary.csv")
    assert list(blocks["model"]) == ["BasicBlock", "BottleneckBlock", "WideBlock-k2", "BasicBlock-matched",
                                     "BottleneckBlock-matched"]
    params = dict(zip(blocks["model"], blocks["params"]))
    for m in ("BasicBlock-matched", "BottleneckBlock-matched"):  # matched parameters, within 5 %
        assert abs(params[m] / params["WideBlock-k2"] - 1) < 0.05
    for m in blocks["model"]:
        r = json.loads((results / "residual_blocks" / f"{m}_seed0.json").read_text())
        assert r["mflops"] > 0 and r["params"] > 0 and r["inference_time_s"] > 0
    assert "MFLOPs" in (results / "residual_blocks" / "table.md").read_text()
    throughput = (results / "residual_blocks" / "throughput.md").read_text()
    assert "элементов карт" in throughput and all(f"| {m} |" in throughput for m in blocks["model"])
    stability = json.loads((results / "residual_blocks" / "stability.json").read_text())
    assert [s["block"] for s in stability] == list(blocks["model"])
    assert all(s["seeds"] == 1 and s["grad_median"] > 0 for s in stability)  # --seeds 3 for a spread
    text = (results / "residual_blocks" / "stability.md").read_text()
    assert "--quick" in text and "сид 0" in text
    for name in ("stability_loss_spread", "stability_grad_norms", "cifar10_learning_curves"):
        assert (plots / "residual_blocks" / f"{name}.png").stat().st_size > 0, name
