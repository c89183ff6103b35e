"""Published architectures as points of the search space: SpineNet and DeepLabv3/v3+ on ResNet.

SpineNet facts (block list, FILTER_SIZE_MAP, SCALING_MAP) follow TF Model Garden's current
16-block SpineNet; the ResNets follow the standard DeepLab backbone, where the stride of the last
stage(s) is replaced by dilation and the first block of a dilated stage keeps the previous rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from .spec import STEM, ArchSpec, Block, Head, Scaling, SpecError, aspp_rates

# Base width per level (TF Model Garden FILTER_SIZE_MAP).
FILTER_SIZE_MAP = {1: 32, 2: 64, 3: 128, 4: 256, 5: 256, 6: 256, 7: 256}

# SpineNet's 16 scale-permuted blocks: (level, type, (parent offset, parent offset), is_output).
# Offsets 0 and 1 are the two level-2 stem block groups, so offset k is block k of our spec.
SPINENET_BLOCK_SPECS: tuple[tuple[int, str, tuple[int, int], bool], ...] = (
    (2, "bottleneck", (0, 1), False),
    (4, "residual", (0, 1), False),
    (3, "bottleneck", (2, 3), False),
    (4, "bottleneck", (2, 4), False),
    (6, "residual", (3, 5), False),
    (4, "bottleneck", (3, 5), False),
    (5, "residual", (6, 7), False),
    (7, "residual", (6, 8), False),
    (5, "bottleneck", (8, 9), False),
    (5, "bottleneck", (8, 10), False),
    (4, "bottleneck", (5, 10), True),
    (3, "bottleneck", (4, 10), True),
    (5, "bottleneck", (7, 12), True),
    (7, "bottleneck", (5, 14), True),
    (6, "bottleneck", (12, 14), True),
    (2, "bottleneck", (2, 13), True),
)

# name -> (endpoint filters, filter_size_scale, resample_alpha, block_repeats)
SPINENET_SCALING_MAP = {
    "49s": (128, 0.65, 0.5, 1),
    "49": (256, 1.0, 0.5, 1),
    "96": (256, 1.0, 0.5, 2),
    "143": (256, 1.0, 1.0, 3),
    "143l": (256, 1.3, 1.0, 3),
    "190": (512, 1.3, 1.0, 4),
}

RESNET_STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
RESNET_WIDTHS = (64, 128, 256, 512)


def spinenet_stem_blocks(width: int = FILTER_SIZE_MAP[2]) -> tuple[Block, Block]:
    """SpineNet's two level-2 bottleneck block groups that follow the 7x7 conv and max-pool."""
    return (
        Block(level=2, type="bottleneck", width=width, parents=(STEM,)),
        Block(level=2, type="bottleneck", width=width, parents=(0,)),
    )


def spinenet(size: str = "49", head: Head | None = None, min_level: int = 3, max_level: int = 7) -> ArchSpec:
    """SpineNet-``size`` (49s, 49, 96, 143, 143l, 190) with a DeepLabv3 head at level 4 by default.

    The endpoints are levels ``min_level``..``max_level`` (TF's defaults 3..7); they are resampled
    to the head level and summed (see `nas.model.builder`).
    """
    key = size.lower()
    if key not in SPINENET_SCALING_MAP:
        raise SpecError(f"unknown SpineNet size {size!r} (known: {', '.join(SPINENET_SCALING_MAP)})")
    endpoint_channels, scale, alpha, repeats = SPINENET_SCALING_MAP[key]
    blocks = list(spinenet_stem_blocks())
    for level, block_type, parents, is_output in SPINENET_BLOCK_SPECS:
        blocks.append(
            Block(
                level=level,
                type=block_type,
                width=FILTER_SIZE_MAP[level],
                parents=parents,
                connection="fuse",
                output=is_output,
            )
        )
    return ArchSpec(
        blocks=tuple(blocks),
        scaling=Scaling(scale, repeats, alpha, endpoint_channels),
        head=head or Head(kind="deeplabv3", level=4, aspp_rates=aspp_rates(4)),
        endpoint_levels=(min_level, max_level),
        name=f"spinenet-{key}",
    )


def resnet_blocks(depth: int = 50, output_stride: int = 16) -> tuple[Block, ...]:
    """A dilated ResNet as a chain of bottleneck blocks; the last block is the output."""
    if depth not in RESNET_STAGES:
        raise SpecError(f"unknown ResNet depth {depth} (known: {', '.join(map(str, RESNET_STAGES))})")
    if output_stride not in (8, 16, 32):
        raise SpecError(f"output stride must be 8, 16 or 32, got {output_stride}")
    blocks: list[Block] = []
    level, dilation = 2, 1
    for stage, (repeats, width) in enumerate(zip(RESNET_STAGES[depth], RESNET_WIDTHS)):
        previous_dilation = dilation
        if stage > 0:
            if 2 ** (level + 1) <= output_stride:
                level += 1  # a strided stage: the first block strides
            else:
                dilation *= 2  # stride replaced by dilation
        for r in range(repeats):
            parent = len(blocks) - 1 if blocks else STEM
            blocks.append(
                Block(
                    level=level,
                    type="bottleneck",
                    width=width,
                    parents=(parent,),
                    connection="chain",
                    # The first block of a dilated stage keeps the previous stage's rate.
                    dilation=previous_dilation if r == 0 else dilation,
                )
            )
    blocks[-1] = replace(blocks[-1], output=True)
    return tuple(blocks)


def deeplab(depth: int = 50, plus: bool = False, output_stride: int = 16, separable: bool = False) -> ArchSpec:
    """DeepLabv3 (``plus=False``) or DeepLabv3+ on a dilated ResNet-``depth``."""
    blocks = resnet_blocks(depth, output_stride)
    head_level = blocks[-1].level
    head = Head(
        kind="deeplabv3plus" if plus else "deeplabv3",
        level=head_level,
        aspp_rates=aspp_rates(head_level),
        separable=separable,
    )
    name = f"deeplabv3{'plus' if plus else ''}-resnet{depth}" + ("" if output_stride == 16 else f"-os{output_stride}")
    return ArchSpec(blocks=blocks, head=head, name=name)


PUBLISHED: dict[str, Callable[[], ArchSpec]] = {
    "spinenet-49s": lambda: spinenet("49s"),
    "spinenet-49": lambda: spinenet("49"),
    "spinenet-96": lambda: spinenet("96"),
    "spinenet-143": lambda: spinenet("143"),
    "spinenet-190": lambda: spinenet("190"),
    "deeplabv3-resnet50": lambda: deeplab(50),
    "deeplabv3-resnet101": lambda: deeplab(101),
    "deeplabv3plus-resnet50": lambda: deeplab(50, plus=True),
    "deeplabv3plus-resnet101": lambda: deeplab(101, plus=True),
    "deeplabv3-resnet50-os8": lambda: deeplab(50, output_stride=8),
    "deeplabv3plus-resnet50-os8": lambda: deeplab(50, plus=True, output_stride=8),
}


def published_names() -> list[str]:
    return list(PUBLISHED)


def get_spec(name: str) -> ArchSpec:
    """A published spec by name, e.g. ``spinenet-49`` or ``deeplabv3-resnet50``."""
    try:
        return PUBLISHED[name]()
    except KeyError:
        raise SpecError(f"unknown architecture {name!r} (known: {', '.join(PUBLISHED)})") from None
