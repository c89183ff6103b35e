"""The topology as Optuna parameters, so that Optuna's samplers can search it.

Per block ``i`` (after SpineNet's two stem blocks) five parameters:

* ``b{i}.level``, ``b{i}.type``, ``b{i}.dilation``: categorical over the space's choices;
* ``b{i}.parent_a``, ``b{i}.parent_b``: how far back each parent lies, 1 = the block just
  before, counted cyclically inside the block's parent pool (the last ``parent_window`` blocks,
  or all earlier blocks for an output block). An equal pair means the next one back.

The distributions are fixed (define-and-run: `study.ask(distributions())`), so every trial of a
study has the same parameters and TPE / NSGA-II model each one directly. A level assignment that
misses a level the space requires (an output level, the head's) is repaired deterministically:
the latest block whose level is not needed elsewhere takes the missing level.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from search_spaces import ArchSpec, SearchSpace
from search_spaces.space import assemble, required_levels


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    levels = list(range(space.min_level, space.max_level + 1))
    farthest = space.stem_blocks + space.num_blocks - 1  # the last block's pool size
    dists: dict[str, BaseDistribution] = {}
    for i in range(space.num_blocks):
        dists[f"b{i}.level"] = CategoricalDistribution(levels)
        dists[f"b{i}.type"] = CategoricalDistribution(list(space.block_types))
        dists[f"b{i}.dilation"] = CategoricalDistribution(list(space.dilations))
        dists[f"b{i}.parent_a"] = IntDistribution(1, farthest)
        dists[f"b{i}.parent_b"] = IntDistribution(1, farthest)
    return dists


def decode(space: SearchSpace, params: Mapping[str, Any], name: str = "") -> ArchSpec:
    """The spec these parameters encode (always valid in ``space``)."""
    n = space.num_blocks
    levels = repair_levels(space, [int(params[f"b{i}.level"]) for i in range(n)])
    types = [str(params[f"b{i}.type"]) for i in range(n)]
    dilations = [int(params[f"b{i}.dilation"]) for i in range(n)]
    back = {space.stem_blocks + i: (int(params[f"b{i}.parent_a"]), int(params[f"b{i}.parent_b"])) for i in range(n)}

    def choose(node: int, pool: range) -> tuple[int, int]:
        a, b = back[node]
        first = pool[-1 - (a - 1) % len(pool)]
        second = pool[-1 - (b - 1) % len(pool)]
        if second == first:
            second = pool[-1 - b % len(pool)]
        return first, second

    return assemble(space, levels, types, dilations, choose, name)


def repair_levels(space: SearchSpace, levels: list[int]) -> list[int]:
    levels = list(levels)
    required = required_levels(space)
    for level in required:
        if level in levels:
            continue
        counts = Counter(levels)
        for j in reversed(range(len(levels))):
            if levels[j] not in required or counts[levels[j]] > 1:
                levels[j] = level
                break
    return levels
