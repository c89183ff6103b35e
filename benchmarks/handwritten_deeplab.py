"""A plainly hand-written DeepLabv3-ResNet-50 (output stride 16): the speed and layer reference.

Written the way one writes the network by hand (torchvision style): stages of bottlenecks, the
last stage dilated, then the ASPP head. It has the same layers, in the same registration order,
as ``nas.model.build_model(get_spec("deeplabv3-resnet50"), classes)``, so weights can be copied across.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DeepLabV3ResNet50(nn.Module):
    def __init__(self, num_classes: int = 21) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, inplanes = [], 64
        # (blocks, planes, stride, dilation of the first block, dilation of the others)
        for blocks, planes, stride, first, rest in (
            (3, 64, 1, 1, 1),
            (4, 128, 2, 1, 1),
            (6, 256, 2, 1, 1),
            (3, 512, 1, 1, 2),
        ):
            stage = [Bottleneck(inplanes, planes, stride, first)]
            inplanes = planes * 4
            stage += [Bottleneck(inplanes, planes, 1, rest) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers

        def cbr(cin: int, cout: int, k: int = 1, d: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, k, padding=d * (k // 2), dilation=d, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.aspp = nn.ModuleList(
            [nn.Sequential(*cbr(2048, 256))]
            + [nn.Sequential(*cbr(2048, 256, 3, rate)) for rate in (6, 12, 18)]
            + [nn.Sequential(nn.AdaptiveAvgPool2d(1), *cbr(2048, 256))]
        )
        self.project = nn.Sequential(*cbr(5 * 256, 256), nn.Dropout(0.5))
        self.conv = nn.Sequential(*cbr(256, 256, 3))
        self.classifier = nn.Conv2d(256, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        y = self.layer4(self.layer3(self.layer2(self.layer1(y))))
        branches = [branch(y) for branch in self.aspp[:-1]]
        pooled = self.aspp[-1](y)
        branches.append(F.interpolate(pooled, size=y.shape[-2:], mode="bilinear", align_corners=False))
        y = self.classifier(self.conv(self.project(torch.cat(branches, dim=1))))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)
