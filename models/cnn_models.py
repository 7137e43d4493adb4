"""Networks compared in the homework: fully-connected, simple CNN and residual CNNs.

The residual networks follow He et al.'s CIFAR layout (a 3x3 stem, then stages whose widths
double while the resolution halves), written like torchvision's ``models/resnet.py``: one
class per block, with ``expansion`` as a class attribute and an explicit ``downsample``.
"""
from __future__ import annotations

from typing import Sequence, Type

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding; no bias because BatchNorm follows."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class FullyConnected(nn.Module):
    """A multilayer perceptron on flattened pixels: Linear-BatchNorm-ReLU(-Dropout) layers."""

    def __init__(self, input_shape: Sequence[int], num_classes: int = 10,
                 hidden: Sequence[int] = (512, 256, 128), dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(torch.tensor(input_shape).prod())
        for h in hidden:
            layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SimpleCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool stages, then global average pooling and a linear classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 channels: Sequence[int] = (32, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c in channels:
            layers += [conv3x3(in_channels, c), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            in_channels = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def zero_init_residual(self) -> None:
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


def CNNWithResidual(in_channels: int = 1, num_classes: int = 10,
                    widths: Sequence[int] = (32, 64, 128), layers: Sequence[int] = (1, 1, 1),
                    dropout: float = 0.0) -> ResNet:
    """The homework's "CNN with residual blocks": a small ResNet of BasicBlocks."""
    return ResNet(BasicBlock, layers, widths, in_channels, num_classes, dropout)
