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
from dataclasses import dataclass, replace
from typing import Any

from .space import SearchSpace
from .spec import STEM, ArchSpec, SpecError

KINDS = (
    "swap_levels",
    "rewire",
    "dilation",
    "type",
    "shift_level",
    "move_output",
    "add_parent",
    "drop_parent",
)


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
        b = blocks[self.block]
        if self.kind == "swap_levels":
            (j,) = self.args
            other = blocks[j]
            blocks[self.block] = replace(b, level=other.level, width=other.width)
            blocks[j] = replace(other, level=b.level, width=b.width)
        elif self.kind == "rewire":
            old, new = self.args
            if old not in b.parents:
                raise SpecError(f"mutation {self}: {old} is not a parent of block {self.block}")
            blocks[self.block] = replace(b, parents=tuple(new if p == old else p for p in b.parents))
        elif self.kind == "dilation":
            blocks[self.block] = replace(b, dilation=self.args[0])
        elif self.kind == "type":
            blocks[self.block] = replace(b, type=self.args[0])
        elif self.kind == "shift_level":
            blocks[self.block] = replace(b, level=b.level + self.args[0])
        elif self.kind == "move_output":
            (j,) = self.args
            if not b.output or blocks[j].output:
                raise SpecError(f"mutation {self}: needs an output block and a non-output block")
            blocks[self.block] = replace(b, output=False)
            blocks[j] = replace(blocks[j], output=True)
        elif self.kind == "add_parent":
            if len(b.parents) != 1:
                raise SpecError(f"mutation {self}: block {self.block} already has two parents")
            blocks[self.block] = replace(b, parents=(*b.parents, self.args[0]), connection="fuse")
        elif self.kind == "drop_parent":
            parent, connection = self.args
            if len(b.parents) != 2 or parent not in b.parents:
                raise SpecError(f"mutation {self}: block {self.block} has no second parent {parent}")
            kept = tuple(p for p in b.parents if p != parent)
            blocks[self.block] = replace(b, parents=kept, connection=connection)
        else:
            raise SpecError(f"unknown mutation kind {self.kind!r} (known: {', '.join(KINDS)})")
        return spec.with_blocks(blocks)

    def inverse(self, parent: ArchSpec) -> Mutation:
        """The mutation that turns ``self.apply(parent)`` back into ``parent``."""
        b = parent.blocks[self.block]
        if self.kind in ("swap_levels",):
            return self
        if self.kind == "rewire":
            return Mutation("rewire", self.block, (self.args[1], self.args[0]))
        if self.kind == "dilation":
            return Mutation("dilation", self.block, (b.dilation,))
        if self.kind == "type":
            return Mutation("type", self.block, (b.type,))
        if self.kind == "shift_level":
            return Mutation("shift_level", self.block, (-self.args[0],))
        if self.kind == "move_output":
            return Mutation("move_output", self.args[0], (self.block,))
        if self.kind == "add_parent":
            return Mutation("drop_parent", self.block, (self.args[0], b.connection))
        if self.kind == "drop_parent":
            return Mutation("add_parent", self.block, (self.args[0],))
        raise SpecError(f"unknown mutation kind {self.kind!r}")

    def describe(self) -> str:
        return f"{self.kind}(block={self.block}" + "".join(f", {a}" for a in self.args) + ")"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "block": self.block, "args": list(self.args)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Mutation:
        return cls(data["kind"], data["block"], tuple(data["args"]))


def _parent_pool(spec: ArchSpec, i: int, space: SearchSpace) -> range:
    """Nodes block ``i`` may take as a parent: the last ``parent_window`` (any for outputs)."""
    if spec.blocks[i].output:
        return range(STEM, i)
    return range(max(STEM, i - space.parent_window), i)


def candidates(kind: str, spec: ArchSpec, space: SearchSpace) -> list[Mutation]:
    """Every mutation of ``kind`` that could apply to ``spec`` (not all results are valid)."""
    n = len(spec.blocks)
    blocks = spec.blocks
    out: list[Mutation] = []
    if kind == "swap_levels":
        out = [Mutation(kind, i, (j,)) for i in range(n) for j in range(i + 1, n) if blocks[i].level != blocks[j].level]
    elif kind == "rewire":
        out = [
            Mutation(kind, i, (p, q))
            for i in range(n)
            for p in blocks[i].parents
            for q in _parent_pool(spec, i, space)
            if q not in blocks[i].parents
        ]
    elif kind == "dilation":
        out = [Mutation(kind, i, (d,)) for i in range(n) for d in space.dilations if d != blocks[i].dilation]
    elif kind == "type":
        out = [Mutation(kind, i, (t,)) for i in range(n) for t in space.block_types if t != blocks[i].type]
    elif kind == "shift_level":
        out = [
            Mutation(kind, i, (d,))
            for i in range(n)
            for d in (-1, 1)
            if space.min_level <= blocks[i].level + d <= space.max_level
        ]
    elif kind == "move_output":
        out = [Mutation(kind, i, (j,)) for i in range(n) if blocks[i].output for j in range(n) if not blocks[j].output]
    elif kind == "add_parent":
        out = [
            Mutation(kind, i, (q,))
            for i in range(n)
            if len(blocks[i].parents) == 1
            for q in _parent_pool(spec, i, space)
            if q not in blocks[i].parents
        ]
    elif kind == "drop_parent":
        out = [
            Mutation(kind, i, (p, c))
            for i in range(n)
            if len(blocks[i].parents) == 2
            for p in blocks[i].parents
            for c in ("chain", "fuse")
        ]
    else:
        raise SpecError(f"unknown mutation kind {kind!r} (known: {', '.join(KINDS)})")
    return out


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
