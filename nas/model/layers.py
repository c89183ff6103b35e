"""The layers every network is made of: conv-BN-ReLU, ResNet blocks, SpineNet resampling, ASPP.

Each module reads like its paper; `nas.model.builder` only wires them together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBNAct(nn.Sequential):
    """conv (no bias) -> BN -> optional ReLU; 'same' padding for odd kernels at any dilation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SeparableConvBNAct(nn.Sequential):
    """Depthwise 3x3 (dilated) conv -> BN -> ReLU -> pointwise conv -> BN -> ReLU (DeepLabv3+)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__(
            ConvBNAct(in_channels, in_channels, 3, dilation=dilation, groups=in_channels),
            ConvBNAct(in_channels, out_channels, 1),
        )


def conv3x3(in_channels: int, out_channels: int, dilation: int = 1, separable: bool = False) -> nn.Module:
    if separable:
        return SeparableConvBNAct(in_channels, out_channels, dilation)
    return ConvBNAct(in_channels, out_channels, 3, dilation=dilation)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 -> 3x3 (stride, dilation) -> 1x1 (x4), projection shortcut when needed."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = ConvBNAct(in_channels, width, 1)
        self.conv2 = ConvBNAct(width, width, 3, stride=stride, dilation=dilation)
        self.conv3 = ConvBNAct(width, out_channels, 1, act=False)
        self.shortcut = (
            ConvBNAct(in_channels, out_channels, 1, stride=stride, act=False)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class Residual(nn.Module):
    """ResNet basic block: two 3x3 convs (the first strided), projection shortcut when needed."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, width, 3, stride=stride, dilation=dilation)
        self.conv2 = ConvBNAct(width, width, 3, dilation=dilation, act=False)
        self.shortcut = (
            ConvBNAct(in_channels, width, 1, stride=stride, act=False)
            if stride != 1 or in_channels != width
            else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


BLOCKS: dict[str, type[Bottleneck] | type[Residual]] = {"bottleneck": Bottleneck, "residual": Residual}


def block_group(
    block_type: str, in_channels: int, width: int, repeats: int, stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    """``repeats`` blocks; only the first may stride or project (SpineNet's and ResNet's rule)."""
    cls = BLOCKS[block_type]
    layers = [cls(in_channels, width, stride, dilation)]
    layers += [cls(width * cls.expansion, width, 1, dilation) for _ in range(repeats - 1)]
    return nn.Sequential(*layers)


class Stem(nn.Sequential):
    """7x7/2 conv -> BN -> ReLU -> 3x3/2 max-pool: stride 4 (level 2)."""

    def __init__(self, out_channels: int = 64) -> None:
        super().__init__(ConvBNAct(3, out_channels, 7, stride=2), nn.MaxPool2d(3, stride=2, padding=1))


class Resample(nn.Module):
    """SpineNet's cross-scale resampling of one parent to a target block's level and width.

    1x1 conv-BN-ReLU to the reduced width, then 3x3/2 conv-BN-ReLU and 3x3/2 max-pools to go
    down ``steps`` levels, or nearest upsampling to go up, then 1x1 conv + BN (no ReLU: the
    activation follows the sum of all parents).
    """

    def __init__(self, in_channels: int, reduced: int, out_channels: int, steps: int) -> None:
        super().__init__()
        self.reduce = ConvBNAct(in_channels, reduced, 1)
        down: list[nn.Module] = []
        if steps > 0:
            down.append(ConvBNAct(reduced, reduced, 3, stride=2))
            down += [nn.MaxPool2d(3, stride=2, padding=1) for _ in range(steps - 1)]
        self.down = nn.Sequential(*down)
        self.upsample = steps < 0
        self.expand = ConvBNAct(reduced, out_channels, 1, act=False)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.down(self.reduce(x))
        if self.upsample:
            # Interpolating to the target's size (not by 2^k) keeps odd input sizes working.
            x = F.interpolate(x, size=size, mode="nearest")
        return self.expand(x)


class ASPPPooling(nn.Sequential):
    """Image-level features: global average pool -> 1x1 conv-BN-ReLU -> upsample."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), ConvBNAct(in_channels, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, one 3x3 per rate, image pooling; concat; 1x1 project."""

    def __init__(
        self,
        in_channels: int,
        rates: tuple[int, ...],
        out_channels: int = 256,
        dropout: float = 0.5,
        separable: bool = False,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNAct(in_channels, out_channels, 1)]
        branches += [conv3x3(in_channels, out_channels, rate, separable) for rate in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(ConvBNAct(len(branches) * out_channels, out_channels, 1), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class DeepLabV3Head(nn.Module):
    """ASPP -> 3x3 conv-BN-ReLU -> 1x1 classifier."""

    def __init__(self, num_classes: int, aspp: ASPP, channels: int) -> None:
        super().__init__()
        self.aspp = aspp
        self.conv = ConvBNAct(channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor, low_level: Tensor | None = None) -> Tensor:
        return self.classifier(self.conv(self.aspp(x)))


class DeepLabV3PlusHead(nn.Module):
    """ASPP, upsampled to the low-level features (projected to 48 channels), concat, two 3x3 convs."""

    def __init__(
        self,
        low_level_channels: int,
        num_classes: int,
        aspp: ASPP,
        channels: int,
        decoder_channels: int = 48,
        separable: bool = False,
    ) -> None:
        super().__init__()
        self.aspp = aspp
        self.low_level = ConvBNAct(low_level_channels, decoder_channels, 1)
        self.fuse = nn.Sequential(
            conv3x3(channels + decoder_channels, channels, separable=separable),
            conv3x3(channels, channels, separable=separable),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor, low_level: Tensor | None = None) -> Tensor:
        assert low_level is not None, "DeepLabv3+ needs low-level features"
        low = self.low_level(low_level)
        x = F.interpolate(self.aspp(x), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([x, low], dim=1)))


def init_weights(module: nn.Module) -> None:
    """He initialisation for convs (fan-out, as in torchvision's ResNet); BN to identity."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
