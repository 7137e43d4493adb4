"""Networks compared in the homework: fully-connected, simple CNN and residual CNNs.

The residual networks follow He et al.'s CIFAR layout (a 3x3 stem, then stages whose widths
double while the resolution halves), written like torchvision's ``models/resnet.py``: one
class per block, with ``expansion`` as a class attribute and an explicit ``downsample``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, Type

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _forward_zero_image(model: nn.Module, input_shape: Sequence[int]) -> None:
    """One forward pass on a zero image of ``input_shape`` (C, H, W), in eval mode and without
    gradients, for counting what the model does; its mode is kept."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass on one image of ``input_shape`` (C, H, W), a multiply-add
    counted as 2 (torch.utils.flop_counter). The model runs once in eval mode; its mode is kept."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        _forward_zero_image(model, input_shape)
    return counter.get_total_flops()


def count_activations(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Elements of the feature maps that the convolutions, BatchNorms and ReLUs of ``model``
    write in one forward pass on one image: the memory traffic that element-wise layers add to
    the FLOPs (a net can be cheap in FLOPs and still slow on a CPU). Eval mode; its mode is kept."""
    total = 0

    def count(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel()
    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU))]
    try:
        _forward_zero_image(model, input_shape)
    finally:
        for h in hooks:
            h.remove()
    return total


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding; no bias because BatchNorm follows."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class FullyConnected(nn.Module):
    """A multilayer perceptron on flattened pixels: Linear-BatchNorm-ReLU(-Dropout) layers.

    ``scaled_head``: the classifier of the fast recipe, as in :class:`CNNWithResidual` (bias-free,
    unit-std weights, output divided by its input width), so both take the same optimiser."""

    def __init__(self, input_shape: Sequence[int], num_classes: int = 10,
                 hidden: Sequence[int] = (512, 256, 128), dropout: float = 0.0,
                 scaled_head: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(torch.tensor(input_shape).prod())
        for h in hidden:
            layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        head = nn.Linear(width, num_classes, bias=not scaled_head)
        if scaled_head:
            with torch.no_grad():
                head.weight /= head.weight.std()
        layers.append(head)
        self.net = nn.Sequential(*layers)
        self.head_scale = 1 / width if scaled_head else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net(x)
        return x * self.head_scale if self.head_scale != 1.0 else x


class SimpleCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool stages, then a small fully-connected classifier on the flattened maps."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 channels: Sequence[int] = (32, 64), input_size: int = 28, hidden: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c in channels:
            layers += [conv3x3(in_channels, c), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            in_channels = c
        self.features = nn.Sequential(*layers)
        side = input_size // 2 ** len(channels)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * side * side, hidden),
                                        nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut.

    ``norm_layer`` builds the normalisation after each conv (BatchNorm; ``nn.Identity`` for a
    block without normalisation, as in torchvision's ``norm_layer``), ``act_layer`` its activation.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
                 act_layer: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True)) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = act_layer()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def zero_init_residual(self) -> None:
        if isinstance(self.bn2, nn.BatchNorm2d):
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """CIFAR-style residual network: 3x3 stem, ``len(layers)`` stages, global pooling, linear.

    ``widths[i]`` is the number of planes of stage ``i``; every stage after the first halves
    the resolution. ``dropout`` (before the classifier) is the only regularisation inside the
    model; the rest (augmentation, label smoothing, weight decay) lives in the training config.
    """

    def __init__(self, block: Type[nn.Module] = BasicBlock, layers: Sequence[int] = (1, 1, 1),
                 widths: Sequence[int] = (32, 64, 128), in_channels: int = 3,
                 num_classes: int = 10, dropout: float = 0.0, block_kwargs: dict | None = None) -> None:
        super().__init__()
        self.block_kwargs = block_kwargs or {}
        self.inplanes = widths[0]
        self.stem = nn.Sequential(conv3x3(in_channels, self.inplanes), nn.BatchNorm2d(self.inplanes),
                                  nn.ReLU(inplace=True))
        self.stages = nn.Sequential(*[
            self._make_stage(block, planes, blocks, stride=1 if i == 0 else 2)
            for i, (planes, blocks) in enumerate(zip(widths, layers))])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(self.inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each residual branch: every block starts as the identity,
        # which lets a deep stack train from the first step (Goyal et al., 2017).
        for m in self.modules():
            if m is not self and hasattr(m, "zero_init_residual"):
                m.zero_init_residual()

    def _make_stage(self, block: Type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        expansion = getattr(block, "expansion", 1)
        downsample = None
        if stride != 1 or self.inplanes != planes * expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * expansion, stride),
                                       nn.BatchNorm2d(planes * expansion))
        layers = [block(self.inplanes, planes, stride, downsample, **self.block_kwargs)]
        self.inplanes = planes * expansion
        layers += [block(self.inplanes, planes, **self.block_kwargs) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


def conv_pool_bn(inplanes: int, planes: int, act: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True)
                 ) -> nn.Sequential:
    """3x3 conv, 2x2 max-pool, BN, activation: a stage transition that widens and halves the resolution.

    Pooling after the conv (as in Page's ResNet-9, the DAWNBench CIFAR-10 winner) keeps the costly
    high-resolution stages narrow and puts the channels where the maps are small; at a fixed budget
    of FLOPs this trains to a given accuracy in fewer epochs than strided blocks.
    """
    return nn.Sequential(conv3x3(inplanes, planes), nn.MaxPool2d(2), nn.BatchNorm2d(planes), act())


class WhiteningStem(nn.Module):
    """A 2x2 convolution whose frozen filters whiten the image patches (airbench, Jordan 2024):
    the eigenvectors of the patches' covariance, scaled by 1/sqrt(eigenvalue), and their negatives
    (so that a following GELU/ReLU loses nothing). Only the bias trains, and only for the first
    epochs (``TrainConfig.whiten_bias_epochs``). Set the filters with :meth:`init_from_data`.
    """

    def __init__(self, in_channels: int = 3, eps: float = 5e-4) -> None:
        super().__init__()
        self.eps = eps
        self.conv = nn.Conv2d(in_channels, 2 * in_channels * 4, 2, bias=True)
        self.conv.weight.requires_grad = False
        nn.init.zeros_(self.conv.bias)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """``images``: normalised training images (N, C, H, W), a few thousand suffice."""
        c = images.shape[1]
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)      # N, C, H-1, W-1, 2, 2
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4)
        eigenvalues, vectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = vectors.T.reshape(-1, c, 2, 2) / torch.sqrt(eigenvalues + self.eps).view(-1, 1, 1, 1)
        self.conv.weight.copy_(torch.cat((filters, -filters)).to(self.conv.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU}


class CNNWithResidual(nn.Module):
    """The homework's "CNN with residual blocks": a 3x3 stem of ``widths[0]`` channels, then one
    stage per later width: a conv-pool transition followed by ``blocks[i]`` BasicBlocks at that
    resolution, then global max pooling and a linear classifier.

    ``dropout`` (before the classifier) is the only regularisation inside the model; the rest
    (augmentation, label smoothing, weight decay) lives in the training config.

    Architecture options from airbench (all off by default, which is the task-1 model):
    ``whiten``: a frozen patch-whitening 2x2 stem (24 channels for RGB; ``widths[0]`` must say so);
    ``dirac``: every 3x3 conv starts as the identity on its first ``in`` output channels, so the
    network starts close to a shallow one; ``frozen_bn_scale``: BatchNorm scales stay 1 (only the
    shifts train; blocks then cannot be zero-initialised, Dirac init takes that role);
    ``activation``: "relu" or "gelu"; ``scaled_head``: a bias-free classifier with unit-std
    weights whose output is divided by its input width (pairs with a large head learning rate).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10,
                 widths: Sequence[int] = (16, 32, 64, 128), blocks: Sequence[int] = (1, 1, 1),
                 dropout: float = 0.0, whiten: bool = False, dirac: bool = False,
                 frozen_bn_scale: bool = False, activation: str = "relu",
                 scaled_head: bool = False) -> None:
        super().__init__()
        if len(blocks) != len(widths) - 1:
            raise ValueError("need one entry of `blocks` per stage (len(widths) - 1)")
        if whiten and widths[0] != 8 * in_channels:
            raise ValueError(f"the whitening stem has {8 * in_channels} channels: set widths[0] to it")
        act = ACTIVATIONS[activation]
        if whiten:
            self.stem = nn.Sequential(WhiteningStem(in_channels), act())
        else:
            self.stem = nn.Sequential(conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]), act())
        stages = []
        for inplanes, planes, n in zip(widths[:-1], widths[1:], blocks):
            stages.append(nn.Sequential(conv_pool_bn(inplanes, planes, act),
                                        *[BasicBlock(planes, planes, act_layer=act) for _ in range(n)]))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.scaled_head = scaled_head
        self.fc = nn.Linear(widths[-1], num_classes, bias=not scaled_head)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.weight.requires_grad:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if dirac:
                    nn.init.dirac_(m.weight.data[:m.in_channels])
            if isinstance(m, nn.BatchNorm2d) and frozen_bn_scale:
                m.weight.requires_grad = False
            if isinstance(m, BasicBlock) and not frozen_bn_scale:
                m.zero_init_residual()
        if scaled_head:
            with torch.no_grad():
                self.fc.weight /= self.fc.weight.std()

    def init_from_data(self, images: torch.Tensor) -> None:
        """Data-dependent initialisation (the whitening stem's filters), called by train_model."""
        if isinstance(self.stem[0], WhiteningStem):
            self.stem[0].init_from_data(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.stages(self.stem(x))), 1)
        x = self.fc(self.dropout(x))
        return x / self.fc.in_features if self.scaled_head else x


# --- Task 3: residual block variants (bottleneck and wide; BasicBlock is above) ---------------

class BottleneckBlock(nn.Module):
    """1x1 (reduce) - 3x3 - 1x1 (expand x ``expansion``) with an identity or projection shortcut.

    The 3x3 convolution works on ``planes`` channels while the block's input and output have
    ``planes * expansion``: most of the 3x3 cost is saved, so a block of the same output width
    has far fewer parameters and FLOPs than a BasicBlock (He et al., 2016, ResNet-50).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # stride on the 3x3, as in torchvision (v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def zero_init_residual(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class WideBlock(nn.Module):
    """Two 3x3 convolutions ``k`` times wider than ``planes``, optional dropout between them.

    The widening factor is the class attribute ``expansion`` (so ``ResNet`` builds the matching
    shortcuts); :meth:`widen` makes the class for another ``k``. As in Wide ResNets (Zagoruyko &
    Komodakis, 2016), width replaces depth: parameters grow as k^2, the depth stays the same.
    """

    expansion = 2

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        width = planes * self.expansion
        self.conv1 = conv3x3(inplanes, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @classmethod
    def widen(cls, k: int) -> Type["WideBlock"]:
        """The WideBlock class with widening factor ``k``."""
        return type(f"WideBlock{k}", (cls,), {"expansion": k})

    def zero_init_residual(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.dropout(self.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


# --- Task 2: kernel-size and depth studies

def conv_unit(in_planes: int, out_planes: int, kernel: int = 3, batchnorm: bool = True,
              bias: bool | None = None) -> nn.Sequential:
    """Conv (same padding) - BatchNorm - ReLU; by default the conv keeps its bias only when there
    is no BN (``bias`` overrides that)."""
    layers: list[nn.Module] = [nn.Conv2d(in_planes, out_planes, kernel, padding=kernel // 2,
                                         bias=not batchnorm if bias is None else bias)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(out_planes))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class KernelCNN(nn.Module):
    """Three stages of one kernel size, each conv-BN-ReLU then 2x2 max-pooling; global pooling, linear.

    ``bottleneck=True`` is the "1x1+3x3" variant: each stage is a 1x1 conv to half the stage's
    width, then the ``kernel`` conv. ``features`` ends at the last spatial map (after the third
    pooling), so its receptive field is the network's.
    """

    def __init__(self, kernel: int = 3, widths: Sequence[int] = (24, 48, 96), in_channels: int = 3,
                 num_classes: int = 10, bottleneck: bool = False) -> None:
        super().__init__()
        stages = []
        for w in widths:
            units = [conv_unit(in_channels, max(1, w // 2), 1), conv_unit(max(1, w // 2), w, kernel)] \
                if bottleneck else [conv_unit(in_channels, w, kernel)]
            stages.append(nn.Sequential(*units, nn.MaxPool2d(2)))
            in_channels = w
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    def feature_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The maps of each stage before its pooling: ``stage1`` (full resolution), ``stage2``, ..."""
        taps = {}
        for i, stage in enumerate(self.features, 1):
            x = stage[:-1](x)
            taps[f"stage{i}"] = x
            x = stage[-1](x)
        return taps


def widths_for_budget(build: Callable[[tuple[int, ...]], nn.Module], ratios: Sequence[float],
                      budget: int) -> tuple[int, ...]:
    """Channel widths in the proportions ``ratios`` whose model has about ``budget`` parameters.

    A common scale is found by bisection; rounding it moves the count by a few per cent, so the
    last width (the count is linear in it) is then tuned to land as close to ``budget`` as an
    integer width allows. This is what makes the kernel variants comparable by construction.
    """
    def widths(scale: float) -> tuple[int, ...]:
        return tuple(max(1, round(scale * r)) for r in ratios)

    def params(ws: tuple[int, ...]) -> int:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            return count_parameters(build(ws))

    lo, hi = 0.1, 4096.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if params(widths(mid)) < budget else (lo, mid)
    best = widths(hi)
    step = max(2, best[-1] // 4)
    candidates = [best[:-1] + (w,) for w in range(max(1, best[-1] - step), best[-1] + step + 1)]
    return min(candidates, key=lambda ws: abs(params(ws) - budget))


def stage_sizes(depth: int) -> tuple[int, int]:
    """Convs after the stem in the two stages of PlainCNN/ResidualCNN (the later stage gets the odd one)."""
    if depth < 2:
        raise ValueError(f"depth must be at least 2 (a stem and one more conv), got {depth}")
    return (depth - 1) // 2, depth - 1 - (depth - 1) // 2


class PlainCNN(nn.Module):
    """``depth`` 3x3 conv layers without shortcuts, on the same resolution schedule at every depth.

    A stem conv at full resolution, 2x2 max-pooling, ``stage_sizes(depth)`` convs of ``widths[0]``
    channels at 1/2 resolution, pooling, the rest at ``widths[1]`` channels and 1/4 resolution,
    then global pooling and a linear layer. Only the number of convs changes with ``depth``.
    By default the weights keep PyTorch's initialisation (no variance-preserving rescaling), as a
    naive network would: with ``batchnorm=False`` this is where vanishing gradients show.
    ``init="kaiming"`` (He et al., 2015: std sqrt(2 / fan_in) for ReLU, zero biases) is the
    control that separates the initialisation from depth and normalisation. Without BN the convs
    after the stem have (randomly initialised) biases; ``conv_bias=False`` drops them, as in
    ResidualCNN's blocks, so that the residual twin differs by its shortcuts only.
    """

    def __init__(self, depth: int = 9, widths: Sequence[int] = (16, 32), in_channels: int = 3,
                 num_classes: int = 10, batchnorm: bool = True, init: str = "default",
                 conv_bias: bool | None = None) -> None:
        super().__init__()
        n1, n2 = stage_sizes(depth)
        w1, w2 = widths
        layers: list[nn.Module] = [conv_unit(in_channels, w1, 3, batchnorm), nn.MaxPool2d(2)]
        layers += [conv_unit(w1, w1, 3, batchnorm, conv_bias) for _ in range(n1)]
        layers.append(nn.MaxPool2d(2))
        layers += [conv_unit(w1 if i == 0 else w2, w2, 3, batchnorm, conv_bias) for i in range(n2)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w2, num_classes)
        kaiming_init(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    def feature_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The maps after every conv unit (or residual block), keyed ``conv<k>`` by the number of
        convolutions the signal has passed, so that plain and residual twins line up."""
        taps, convs = {}, 0
        for unit in self.features:
            x = unit(x)
            if not isinstance(unit, nn.MaxPool2d):
                convs += sum(isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 for m in unit.modules())
                taps[f"conv{convs}"] = x
        return taps


def kaiming_init(model: nn.Module, init: str) -> None:
    """``init="kaiming"``: He-normal conv and linear weights (fan_in, ReLU) and zero biases;
    ``"default"`` keeps PyTorch's own initialisation."""
    if init not in ("default", "kaiming"):
        raise ValueError(f"init must be 'default' or 'kaiming', got {init!r}")
    if init == "kaiming":
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


class ResidualCNN(nn.Module):
    """PlainCNN's twin with shortcuts: the same convs, widths, pooling and initialisation, the
    convs after the stem grouped in pairs into BasicBlocks (a 1x1 projection where the width
    changes). Each stage needs an even number of convs: depth 5, 9, 13, ... ``batchnorm=False``
    drops every normalisation (the residual control of PlainCNN's ``batchnorm=False``).
    """

    def __init__(self, depth: int = 9, widths: Sequence[int] = (16, 32), in_channels: int = 3,
                 num_classes: int = 10, batchnorm: bool = True, init: str = "default") -> None:
        super().__init__()
        n1, n2 = stage_sizes(depth)
        if n1 % 2 or n2 % 2:
            raise ValueError(f"ResidualCNN needs depth = 1 + 4k (pairs of convs per stage), got {depth}")
        w1, w2 = widths
        norm = nn.BatchNorm2d if batchnorm else (lambda c: nn.Identity())
        projection = nn.Sequential(conv1x1(w1, w2), norm(w2))
        self.features = nn.Sequential(
            conv_unit(in_channels, w1, 3, batchnorm), nn.MaxPool2d(2),
            *[BasicBlock(w1, w1, norm_layer=norm) for _ in range(n1 // 2)], nn.MaxPool2d(2),
            *[BasicBlock(w1, w2, downsample=projection, norm_layer=norm) if i == 0
              else BasicBlock(w2, w2, norm_layer=norm) for i in range(n2 // 2)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w2, num_classes)
        kaiming_init(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    feature_taps = PlainCNN.feature_taps
