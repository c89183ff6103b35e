"""A search space: the settings that say which specs a search may visit, and seeded sampling.

Sampling follows SpineNet's search: two level-2 stem block groups, then ``num_blocks``
scale-permuted fused blocks; an intermediate block takes its two parents from the last
``parent_window`` blocks, an output block from any earlier block; the last block at each output
level is the output. Each block also draws a type and a dilation rate (SpineNet-Seg).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .published import FILTER_SIZE_MAP, spinenet_stem_blocks
from .spec import (
    BLOCK_TYPES,
    DEFAULT_DILATIONS,
    MAX_BLOCKS,
    MAX_DILATION,
    MAX_LEVEL,
    MIN_LEVEL,
    STEM_LEVEL,
    ArchSpec,
    Block,
    Head,
    Scaling,
    SpecError,
    aspp_rates,
)


@dataclass(frozen=True)
class SearchSpace:
    num_blocks: int = 16
    min_level: int = 2
    max_level: int = 7
    dilations: tuple[int, ...] = DEFAULT_DILATIONS
    block_types: tuple[str, ...] = BLOCK_TYPES
    parent_window: int = 5
    output_levels: tuple[int, ...] = (3, 4, 5, 6, 7)
    head: Head = field(default_factory=lambda: Head(kind="deeplabv3", level=4, aspp_rates=aspp_rates(4)))
    scaling: Scaling = field(default_factory=lambda: Scaling(1.0, 1, 0.5, 256))

    def __post_init__(self) -> None:
        for name in ("dilations", "block_types", "output_levels"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.num_blocks < 1:
            raise SpecError(f"search space: num_blocks must be >= 1, got {self.num_blocks}")
        limit = MAX_BLOCKS - self.stem_blocks  # a spec's limit, less the stem blocks
        if self.num_blocks > limit:
            raise SpecError(f"search space: num_blocks {self.num_blocks:,} is more than the limit of {limit}")
        if not MIN_LEVEL <= self.min_level <= self.max_level <= MAX_LEVEL:
            raise SpecError(
                f"search space: level range [{self.min_level}, {self.max_level}] not inside [{MIN_LEVEL}, {MAX_LEVEL}]"
            )
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise SpecError(f"search space: dilations must be positive, got {list(self.dilations)}")
        if max(self.dilations) > MAX_DILATION:
            raise SpecError(f"search space: dilation {max(self.dilations):,} is more than the limit of {MAX_DILATION}")
        if 1 not in self.dilations:
            raise SpecError(f"search space: dilations {list(self.dilations)} must include 1 (the stem blocks' rate)")
        if not set(self.block_types) <= set(BLOCK_TYPES) or not self.block_types:
            raise SpecError(f"search space: block types must be among {', '.join(BLOCK_TYPES)}")
        if self.parent_window < 2:
            raise SpecError(f"search space: parent_window must be >= 2, got {self.parent_window}")
        required = set(self.output_levels) | {self.head.level}
        if self.head.kind == "deeplabv3plus":
            required.add(self.head.decoder_level)
        if not all(self.min_level <= lvl <= self.max_level for lvl in required):
            raise SpecError(
                f"search space: output and head levels {sorted(required)} must lie in "
                f"[{self.min_level}, {self.max_level}]"
            )
        if self.head.level not in self.output_levels:
            raise SpecError(f"search space: head level {self.head.level} is not an output level")
        if len(required) > self.num_blocks:
            raise SpecError(f"search space: {self.num_blocks} blocks cannot cover levels {sorted(required)}")

    @property
    def stem_blocks(self) -> int:
        return 2

    def validate(self, spec: ArchSpec) -> None:
        """Raise `SpecError` if ``spec`` uses a level, dilation or block type outside this space."""
        for i, b in enumerate(spec.blocks):
            if b.dilation not in self.dilations:
                allowed = ", ".join(map(str, self.dilations))
                raise SpecError(f"block {i}: dilation {b.dilation} not allowed (allowed: {allowed})")
            # The stem's level 2 is always allowed: SpineNet's stem blocks and ResNet's first stage live there.
            if not (self.min_level <= b.level <= self.max_level or b.level == STEM_LEVEL):
                raise SpecError(
                    f"block {i}: level {b.level} outside the search space's range [{self.min_level}, {self.max_level}]"
                )
            if b.type not in self.block_types:
                raise SpecError(f"block {i}: type {b.type!r} not in the search space")

    def contains(self, spec: ArchSpec) -> bool:
        try:
            self.validate(spec)
        except SpecError:
            return False
        return True

    def log10_size(self) -> float:
        """log10 of the number of specs the sampler can produce (an upper bound).

        Levels x types x dilations per block, times the parent pairs: an intermediate block picks 2
        of the last ``parent_window`` blocks; the output blocks are counted as the last blocks,
        which pick 2 of all earlier ones. Like the SpineNet paper's count, it does not subtract
        the few combinations that validation rejects.
        """
        levels = self.max_level - self.min_level + 1
        total = self.num_blocks * math.log10(levels * len(self.block_types) * len(self.dilations))
        num_outputs = len(self.output_levels)
        for i in range(self.num_blocks):
            earlier = self.stem_blocks + i
            pool = earlier if i >= self.num_blocks - num_outputs else min(self.parent_window, earlier)
            total += math.log10(math.comb(pool, 2))
        return total


@dataclass(frozen=True)
class SpaceOptions:
    """A search space as flat options, the form a search config and the command line give it.

    Its defaults are the one set that `nas search` configs and `nas arch sample`/``mutate`` share
    (`SearchSpace`'s own defaults also allow dilation 8).
    """

    num_blocks: int = 16
    min_level: int = 2
    max_level: int = 7
    dilations: tuple[int, ...] = (1, 2, 4)
    block_types: tuple[str, ...] = BLOCK_TYPES
    parent_window: int = 5
    output_levels: tuple[int, ...] = (3, 4, 5, 6, 7)
    head: Literal["deeplabv3", "deeplabv3plus"] = "deeplabv3"
    head_level: int = 4
    decoder_level: int = 2

    def __post_init__(self) -> None:
        self.build()  # a bad option is a `SpecError` naming it ("search space: ...") when made

    def build(self) -> SearchSpace:
        head = Head(
            kind=self.head,
            level=self.head_level,
            aspp_rates=aspp_rates(self.head_level),
            decoder_level=self.decoder_level,
        )
        return SearchSpace(
            num_blocks=self.num_blocks,
            min_level=self.min_level,
            max_level=self.max_level,
            dilations=tuple(self.dilations),
            block_types=tuple(self.block_types),
            parent_window=self.parent_window,
            output_levels=tuple(self.output_levels),
            head=head,
        )


def sample(space: SearchSpace, seed: int, name: str = "") -> ArchSpec:
    """A random valid spec of ``space``; the same seed gives the same spec on any machine."""
    rng = random.Random(seed)
    required = required_levels(space)
    levels = required + [rng.randint(space.min_level, space.max_level) for _ in range(space.num_blocks - len(required))]
    rng.shuffle(levels)
    types = [rng.choice(space.block_types) for _ in levels]
    dilations = [rng.choice(space.dilations) for _ in levels]
    return assemble(
        space, levels, types, dilations, lambda node, pool: tuple(rng.sample(list(pool), 2)), name or f"sample-{seed}"
    )


def required_levels(space: SearchSpace) -> list[int]:
    """Levels every spec of the space must have a block at: the outputs, the head's and the decoder's."""
    return sorted(set(space.output_levels) | {space.head.level} | _decoder_levels(space))


def assemble(
    space: SearchSpace,
    levels: list[int],
    types: list[str],
    dilations: list[int],
    choose_parents: Callable[[int, range], tuple[int, int]],
    name: str = "",
) -> ArchSpec:
    """The spec with these per-block choices after SpineNet's two stem blocks.

    The last block at each output level is an output. An output block may take parents from any
    earlier block, an intermediate one from the last ``parent_window``; ``choose_parents(node,
    pool)`` picks two distinct indices of ``pool``. Every sampler of the space builds through here.
    """
    last_at_level = {level: i for i, level in enumerate(levels)}
    is_output = [last_at_level.get(level) == i and level in space.output_levels for i, level in enumerate(levels)]
    blocks = list(spinenet_stem_blocks())
    for i, level in enumerate(levels):
        node = len(blocks)
        pool = range(0, node) if is_output[i] else range(max(0, node - space.parent_window), node)
        blocks.append(
            Block(
                level=level,
                type=types[i],
                width=FILTER_SIZE_MAP[level],
                parents=choose_parents(node, pool),
                connection="fuse",
                dilation=dilations[i],
                output=is_output[i],
            )
        )
    spec = ArchSpec(
        blocks=tuple(blocks),
        scaling=space.scaling,
        head=space.head,
        endpoint_levels=(min(space.output_levels), max(space.output_levels)),
        name=name,
    )
    space.validate(spec)
    return spec


def _decoder_levels(space: SearchSpace) -> set[int]:
    return {space.head.decoder_level} if space.head.kind == "deeplabv3plus" else set()
