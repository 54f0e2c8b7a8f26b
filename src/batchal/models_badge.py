"""The BADGE paper's models, as its code (JordanAsh/badge) builds them, in plain PyTorch (no
torchvision). None has dropout: BADGE's protocol uses one deterministic prediction (K = 1).

- ``badge_mlp``: flatten, Linear(d, E), ReLU, Linear(E, C, bias=False); E = 256 for images,
  1,024 for tabular inputs (the code's ``mlpMod`` with its ``embSize``).
- ``resnet18_narrow``: the code's ResNet-18 with 16/32/64/128 channels (not the usual
  64-512): a 3x3 stem, four stages of two basic blocks (strides 1, 2, 2, 2), global average
  pooling, a linear layer; embedding 128.
- ``vgg16``: the code builds VGG16 (the paper's text says VGG-11): the 13 conv layers of
  configuration D with batch norm and ReLU, max-pools, then Linear(512, C); embedding 512 for
  32x32 inputs.

The last module is always the output ``nn.Linear``, whose input is the embedding that BADGE,
Coreset and ALBL use (``batchal.predict_embeddings``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def badge_mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    embedding = 1024 if len(input_shape) == 1 else 256
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), embedding), nn.ReLU(),
                         nn.Linear(embedding, num_classes, bias=False))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class NarrowResNet18(nn.Module):
    def __init__(self, channels: int, num_classes: int, widths=(16, 32, 64, 128)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for n, width in enumerate(widths):
            for block in range(2):
                layers.append(_BasicBlock(cin, width, 2 if (n > 0 and block == 0) else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        return self.linear(self.pool(self.layers(self.stem(x))))


def resnet18_narrow(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"resnet18_narrow needs image inputs [channels, height, width], got input shape {input_shape}")
    return NarrowResNet18(input_shape[0], num_classes)


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    def __init__(self, channels: int, side: int, num_classes: int):
        super().__init__()
        layers, cin = [], channels
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                side //= 2
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.linear = nn.Linear(512 * side * side, num_classes)

    def forward(self, x):
        return self.linear(self.features(x))


def vgg16(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) != 3 or input_shape[1] != input_shape[2] or input_shape[1] < 32:
        raise ValueError(f"vgg16 needs square images of at least 32x32 pixels [channels, side, side], got input shape {input_shape}")
    return VGG16(input_shape[0], input_shape[1], num_classes)
