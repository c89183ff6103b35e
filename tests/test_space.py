"""Search-space operations: seeded sampling, mutations that stay valid, reversibility, size."""

from __future__ import annotations

import math
import random

import pytest

from search_spaces import ArchSpec, Head, SearchSpace, SpecError, get_spec, mutate, neighbours, sample
from search_spaces.mutations import KINDS, Mutation, candidates, mutation_chain


def test_thousands_of_samples_are_valid_and_inside_the_space() -> None:
    space = SearchSpace()
    hashes = set()
    for seed in range(2000):
        spec = sample(space, seed)  # constructing the spec validates it
        space.validate(spec)
        assert len(spec.blocks) == 2 + space.num_blocks
        assert sorted(spec.endpoints) == [3, 4, 5, 6, 7]
        assert all(b.connection == "fuse" and len(b.parents) == 2 for b in spec.blocks[2:])
        hashes.add(spec.hash)
    assert len(hashes) == 2000


def test_sampling_is_seeded() -> None:
    space = SearchSpace()
    assert sample(space, 11) == sample(space, 11)
    assert sample(space, 11) != sample(space, 12)


def test_sampling_respects_block_count_level_range_window_and_dilations() -> None:
    space = SearchSpace(
        num_blocks=8,
        min_level=3,
        max_level=5,
        dilations=(1, 2),
        parent_window=3,
        output_levels=(3, 4, 5),
        head=Head(kind="deeplabv3plus", level=4, decoder_level=3),
    )
    for seed in range(300):
        spec = sample(space, seed)
        searched = spec.blocks[2:]
        assert len(searched) == 8
        assert {b.level for b in searched} <= {3, 4, 5}
        assert {b.dilation for b in searched} <= {1, 2}
        for i, b in enumerate(spec.blocks):
            if i >= 2 and not b.output:
                assert min(b.parents) >= i - 3
        assert spec.head.kind == "deeplabv3plus" and spec.decoder_source is not None


def test_bad_search_space_settings_are_reported() -> None:
    with pytest.raises(SpecError, match="search space: level range"):
        SearchSpace(min_level=5, max_level=3)
    with pytest.raises(SpecError, match="search space: head level 2 is not an output level"):
        SearchSpace(head=Head(level=2))
    with pytest.raises(SpecError, match="cannot cover levels"):
        SearchSpace(num_blocks=3)


def test_log10_size_matches_a_hand_count() -> None:
    tiny = dict(min_level=2, max_level=2, block_types=("bottleneck",), dilations=(1,), output_levels=(2,))
    head = Head(level=2)
    assert SearchSpace(num_blocks=1, head=head, **tiny).log10_size() == pytest.approx(0.0)
    # Block 0 picks its 2 parents from the 2 stem blocks (1 way); the output block from 3 (3 ways).
    assert SearchSpace(num_blocks=2, head=head, **tiny).log10_size() == pytest.approx(math.log10(3))
    default = SearchSpace()
    assert default.log10_size() > SearchSpace(dilations=(1,)).log10_size() + 16 * math.log10(4) - 1e-9
    assert SearchSpace(num_blocks=20).log10_size() > default.log10_size() > 40


def test_random_mutation_chains_stay_valid() -> None:
    space = SearchSpace()
    rng = random.Random(0)
    starts = [get_spec("deeplabv3-resnet50"), get_spec("deeplabv3plus-resnet50"), get_spec("spinenet-49")]
    starts += [sample(space, s) for s in range(3)]
    seen_kinds = set()
    for start in starts:
        spec = start
        for _ in range(150):
            child, m = mutate(spec, space, rng)
            space.validate(child)
            assert child != spec
            assert ArchSpec.from_json(child.to_json()) == child
            seen_kinds.add(m.kind)
            spec = child
    assert seen_kinds == set(KINDS)


def test_mutation_is_seeded() -> None:
    spec = get_spec("spinenet-49")
    assert mutate(spec, rng=5) == mutate(spec, rng=5)
    assert len({mutate(spec, rng=s)[0].hash for s in range(20)}) > 10


def test_every_mutation_has_an_exact_inverse() -> None:
    space = SearchSpace()
    rng = random.Random(1)
    for start in (get_spec("deeplabv3-resnet50"), get_spec("spinenet-49"), sample(space, 3)):
        spec = start
        for _ in range(200):
            child, m = mutate(spec, space, rng)
            back = m.inverse(spec).apply(child)
            assert back == spec, m.describe()
            assert Mutation.from_dict(m.to_dict()) == m
            spec = child


def test_invalid_mutations_raise_spec_errors() -> None:
    spec = get_spec("deeplabv3-resnet50")
    with pytest.raises(SpecError, match="level jump"):
        Mutation("shift_level", 5, (1,)).apply(spec)  # its chain child would drop a level
    with pytest.raises(SpecError, match="unknown mutation kind"):
        Mutation("grow", 0).apply(spec)
    with pytest.raises(SpecError, match="block 99 does not exist"):
        Mutation("type", 99, ("residual",)).apply(spec)
    with pytest.raises(SpecError, match="unknown mutation kind"):
        candidates("grow", spec, SearchSpace())


def _resnet_to_spinenet_like() -> list[Mutation]:
    """An explicit path from DeepLabv3-ResNet-50 to a fused, scale-permuted, dilated topology."""
    path = [Mutation("add_parent", i, (i - 2,)) for i in range(3, 15)]  # chain -> two-parent fused
    path += [
        Mutation("swap_levels", 5, (12,)),  # scale permutation: a level-4 block early, a level-3 late
        Mutation("shift_level", 9, (1,)),
        Mutation("shift_level", 10, (1,)),
        Mutation("shift_level", 10, (1,)),  # up to level 6
        Mutation("shift_level", 6, (-1,)),
        Mutation("rewire", 13, (11, 4)),  # a long cross-scale connection
        Mutation("dilation", 12, (4,)),
        Mutation("dilation", 14, (2,)),
        Mutation("type", 7, ("residual",)),
    ]
    return path


def test_mutations_lead_from_deeplabv3_to_a_spinenet_like_topology_and_back() -> None:
    start = get_spec("deeplabv3-resnet50")
    forward = _resnet_to_spinenet_like()
    path = mutation_chain(start, forward)
    end = path[-1]
    space = SearchSpace()
    for spec in path:
        space.validate(spec)
    fused = [b for b in end.blocks if b.connection == "fuse" and len(b.parents) == 2]
    levels = [b.level for b in end.blocks]
    assert len(fused) == 12
    assert levels != sorted(levels)  # scale-permuted: a coarse block precedes a finer one
    assert max(levels) - min(levels) >= 4
    assert {b.dilation for b in end.blocks} >= {1, 2, 4}
    assert len(end.live) == len(end.blocks)
    # ... and back, by the inverse mutations in reverse order.
    back = end
    for spec, m in reversed(list(zip(path[:-1], forward))):
        back = m.inverse(spec).apply(back)
    assert back == start and back.hash == start.hash


def test_neighbours_are_valid_distinct_single_edits() -> None:
    spec = get_spec("deeplabv3-resnet50")
    result = neighbours(spec, SearchSpace())
    assert len(result) > 100
    assert len({child.hash for child, _ in result}) == len(result)
    kinds = {m.kind for _, m in result}
    assert {"add_parent", "dilation", "type", "move_output", "rewire", "shift_level"} <= kinds
    # A pure chain has no second parent to drop, and swapping two levels always breaks a chain link.
    assert "drop_parent" not in kinds and "swap_levels" not in kinds
