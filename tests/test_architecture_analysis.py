"""Task 2: receptive fields, the matched kernel variants, the depth models and the script end to end."""
import json
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn

from homework_cnn_architecture_analysis import DEPTH_WIDTHS, depth_models, kernel_models, main
from models.cnn_models import BasicBlock, KernelCNN, PlainCNN, ResidualCNN, count_parameters
from utils.receptive_field import effective_receptive_field, erf_extent, receptive_field, receptive_field_info
from tests.test_scripts import quick_args, run_script


class TwoPaths(nn.Module):
    """Parallel branches of different reach, added: the field is the larger one."""

    def __init__(self):
        super().__init__()
        self.wide = nn.Conv2d(1, 1, 7, padding=3)
        self.narrow = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(3, 1, 1))

    def forward(self, x):
        return torch.relu(self.narrow(x) + self.wide(x))


@pytest.mark.parametrize("model, shape, expected", [
    (nn.Conv2d(3, 4, 5, padding=2), (3, 16, 16), 5),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)), (1, 16, 16), 4),          # 3 + (2-1)*1
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3)), (1, 16, 16), 8),  # 4 + 2*2
    (nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.Conv2d(2, 2, 3)), (1, 16, 16), 7),  # 3 + 2*2
    (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.Conv2d(2, 2, 3, dilation=4)), (1, 32, 32), 13),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(3, stride=2)), (1, 16, 16), 5),
    (BasicBlock(4, 4), (4, 16, 16), 5),               # two 3x3 convs; the identity path reaches 1
    (TwoPaths(), (1, 16, 16), 7),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), (1, 16, 16), 3),
])
def test_receptive_field_by_hand(model, shape, expected):
    assert receptive_field(model, shape) == expected


def test_receptive_field_published_values():
    # Published theoretical receptive fields (e.g. Araujo et al., Distill 2019):
    # AlexNet pool5 195; VGG-16 conv5_3 196 and pool5 212; ResNet-18 (last stage) 435.
    assert receptive_field(torchvision.models.alexnet(weights=None).features, (3, 224, 224)) == 195
    with torch.device("meta"):  # shapes only: VGG's 138M parameters are never initialised
        vgg = torchvision.models.vgg16(weights=None)
        resnet = torchvision.models.resnet18(weights=None)
    assert receptive_field(vgg.features, (3, 224, 224)) == 212
    assert receptive_field(vgg.features[:-1], (3, 224, 224)) == 196
    assert receptive_field(resnet, (3, 224, 224)) == 435  # branches, adds, global pooling


def test_receptive_field_info_and_mode_restored():
    model = KernelCNN(3, (4, 8, 16)).train()
    info = receptive_field_info(model, (3, 32, 32))
    assert model.training
    assert info["rf"] == 22 and info["jump"] == (8, 8) and info["size"] == (4, 4)
    assert [l["rf"][0] for l in info["layers"]] == [3, 4, 8, 10, 18, 22, 46]  # last: global pooling


@pytest.mark.parametrize("kernel, bottleneck, rf", [(3, False, 22), (5, False, 36), (7, False, 50),
                                                    (3, True, 22)])
def test_effective_field_lies_inside_theoretical(kernel, bottleneck, rf):
    torch.manual_seed(0)
    model = KernelCNN(kernel, (4, 8, 8), bottleneck=bottleneck)
    info = receptive_field_info(model, (3, 48, 48))
    assert info["rf"] == rf
    erf = effective_receptive_field(model, torch.randn(2, 3, 48, 48))
    assert erf.shape == (48, 48) and erf.max() == 1
    cy, cx = (s + (n // 2) * j for s, n, j in zip(info["start"], info["size"], info["jump"]))
    ys, xs = torch.nonzero(erf).T
    assert (xs - cx).abs().max() <= rf / 2 and (ys - cy).abs().max() <= rf / 2
    assert erf_extent(erf, (cx, cy), 1.0) <= rf + 1


def test_erf_extent():
    erf = torch.zeros(9, 9)
    erf[4, 4] = 1
    assert erf_extent(erf, (4, 4)) == 1
    erf[4, 6] = 1  # half the mass two pixels away
    assert erf_extent(erf, (4, 4), 0.9) == 4


@pytest.mark.parametrize("in_channels", [3, 1])
def test_kernel_variants_have_matched_parameters(in_channels):
    specs = kernel_models(SimpleNamespace(shape=(in_channels, 32, 32), classes=range(10)))
    counts = [count_parameters(s.build()) for s in specs]
    assert [s.name for s in specs] == ["3x3", "5x5", "7x7", "1x1+3x3"]
    assert max(counts) <= 1.03 * min(counts), counts
    kernels = {max(m.kernel_size) for s in specs for m in s.build().modules() if isinstance(m, nn.Conv2d)}
    assert kernels == {1, 3, 5, 7}
    x = torch.randn(2, in_channels, 28 + 4 * (in_channels == 3), 28 + 4 * (in_channels == 3))
    assert all(s.build()(x).shape == (2, 10) for s in specs)


def test_depth_models():
    specs = {s.name: s.build() for s in depth_models(SimpleNamespace(shape=(3, 32, 32), classes=range(10)))}
    convs = {n: sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in net.modules())
             for n, net in specs.items()}
    assert convs == {"Plain-2": 2, "Plain-4": 4, "Plain-9": 9, "Plain-9-noBN": 9, "Residual-9": 9,
                     "Plain-9-noBN-He": 9, "Residual-9-noBN": 9, "Plain-9-noBN-noBias": 9,
                     "Plain-21": 21, "Residual-21": 21}
    for name in ("Plain-9-noBN-He", "Residual-9-noBN"):
        assert not any(isinstance(m, nn.BatchNorm2d) for m in specs[name].modules())
    # He init: conv weights with std sqrt(2 / fan_in); PyTorch's default is far smaller
    conv = next(m for m in specs["Plain-9-noBN-He"].modules() if isinstance(m, nn.Conv2d) and m.in_channels == 16)
    assert conv.weight.std().item() == pytest.approx((2 / (16 * 9)) ** 0.5, rel=0.1)
    default = next(m for m in specs["Plain-9-noBN"].modules() if isinstance(m, nn.Conv2d) and m.in_channels == 16)
    assert default.weight.std().item() < 0.7 * conv.weight.std().item()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in specs["Plain-9-noBN"].modules())
    # without BN the residual net's block convs have no biases; the bias-free plain control matches
    # it but for the shortcuts (the 1x1 projection), the default plain net has 8 convs' biases more
    no_bias = count_parameters(specs["Plain-9-noBN-noBias"])
    assert count_parameters(specs["Residual-9-noBN"]) - no_bias == DEPTH_WIDTHS[0] * DEPTH_WIDTHS[1]
    assert count_parameters(specs["Plain-9-noBN"]) - no_bias == 4 * DEPTH_WIDTHS[0] + 4 * DEPTH_WIDTHS[1]
    # the residual twin differs from Plain-9 only by its shortcuts (one 1x1 projection + BN)
    extra = count_parameters(specs["Residual-9"]) - count_parameters(specs["Plain-9"])
    assert extra == DEPTH_WIDTHS[0] * DEPTH_WIDTHS[1] + 2 * DEPTH_WIDTHS[1]
    assert receptive_field(specs["Plain-9"], (3, 32, 32)) == receptive_field(specs["Residual-9"], (3, 32, 32))
    with pytest.raises(ValueError):
        ResidualCNN(8)
    assert PlainCNN(8)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_task2_quick_end_to_end(tmp_path, data_dir):
    proc = run_script("homework_cnn_architecture_analysis.py", *quick_args(tmp_path, data_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    results, plots = tmp_path / "results" / "architecture_analysis", tmp_path / "plots" / "architecture_analysis"
    kernels = [json.loads((results / "kernels" / f"{m}_seed0.json").read_text())
               for m in ("3x3", "5x5", "7x7", "1x1+3x3")]
    assert [r["receptive_field"] for r in kernels] == [22, 36, 50, 22]
    assert max(r["params"] for r in kernels) <= 1.03 * min(r["params"] for r in kernels)
    assert all(r["epochs"] == 1 and r["config"]["quick"] and r["erf90"] >= 1 for r in kernels)
    table = (results / "kernels" / "table.md").read_text()
    assert "теор. RF" in table and "--quick" in table and table.count("\n| ") >= 5
    for name in ("first_layer_activations", "first_layer_filters", "effective_receptive_field",
                 "learning_curves"):
        assert (plots / "kernels" / f"cifar10_{name}.png").stat().st_size > 0

    for m in ("Plain-2", "Plain-4", "Plain-9", "Residual-9", "Plain-9-noBN", "Plain-9-noBN-He",
              "Residual-9-noBN", "Plain-9-noBN-noBias", "Plain-21", "Residual-21"):
        r = json.loads((results / "depth" / f"{m}_seed0.json").read_text())
        assert r["grad_ratio_init"] is None or r["grad_ratio_init"] > 0
        assert (r["grad_ratio_init"] is None) == (r["grad_ratio_init_per_weight"] is None)
        assert len(r["grad_norms_init"]) == len(r["grad_layers"])
        assert (plots / "depth" / f"cifar10_{m}_feature_maps.png").is_file()
        assert (plots / "depth" / f"cifar10_{m}_gradient_flow.png").is_file()
    assert (plots / "depth" / "cifar10_gradient_norms.png").is_file()
    assert "‖g₁‖/‖g_L‖" in (results / "depth" / "table.md").read_text()
    gradients = (results / "depth" / "gradients.md").read_text()
    assert "то же на вес, init" in gradients and gradients.count("\n| ") >= 11  # header + 10 models
    assert "Residual-21 − Plain-21" in (results / "depth" / "contrasts.md").read_text()
    assert all(r["mflops"] > 0 for r in kernels) and "MFLOPs" in table


def test_bad_dataset_is_a_cli_error(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["homework_cnn_architecture_analysis.py", "--dataset", "svhn"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
