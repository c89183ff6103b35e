"""The one path from an `ArchSpec` to a PyTorch module.

The graph is interpreted once, at build time: each live block becomes a prebuilt node that knows
the slots of its inputs, and the forward pass is a flat loop over those nodes. Features are
dropped as soon as no later node needs them.

How several endpoints reach the head (the documented rule): every endpoint is resized
(bilinear) to the head level's resolution and the results are summed; the ASPP runs on the sum.
When ``scaling.endpoint_channels`` is set each endpoint first goes through a 1x1 conv-BN-ReLU to
that width (SpineNet's endpoints), otherwise all endpoints must have the same width (validated).
A DeepLabv3+ head also takes the raw output of the last block at ``head.decoder_level``.

Feature sizes: level L has ceil(H / 2^L) x ceil(W / 2^L) pixels for any input H x W, because the
stem and every stride-2 conv or pool in the network pads 'same'; so any input size works and
logits come back at the input's size.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces.spec import MAX_CLASSES, STEM, ArchSpec, scaled_width

from .layers import (
    ASPP,
    ConvBNAct,
    DeepLabV3Head,
    DeepLabV3PlusHead,
    Resample,
    Stem,
    block_group,
    init_weights,
)


def level_size(height: int, width: int, level: int) -> tuple[int, int]:
    # ceil(h / 2**L) written with floor division of non-negatives: ONNX's integer division
    # truncates toward zero, so the -(-h // s) idiom would export as a floor.
    stride = 2**level
    return (height + stride - 1) // stride, (width + stride - 1) // stride


class ChainNode(nn.Module):
    """A block fed directly by one parent (ResNet style); it may stride once."""

    def __init__(self, source: int, body: nn.Module) -> None:
        super().__init__()
        self.source = source
        self.body = body

    def forward(self, feats: list[Tensor | None], height: int, width: int) -> Tensor:
        return self.body(feats[self.source])


class FuseNode(nn.Module):
    """SpineNet fusion: resample each parent, add the absorbed dead ends, ReLU, then the block."""

    def __init__(
        self, level: int, sources: list[int], resamplers: list[Resample], absorbed: list[int], body: nn.Module
    ) -> None:
        super().__init__()
        self.level = level
        self.sources = sources
        self.resamplers = nn.ModuleList(resamplers)
        self.absorbed = absorbed
        self.relu = nn.ReLU(inplace=True)
        self.body = body

    def forward(self, feats: list[Tensor | None], height: int, width: int) -> Tensor:
        size = level_size(height, width, self.level)
        x = None
        for source, resample in zip(self.sources, self.resamplers):
            y = resample(feats[source], size)
            x = y if x is None else x + y
        for source in self.absorbed:
            x = x + feats[source]
        return self.body(self.relu(x))


class Backbone(nn.Module):
    """Stem and live blocks of a spec; ``forward`` returns ``{level: endpoint feature}``."""

    def __init__(self, spec: ArchSpec, decoder_tap: bool = False) -> None:
        super().__init__()
        self.spec = spec
        scaling = spec.scaling
        live = sorted(spec.live)
        slot = {STEM: 0, **{block: k + 1 for k, block in enumerate(live)}}
        self.stem = Stem(spec.stem_channels)
        nodes: list[nn.Module] = []
        for i in live:
            b = spec.blocks[i]
            width = scaled_width(b.width, scaling)
            out_channels = b.out_channels(scaling)
            if b.connection == "chain":
                parent = b.parents[0]
                stride = 2 ** (b.level - spec.level_of(parent))
                body = block_group(b.type, spec.channels_of(parent), width, scaling.block_repeats, stride, b.dilation)
                nodes.append(ChainNode(slot[parent], body))
            else:
                resamplers = [
                    Resample(
                        spec.channels_of(p),
                        int(spec.resample_width_of(p) * scaling.resample_alpha),
                        out_channels,
                        steps=b.level - spec.level_of(p),
                    )
                    for p in b.parents
                ]
                body = block_group(b.type, out_channels, width, scaling.block_repeats, 1, b.dilation)
                absorbed = [slot[j] for j in spec.absorbed.get(i, ())]
                nodes.append(FuseNode(b.level, [slot[p] for p in b.parents], resamplers, absorbed, body))
        self.nodes = nn.ModuleList(nodes)

        self.endpoint_levels = sorted(spec.endpoints)
        self.endpoint_slots = [slot[spec.endpoints[level]] for level in self.endpoint_levels]
        channels = scaling.endpoint_channels
        self.endpoint_convs = nn.ModuleList(
            ConvBNAct(spec.channels_of(spec.endpoints[level]), channels, 1) if channels else nn.Identity()
            for level in self.endpoint_levels
        )
        self.out_channels = channels or spec.channels_of(spec.endpoints[self.endpoint_levels[0]])
        self.tap_slot = slot[spec.decoder_source] if decoder_tap and spec.decoder_source is not None else None

        # Free each feature right after its last reader, unless it is returned.
        keep = set(self.endpoint_slots) | ({self.tap_slot} if self.tap_slot is not None else set())
        last_use: dict[int, int] = {}
        for step, node in enumerate(self.nodes):
            sources = [node.source] if isinstance(node, ChainNode) else node.sources + node.absorbed
            for s in sources:
                last_use[s] = step
        self.release = [
            tuple(s for s, last in last_use.items() if last == step and s not in keep) for step in range(len(nodes))
        ]
        init_weights(self)

    def features(self, x: Tensor) -> tuple[list[Tensor], Tensor | None]:
        """Endpoint features (in ``endpoint_levels`` order) and the decoder tap (or None)."""
        height, width = x.shape[-2], x.shape[-1]
        feats: list[Tensor | None] = [self.stem(x)]
        for node, release in zip(self.nodes, self.release):
            feats.append(node(feats, height, width))
            for s in release:
                feats[s] = None
        endpoints = [conv(feats[s]) for conv, s in zip(self.endpoint_convs, self.endpoint_slots)]
        tap = feats[self.tap_slot] if self.tap_slot is not None else None
        return endpoints, tap

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        endpoints, _ = self.features(x)
        return dict(zip(self.endpoint_levels, endpoints))


class SegmentationModel(nn.Module):
    """Backbone + DeepLab head; returns logits at the input's size."""

    def __init__(self, spec: ArchSpec, num_classes: int) -> None:
        super().__init__()
        head = spec.head
        self.spec = spec
        self.num_classes = num_classes
        self.backbone = Backbone(spec, decoder_tap=head.kind == "deeplabv3plus")
        self.head_level = head.level
        self.head_index = self.backbone.endpoint_levels.index(head.level)
        aspp = ASPP(self.backbone.out_channels, head.aspp_rates, head.aspp_channels, head.aspp_dropout, head.separable)
        if head.kind == "deeplabv3":
            self.head: nn.Module = DeepLabV3Head(num_classes, aspp, head.aspp_channels)
        else:
            low_channels = spec.channels_of(spec.decoder_source)
            self.head = DeepLabV3PlusHead(
                low_channels, num_classes, aspp, head.aspp_channels, head.decoder_channels, head.separable
            )
        init_weights(self.head)

    def forward(self, x: Tensor) -> Tensor:
        endpoints, low_level = self.backbone.features(x)
        size = endpoints[self.head_index].shape[-2:]
        merged = endpoints[self.head_index]
        for k, feature in enumerate(endpoints):
            if k != self.head_index:
                merged = merged + F.interpolate(feature, size=size, mode="bilinear", align_corners=False)
        logits = self.head(merged, low_level)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_backbone(spec: ArchSpec) -> Backbone:
    """The backbone of ``spec``: a module mapping images to ``{level: endpoint feature}``."""
    return Backbone(spec)


def build_model(spec: ArchSpec, num_classes: int) -> SegmentationModel:
    """The whole segmentation network of ``spec`` for ``num_classes`` classes."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be a positive integer of at most {MAX_CLASSES}, got {num_classes!r}")
    return SegmentationModel(spec, num_classes)
