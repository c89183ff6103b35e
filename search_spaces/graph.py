"""A networkx view of a spec, and back.

Nodes: ``-1`` (the stem) and ``0..N-1`` (the blocks), with the block's fields as attributes plus
``live`` (built or pruned) and ``endpoint``. Edges ``parent -> block`` carry ``kind``: ``chain``
or ``fuse`` for the spec's connections, ``absorb`` for SpineNet's dead-end merges (derived, so
ignored when converting back). Graph attributes hold the rest of the spec.
"""

from __future__ import annotations

from dataclasses import asdict

import networkx as nx

from .spec import STEM, STEM_LEVEL, ArchSpec, Block, Head, Scaling, SpecError


def to_graph(spec: ArchSpec) -> nx.DiGraph:
    g = nx.DiGraph(
        name=spec.name,
        scaling=asdict(spec.scaling),
        head=asdict(spec.head),
        endpoint_levels=tuple(spec.endpoint_levels),
        stem_channels=spec.stem_channels,
        hash=spec.hash,
    )
    g.add_node(STEM, kind="stem", level=STEM_LEVEL, channels=spec.stem_channels, live=True, endpoint=False)
    for i, b in enumerate(spec.blocks):
        g.add_node(
            i,
            kind="block",
            **asdict(b),
            channels=b.out_channels(spec.scaling),
            live=i in spec.live,
            endpoint=spec.endpoints.get(b.level) == i,
        )
        for p in b.parents:
            g.add_edge(p, i, kind=b.connection)
    for i, absorbed in spec.absorbed.items():
        for j in absorbed:
            g.add_edge(j, i, kind="absorb")
    return g


_BLOCK_FIELDS = ("level", "type", "width", "connection", "dilation", "output")


def from_graph(g: nx.DiGraph) -> ArchSpec:
    """The spec a graph made by `to_graph` (possibly edited) describes."""
    blocks_ids = sorted(n for n in g.nodes if n != STEM)
    if blocks_ids != list(range(len(blocks_ids))):
        raise SpecError(f"graph: block nodes must be numbered 0..N-1, got {blocks_ids[:8]}")
    blocks = []
    for i in blocks_ids:
        attrs = g.nodes[i]
        missing = [f for f in _BLOCK_FIELDS if f not in attrs]
        if missing:
            raise SpecError(f"graph: node {i} lacks attribute {missing[0]!r}")
        parents = tuple(sorted(p for p, _, kind in g.in_edges(i, data="kind") if kind != "absorb"))
        blocks.append(Block(parents=parents, **{f: attrs[f] for f in _BLOCK_FIELDS}))
    head = dict(g.graph["head"])
    head["aspp_rates"] = tuple(head["aspp_rates"])
    return ArchSpec(
        blocks=tuple(blocks),
        scaling=Scaling(**g.graph["scaling"]),
        head=Head(**head),
        endpoint_levels=tuple(g.graph["endpoint_levels"]),
        stem_channels=g.graph["stem_channels"],
        name=g.graph.get("name", ""),
    )
