"""Mutations: small, reversible edits of a spec that always return a valid spec.

A `Mutation` is plain data (kind, block, arguments), so a search can record which edit made a
child. `mutate` draws one at random; the explicit constructors let tests and users walk a
chosen path, and `Mutation.inverse` undoes any mutation exactly, so the space is connected in
both directions (a chain from DeepLabv3's ResNet to a fused, scale-permuted topology can always be
walked back).

Kinds:

* ``swap_levels``  swap two blocks' levels and widths (scale permutation)
* ``rewire``       replace one parent of a block (cross-scale connection)
* ``dilation``     change one block's dilation rate
* ``type``         change a block's type (bottleneck <-> residual)
* ``shift_level``  move a block one level finer or coarser (width kept)
* ``move_output``  move the output flag from one block to another
* ``add_parent``   give a one-parent block a second parent (chain -> fused)
* ``drop_parent``  remove one parent of a two-parent block (fused -> chain, or fused with one parent)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .space import SearchSpace
from .spec import STEM, ArchSpec, Block, SpecError


@dataclass(frozen=True)
class Mutation:
    """One edit: ``kind`` applied to ``block`` with ``args`` (see the module docstring)."""

    kind: str
    block: int
    args: tuple[Any, ...] = ()

    def apply(self, spec: ArchSpec) -> ArchSpec:
        """The mutated spec; raises `SpecError` if the result is not a valid spec."""
        if not 0 <= self.block < len(spec.blocks):
            raise SpecError(f"mutation {self}: block {self.block} does not exist")
        blocks = list(spec.blocks)
        _kind(self.kind).apply(self, blocks)
        return spec.with_blocks(blocks)

    def inverse(self, parent: ArchSpec) -> Mutation:
        """The mutation that turns ``self.apply(parent)`` back into ``parent``."""
        return _kind(self.kind).inverse(self, parent.blocks[self.block])

    def describe(self) -> str:
        return f"{self.kind}(block={self.block}" + "".join(f", {a}" for a in self.args) + ")"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "block": self.block, "args": list(self.args)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Mutation:
        return cls(data["kind"], data["block"], tuple(data["args"]))


@dataclass(frozen=True)
class Kind:
    """What one kind of mutation does: a new kind is one entry of `_KINDS`.

    ``apply(m, blocks)`` edits the list of blocks in place (raising `SpecError` where ``m`` does
    not fit them); ``inverse(m, b)`` is the mutation that undoes ``m``, given ``m``'s block ``b``
    before the edit; ``candidates(spec, space)`` lists every mutation of the kind that could apply.
    """

    apply: Callable[[Mutation, list[Block]], None]
    inverse: Callable[[Mutation, Block], Mutation]
    candidates: Callable[[ArchSpec, SearchSpace], list[Mutation]]


def _parent_pool(spec: ArchSpec, i: int, space: SearchSpace) -> range:
    """Nodes block ``i`` may take as a parent: the last ``parent_window`` (any for outputs)."""
    if spec.blocks[i].output:
        return range(STEM, i)
    return range(max(STEM, i - space.parent_window), i)


# ------------------------------------------------------------------------------ swap_levels
def _apply_swap_levels(m: Mutation, blocks: list[Block]) -> None:
    (j,) = m.args
    b, other = blocks[m.block], blocks[j]
    blocks[m.block] = replace(b, level=other.level, width=other.width)
    blocks[j] = replace(other, level=b.level, width=b.width)


def _swap_levels_candidates(spec: ArchSpec, space: SearchSpace) -> list[Mutation]:
    blocks, n = spec.blocks, len(spec.blocks)
    return [
        Mutation("swap_levels", i, (j,))
        for i in range(n)
        for j in range(i + 1, n)
        if blocks[i].level != blocks[j].level
    ]


# ------------------------------------------------------------------------------ rewire
def _apply_rewire(m: Mutation, blocks: list[Block]) -> None:
    old, new = m.args
    b = blocks[m.block]
    if old not in b.parents:
        raise SpecError(f"mutation {m}: {old} is not a parent of block {m.block}")
    blocks[m.block] = replace(b, parents=tuple(new if p == old else p for p in b.parents))


def _rewire_candidates(spec: ArchSpec, space: SearchSpace) -> list[Mutation]:
    blocks = spec.blocks
    return [
        Mutation("rewire", i, (p, q))
        for i in range(len(blocks))
        for p in blocks[i].parents
        for q in _parent_pool(spec, i, space)
        if q not in blocks[i].parents
    ]


# ------------------------------------------------------------------------------ dilation, type
def _apply_dilation(m: Mutation, blocks: list[Block]) -> None:
    blocks[m.block] = replace(blocks[m.block], dilation=m.args[0])


def _dilation_candidates(spec: ArchSpec, space: SearchSpace) -> list[Mutation]:
    blocks = spec.blocks
    return [
        Mutation("dilation", i, (d,)) for i in range(len(blocks)) for d in space.dilations if d != blocks[i].dilation
    ]


def _apply_type(m: Mutation, blocks: list[Block]) -> None:
    blocks[m.block] = replace(blocks[m.block], type=m.args[0])


def _type_candidates(spec: ArchSpec, space: SearchSpace) -> list[Mutation]:
    blocks = spec.blocks
    return [Mutation("type", i, (t,)) for i in range(len(blocks)) for t in space.block_types if t != blocks[i].type]


# ------------------------------------------------------------------------------ shift_level
def _apply_shift_level(m: Mutation, blocks: list[Block]) -> None:
    blocks[m.block] = replace(blocks[m.block], level=blocks[m.block].level + m.args[0])


def _shift_level_candidates(spec: ArchSpec, space: SearchSpace) -> list[Mutation]:
    blocks = spec.blocks
    return [
        Mutation("shift_level", i, (d,))
        for i in range(len(blocks))
        for d in (-1, 1)
        if space.min_level <= blocks[i].level + d <= space.max_level
    ]


# ------------------------------------------------------------------------------ move_output
def _apply_move_output(m: Mutation, blocks: list[Block]) -> None:
    (j,) = m.args
    if not blocks[m.block].output or blocks[j].output:
        raise SpecError(f"mutation {m}: needs an output block and a non-output block")
    blocks[m.block] = replace(blocks[m.block], output=False)
    blocks[j] = replace(blocks[j], output=True)


def _move_output_candidates(spec: ArchSpec, space: SearchSpace) -> list[Mutation]:
    blocks, n = spec.blocks, len(spec.blocks)
    return [
        Mutation("move_output", i, (j,)) for i in range(n) if blocks[i].output for j in range(n) if not blocks[j].output
    ]


# ------------------------------------------------------------------------------ add_parent, drop_parent
def _apply_add_parent(m: Mutation, blocks: list[Block]) -> None:
    b = blocks[m.block]
    if len(b.parents) != 1:
        raise SpecError(f"mutation {m}: block {m.block} already has two parents")
    blocks[m.block] = replace(b, parents=(*b.parents, m.args[0]), connection="fuse")


def _add_parent_candidates(spec: ArchSpec, space: SearchSpace) -> list[Mutation]:
    blocks = spec.blocks
    return [
        Mutation("add_parent", i, (q,))
        for i in range(len(blocks))
        if len(blocks[i].parents) == 1
        for q in _parent_pool(spec, i, space)
        if q not in blocks[i].parents
    ]


def _apply_drop_parent(m: Mutation, blocks: list[Block]) -> None:
    parent, connection = m.args
    b = blocks[m.block]
    if len(b.parents) != 2 or parent not in b.parents:
        raise SpecError(f"mutation {m}: block {m.block} has no second parent {parent}")
    blocks[m.block] = replace(b, parents=tuple(p for p in b.parents if p != parent), connection=connection)


def _drop_parent_candidates(spec: ArchSpec, space: SearchSpace) -> list[Mutation]:
    blocks = spec.blocks
    return [
        Mutation("drop_parent", i, (p, c))
        for i in range(len(blocks))
        if len(blocks[i].parents) == 2
        for p in blocks[i].parents
        for c in ("chain", "fuse")
    ]


# In this order: `mutate` shuffles the kinds, so the order is part of what a seed reproduces.
_KINDS: dict[str, Kind] = {
    "swap_levels": Kind(_apply_swap_levels, lambda m, b: m, _swap_levels_candidates),
    "rewire": Kind(_apply_rewire, lambda m, b: Mutation("rewire", m.block, (m.args[1], m.args[0])), _rewire_candidates),
    "dilation": Kind(_apply_dilation, lambda m, b: Mutation("dilation", m.block, (b.dilation,)), _dilation_candidates),
    "type": Kind(_apply_type, lambda m, b: Mutation("type", m.block, (b.type,)), _type_candidates),
    "shift_level": Kind(
        _apply_shift_level, lambda m, b: Mutation("shift_level", m.block, (-m.args[0],)), _shift_level_candidates
    ),
    "move_output": Kind(
        _apply_move_output, lambda m, b: Mutation("move_output", m.args[0], (m.block,)), _move_output_candidates
    ),
    "add_parent": Kind(
        _apply_add_parent,
        lambda m, b: Mutation("drop_parent", m.block, (m.args[0], b.connection)),
        _add_parent_candidates,
    ),
    "drop_parent": Kind(
        _apply_drop_parent, lambda m, b: Mutation("add_parent", m.block, (m.args[0],)), _drop_parent_candidates
    ),
}
KINDS = tuple(_KINDS)


def _kind(name: str) -> Kind:
    try:
        return _KINDS[name]
    except KeyError:
        raise SpecError(f"unknown mutation kind {name!r} (known: {', '.join(KINDS)})") from None


def candidates(kind: str, spec: ArchSpec, space: SearchSpace) -> list[Mutation]:
    """Every mutation of ``kind`` that could apply to ``spec`` (not all results are valid)."""
    return _kind(kind).candidates(spec, space)


def try_apply(mutation: Mutation, spec: ArchSpec, space: SearchSpace) -> ArchSpec | None:
    """``mutation.apply(spec)`` if it gives a different spec valid in ``space``, else None."""
    try:
        child = mutation.apply(spec)
        space.validate(child)
    except SpecError:
        return None
    return child if child != spec else None


def neighbours(spec: ArchSpec, space: SearchSpace, kinds: tuple[str, ...] = KINDS) -> list[tuple[ArchSpec, Mutation]]:
    """Every valid spec one mutation away from ``spec``."""
    result = []
    for kind in kinds:
        for m in candidates(kind, spec, space):
            child = try_apply(m, spec, space)
            if child is not None:
                result.append((child, m))
    return result


def mutate(
    spec: ArchSpec,
    space: SearchSpace | None = None,
    rng: random.Random | int = 0,
    kinds: tuple[str, ...] = KINDS,
) -> tuple[ArchSpec, Mutation]:
    """One random valid mutation of ``spec``: a kind drawn uniformly, then an edit of that kind.

    Kinds with no valid edit for this spec are skipped. Seeded: the same ``rng`` seed and spec
    give the same child on every machine.
    """
    space = space or SearchSpace()
    try:
        space.validate(spec)
    except SpecError as exc:
        raise SpecError(f"cannot mutate a spec outside the search space: {exc}") from None
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    order = list(kinds)
    rng.shuffle(order)
    for kind in order:
        options = candidates(kind, spec, space)
        rng.shuffle(options)
        for m in options:
            child = try_apply(m, spec, space)
            if child is not None:
                return child, m
    raise SpecError(f"no valid mutation of {spec.name or spec.hash} in this search space")


def mutation_chain(spec: ArchSpec, mutations: list[Mutation]) -> list[ArchSpec]:
    """Apply ``mutations`` in turn; returns every spec along the way (the start included)."""
    path = [spec]
    for m in mutations:
        path.append(m.apply(path[-1]))
    return path


__all__ = ["KINDS", "Mutation", "candidates", "mutate", "mutation_chain", "neighbours", "try_apply"]
