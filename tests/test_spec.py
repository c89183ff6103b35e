"""The spec as a value: JSON round trip, canonical hash, graph view, and validation messages."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import networkx as nx
import pytest

from search_spaces import (
    ArchSpec,
    Block,
    Head,
    Scaling,
    SearchSpace,
    SpecError,
    from_graph,
    get_spec,
    published_names,
    resolve_spec,
    sample,
    to_graph,
)


def test_published_specs_round_trip_through_json() -> None:
    for name in published_names():
        spec = get_spec(name)
        again = ArchSpec.from_json(spec.to_json())
        assert again == spec
        assert again.hash == spec.hash
        assert again.name == name


def test_sampled_specs_round_trip_through_json_and_graph() -> None:
    space = SearchSpace()
    for seed in range(200):
        spec = sample(space, seed)
        assert ArchSpec.from_json(spec.to_json(indent=None)) == spec
        assert from_graph(to_graph(spec)) == spec


def test_hash_ignores_name_and_parent_order_but_not_content() -> None:
    spec = get_spec("spinenet-49")
    blocks = list(spec.blocks)
    blocks[5] = replace(blocks[5], parents=tuple(reversed(blocks[5].parents)))
    swapped = ArchSpec(blocks=tuple(blocks), scaling=spec.scaling, head=spec.head, endpoint_levels=(3, 7), name="x")
    assert swapped == spec and swapped.hash == spec.hash
    changed = swapped.with_blocks([*blocks[:5], replace(blocks[5], dilation=2), *blocks[6:]])
    assert changed != spec and changed.hash != spec.hash
    assert len({get_spec(n).hash for n in published_names()}) == len(published_names())


def test_network_hash_ignores_dead_genes_only() -> None:
    spec = get_spec("spinenet-49")
    assert 17 not in spec.live  # SpineNet-49's level-2 output block reaches no endpoint
    blocks = list(spec.blocks)
    dead_edit = spec.with_blocks([*blocks[:17], replace(blocks[17], dilation=4, type="residual"), *blocks[18:]])
    assert dead_edit.hash != spec.hash and dead_edit.network_hash == spec.network_hash
    live_edit = spec.with_blocks([*blocks[:5], replace(blocks[5], dilation=2), *blocks[6:]])
    assert live_edit.network_hash != spec.network_hash
    # An output flag that moves which block is an endpoint changes the network; the name never does.
    assert replace(spec, name="other").network_hash == spec.network_hash
    nets = {get_spec(n).network_hash for n in published_names()}
    assert len(nets) == len(published_names())


def test_hash_is_stable_across_processes() -> None:
    # A fresh interpreter (own hash seed) must compute the same content hashes.
    names = published_names()
    code = (
        "import json; from search_spaces import get_spec, sample, SearchSpace;"
        f"print(json.dumps([get_spec(n).hash for n in {names!r}] + [sample(SearchSpace(), 7).hash]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}
    )
    assert json.loads(out.stdout) == [get_spec(n).hash for n in names] + [sample(SearchSpace(), 7).hash]


def test_spec_is_immutable_and_hashable() -> None:
    spec = get_spec("deeplabv3-resnet50")
    with pytest.raises(AttributeError):
        spec.blocks = ()  # type: ignore[misc]
    assert {spec: 1}[get_spec("deeplabv3-resnet50")] == 1


def test_graph_view_has_nodes_edges_and_attributes() -> None:
    spec = get_spec("spinenet-49")
    g = to_graph(spec)
    assert isinstance(g, nx.DiGraph)
    assert g.number_of_nodes() == len(spec.blocks) + 1  # stem + blocks
    assert nx.is_directed_acyclic_graph(g)
    kinds = [k for _, _, k in g.edges(data="kind")]
    assert kinds.count("chain") == 2 and kinds.count("fuse") == 32 and kinds.count("absorb") == 1
    assert g.nodes[14]["level"] == 5 and g.nodes[14]["output"] and g.nodes[14]["endpoint"]
    assert not g.nodes[17]["live"]  # the level-2 output lies outside endpoint levels 3..7
    assert g.has_edge(11, 14) and g.edges[11, 14]["kind"] == "absorb"


def test_graph_edits_convert_back() -> None:
    spec = get_spec("deeplabv3-resnet50")
    g = to_graph(spec)
    g.add_edge(3, 6, kind="fuse")
    g.nodes[6]["connection"] = "fuse"
    edited = from_graph(g)
    assert edited.blocks[6].parents == (3, 5) and edited.blocks[6].connection == "fuse"


def _blocks(**changes: object) -> list[Block]:
    blocks = list(get_spec("deeplabv3-resnet50").blocks)
    index = changes.pop("index", 0)
    blocks[index] = replace(blocks[index], **changes)  # type: ignore[arg-type]
    return blocks


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ArchSpec(blocks=_blocks(index=4, parents=(6,))), "block 4: parent 6 is not an earlier block"),
        (lambda: ArchSpec(blocks=_blocks(index=4, parents=(-2,))), "block 4: parent -2 is not an earlier block"),
        (lambda: ArchSpec(blocks=_blocks(index=2, level=8)), "block 2: level 8 out of range [2, 7]"),
        (lambda: ArchSpec(blocks=_blocks(index=3, level=4)), "block 3: level jump 2->4 from parent 2"),
        (lambda: ArchSpec(blocks=_blocks(index=3, level=1)), "block 3: level 1 out of range"),
        (lambda: ArchSpec(blocks=_blocks(index=4, level=2)), "block 4: level jump 3->2"),
        (lambda: ArchSpec(blocks=_blocks(index=2, parents=(0, 1))), "block 2: a chain block has exactly one parent"),
        (lambda: ArchSpec(blocks=_blocks(index=2, type="dense")), "block 2: type 'dense' is not one of"),
        (lambda: ArchSpec(blocks=_blocks(index=2, dilation=0)), "block 2: dilation must be >= 1"),
        (lambda: ArchSpec(blocks=_blocks(index=2, width=0)), "block 2: width 0 is below 1 channel"),
        (lambda: ArchSpec(blocks=_blocks(index=15, output=False)), "no output block"),
        (lambda: ArchSpec(blocks=_blocks(index=14, output=True)), "block 15: duplicate output level 4 (block 14"),
        (
            lambda: ArchSpec(blocks=_blocks(index=15, output=True), head=Head(level=5)),
            "head.level: no endpoint feature at level 5 (endpoints at levels 4)",
        ),
        (
            lambda: ArchSpec(blocks=_blocks(index=2, output=True)),
            "head: endpoints have different widths (level 2: 256, level 4: 2048)",
        ),
        (
            lambda: ArchSpec(blocks=_blocks(index=15, output=True), head=Head(kind="deeplabv3plus", decoder_level=5)),
            "head.decoder_level: 5 must be finer than head.level 4",
        ),
        (lambda: ArchSpec(blocks=_blocks(), head=Head(kind="pspnet")), "head.kind: 'pspnet' is not one of"),
        (lambda: ArchSpec(blocks=_blocks(), scaling=Scaling(block_repeats=0)), "scaling.block_repeats: must be >= 1"),
        (lambda: ArchSpec(blocks=_blocks(), endpoint_levels=(5, 3)), "endpoint_levels: [5, 3] is not a range"),
        (lambda: ArchSpec(blocks=()), "spec: no blocks"),
    ],
)
def test_invalid_specs_name_block_and_field(make, message: str) -> None:
    with pytest.raises(SpecError) as info:
        make()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_decoder_level_needs_a_block() -> None:
    blocks = (Block(level=2), Block(level=4, parents=(0,), connection="fuse", output=True))
    assert ArchSpec(blocks=blocks, head=Head(kind="deeplabv3plus", decoder_level=2)).decoder_source == 0
    with pytest.raises(SpecError, match=r"head\.decoder_level: no block at level 3 to take low-level features"):
        ArchSpec(blocks=blocks, head=Head(kind="deeplabv3plus", decoder_level=3))


def test_dilation_outside_the_search_space_is_rejected_by_the_space() -> None:
    spec = ArchSpec(blocks=_blocks(index=15, dilation=3))  # structurally fine: any rate >= 1 builds
    with pytest.raises(SpecError, match=r"block 15: dilation 3 not allowed \(allowed: 1, 2, 4, 8\)"):
        SearchSpace().validate(spec)
    SearchSpace(dilations=(1, 2, 3)).validate(spec)
    assert not SearchSpace().contains(spec)
    assert SearchSpace().contains(get_spec("deeplabv3-resnet50"))
    assert SearchSpace().contains(get_spec("deeplabv3plus-resnet50-os8"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"blocks": [', "malformed JSON"),
        ("[1, 2]", "spec: expected a JSON object"),
        ('{"blocks": [{"level": 2}], "colour": 1}', "spec: unknown field 'colour'"),
        ('{"blocks": [{"level": 2, "lvl": 3}]}', "blocks[0]: unknown field 'lvl'"),
        ('{"blocks": [{"type": "residual"}]}', "blocks[0]: missing field 'level'"),
        ('{"blocks": [{"level": "2"}]}', 'blocks[0].level: expected an integer, got "2"'),
        ('{"blocks": [{"level": 2, "output": 1}]}', "blocks[0].output: expected a boolean, got 1"),
        (
            '{"blocks": [{"level": 2, "output": true}], "scaling": {"block_repeats": 1.5}}',
            "scaling.block_repeats: expected an integer, got 1.5",
        ),
        (
            '{"blocks": [{"level": 2, "output": true}], "head": {"aspp_rates": "6"}}',
            'head.aspp_rates: expected a list of integers, got "6"',
        ),
        (
            '{"blocks": [{"level": 2, "parents": [true]}]}',
            "blocks[0].parents[0]: expected an integer, got true",
        ),
        (
            '{"blocks": [{"level": 2, "output": true}], "scaling": {"filter_size_scale": NaN}}',
            "scaling.filter_size_scale: expected a finite number, got NaN",
        ),
        ('{"blocks": [{"level": 2}], "endpoint_levels": [2, 3, 4]}', "endpoint_levels: expected 2 items, got 3"),
        ('{"blocks": {"level": 2}}', 'blocks: expected a list, got {"level": 2}'),
        ('{"blocks": [{"level": 2}], "head": [1]}', "head: expected an object, got [1]"),
        ('{"format": 9, "blocks": []}', "spec.format: unsupported format 9"),
        ('{"name": "x"}', "spec: missing field 'blocks'"),
    ],
)
def test_malformed_json_gives_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        ArchSpec.from_json(text)
    assert message in str(info.value)


def test_minimal_json_uses_defaults() -> None:
    spec = ArchSpec.from_json(
        '{"blocks": [{"level": 2}, {"level": 3, "parents": [0], "output": true}], "head": {"level": 3}}'
    )
    assert spec.blocks[1].connection == "chain" and spec.head.kind == "deeplabv3"
    assert spec.endpoints == {3: 1}


def test_published_structure_matches_the_papers() -> None:
    r50 = get_spec("deeplabv3-resnet50")
    assert [b.level for b in r50.blocks] == [2] * 3 + [3] * 4 + [4] * 6 + [4] * 3
    assert [b.dilation for b in r50.blocks] == [1] * 13 + [1, 2, 2]
    assert all(b.connection == "chain" for b in r50.blocks)
    os8 = get_spec("deeplabv3-resnet50-os8")
    assert [b.dilation for b in os8.blocks][7:] == [1, 2, 2, 2, 2, 2, 2, 4, 4]
    assert os8.head.level == 3 and os8.head.aspp_rates == (12, 24, 36)
    assert len(get_spec("deeplabv3-resnet101").blocks) == 33
    s49 = get_spec("spinenet-49")
    assert len(s49.blocks) == 18 and sorted(s49.endpoints) == [3, 4, 5, 6, 7]
    assert s49.blocks[2].parents == (0, 1) and s49.blocks[15].parents == (5, 14)
    assert get_spec("spinenet-49s").scaling == Scaling(0.65, 1, 0.5, 128)
    assert get_spec("spinenet-190").scaling == Scaling(1.3, 4, 1.0, 512)
    with pytest.raises(SpecError, match="unknown architecture 'resnet-7'"):
        get_spec("resnet-7")


def test_one_resolver_reads_a_spec_a_name_a_file_a_folder_and_standard_input(tmp_path, monkeypatch) -> None:
    spec = get_spec("spinenet-49")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "spec.json").write_text(spec.to_json())
    assert resolve_spec(spec) is spec
    assert resolve_spec("spinenet-49") == spec
    assert resolve_spec(str(tmp_path / "run" / "spec.json")) == spec
    assert resolve_spec(tmp_path / "run") == spec
    monkeypatch.setattr(sys, "stdin", io.StringIO(spec.to_json()))
    assert resolve_spec("-", stdin=True) == spec
    # Without ``stdin`` a "-" is a file name (a config's baseline must not wait on a terminal); a Path is never a name.
    with pytest.raises(SpecError, match=r"^'-' is neither a published architecture \(.*spinenet-49.*\) nor a file$"):
        resolve_spec("-")
    with pytest.raises(SpecError, match=r"^'spinenet-49' is neither a published architecture"):
        resolve_spec(Path("spinenet-49"))
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "empty").mkdir()
    (tmp_path / "huge.json").write_bytes(b" " * (2**20 + 1))
    (tmp_path / "bad.json").write_text('{"blocks": "many"}')
    for name, message in [
        ("fifo.json", "fifo.json: not a spec file"),
        ("empty", "empty: a folder without a spec.json"),
        ("huge.json", "huge.json: 1,048,577 bytes, more than a spec file holds"),
        ("bad.json", "bad.json: blocks: expected a list"),
    ]:
        with pytest.raises(SpecError) as info:
            resolve_spec(str(tmp_path / name))
        assert str(info.value).startswith(str(tmp_path / name)) and message in str(info.value)
        assert "\n" not in str(info.value)
