"""The architecture spec: an immutable, validated, JSON-serialisable, content-hashed value.

A spec is a stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) followed by an ordered list of blocks.
Every network of the platform, a ResNet for DeepLab as well as a scale-permuted SpineNet, is a
point of this one representation; `nas.model.builder` turns any spec into a PyTorch module.

Node numbering: the stem is node ``STEM`` (-1), block ``i`` of ``spec.blocks`` is node ``i``.

Connection kinds (how a block consumes its parents):

* ``chain``: exactly one parent whose output is used as is, like the blocks of a ResNet. The block
  sits at its parent's level (stride 1) or one level coarser (stride 2 in its first 3x3 conv, with
  a projection shortcut), never finer.
* ``fuse``: one or two parents, each resampled to the block's level and input width the way
  SpineNet does it (1x1 conv to ``alpha`` x the parent's width, strided conv and max-pools down or
  nearest upsampling up, 1x1 conv + BN to the target width), then summed. A fused *output* block
  also sums every earlier block that has no outgoing connection and matches its level and width
  (SpineNet's rule for dead ends). Then ReLU, then the block itself at stride 1.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

from nas.common.config import JSON_WORDS, ConfigError, from_dict
from nas.common.errors import UserError

STEM = -1
MIN_LEVEL, MAX_LEVEL = 2, 7
STEM_LEVEL = 2
BLOCK_TYPES = ("bottleneck", "residual")
CONNECTIONS = ("chain", "fuse")
HEAD_KINDS = ("deeplabv3", "deeplabv3plus")
DEFAULT_DILATIONS = (1, 2, 4, 8)
SPEC_FORMAT = 1

# Size limits. They leave room for every published network at several times its scale (the largest:
# ResNet-101's 33 blocks and base width 512, SpineNet-190's filter_size_scale 1.3, block_repeats 4
# and 512 endpoint channels, 126M backbone parameters; ASPP rate 36 at output stride 8) and keep a
# spec from asking for more memory or time than a machine has.
MAX_BLOCKS = 128
MAX_CHANNELS = 2048  # any layer's width: stem, a block's width before and after scaling, endpoint, ASPP, decoder
MAX_CLASSES = 1000  # classes a segmentation head may predict (COCO-Stuff has 182, ADE20K-Full 847)
MAX_FILTER_SIZE_SCALE = 4.0
MAX_RESAMPLE_ALPHA = 4.0
MAX_BLOCK_REPEATS = 8
MAX_DILATION = 64  # a block's dilation and an ASPP rate
MAX_ASPP_RATES = 8
MAX_BLOCK_PARAMS = 10**9  # the built blocks' weights, counted from below (SpineNet-190: 6.6e7 of its 1.3e8)
MAX_NAME_CHARS = 200
MAX_JSON_CHARS = 1_000_000  # 128 blocks are about 26 kB of indented JSON


class SpecError(UserError):
    """An invalid architecture spec; the message names the offending block and field."""


@dataclass(frozen=True)
class Block:
    """One block group of the network (``block_repeats`` blocks of ``type``).

    ``width`` is the base width before ``Scaling.filter_size_scale``: a bottleneck outputs
    4 x width channels, a residual block ``width`` channels.
    """

    level: int
    type: str = "bottleneck"
    width: int = 64
    parents: tuple[int, ...] = (STEM,)
    connection: str = "chain"
    dilation: int = 1
    output: bool = False

    def __post_init__(self) -> None:
        parents = tuple(self.parents) if isinstance(self.parents, (list, tuple)) else self.parents
        # The order of a fused block's parents does not matter: store them sorted so that equal
        # networks are equal specs with equal hashes.
        if self.connection == "fuse" and isinstance(parents, tuple) and all(isinstance(p, int) for p in parents):
            parents = tuple(sorted(parents))
        object.__setattr__(self, "parents", parents)

    def out_channels(self, scaling: Scaling) -> int:
        width = scaled_width(self.width, scaling)
        return 4 * width if self.type == "bottleneck" else width


@dataclass(frozen=True)
class Scaling:
    """Global scaling, as in SpineNet's SCALING_MAP."""

    filter_size_scale: float = 1.0
    block_repeats: int = 1
    resample_alpha: float = 0.5
    endpoint_channels: int | None = None  # None: endpoints are the raw block outputs


@dataclass(frozen=True)
class Head:
    """A DeepLabv3 (ASPP) or DeepLabv3+ (ASPP + decoder) segmentation head.

    ``level`` is where the ASPP runs (level 4 = output stride 16, level 3 = output stride 8).
    ``decoder_level`` is the level of the low-level features of the DeepLabv3+ decoder: they are
    taken from the last block at that level.
    """

    kind: str = "deeplabv3"
    level: int = 4
    aspp_channels: int = 256
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    aspp_dropout: float = 0.5
    decoder_level: int = 2
    decoder_channels: int = 48
    separable: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.aspp_rates, list):
            object.__setattr__(self, "aspp_rates", tuple(self.aspp_rates))


@dataclass(frozen=True)
class ArchSpec:
    """A whole segmentation network: stem, blocks, scaling, endpoints and head.

    Output blocks whose level lies in ``endpoint_levels`` (inclusive) are the backbone's
    endpoints; as in SpineNet, an output outside that range is not used. ``name`` is a label and
    takes no part in equality or the content hash.
    """

    blocks: tuple[Block, ...]
    scaling: Scaling = Scaling()
    head: Head = Head()
    endpoint_levels: tuple[int, int] = (MIN_LEVEL, MAX_LEVEL)
    stem_channels: int = 64
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.blocks, list):
            object.__setattr__(self, "blocks", tuple(self.blocks))
        if isinstance(self.endpoint_levels, list):
            object.__setattr__(self, "endpoint_levels", tuple(self.endpoint_levels))
        validate(self)

    # ----------------------------------------------------------------- derived structure
    def level_of(self, node: int) -> int:
        return STEM_LEVEL if node == STEM else self.blocks[node].level

    def channels_of(self, node: int) -> int:
        return self.stem_channels if node == STEM else self.blocks[node].out_channels(self.scaling)

    def resample_width_of(self, node: int) -> int:
        """The width a resampling starts from: a bottleneck's output / 4, else the output."""
        if node == STEM:
            return self.stem_channels
        return scaled_width(self.blocks[node].width, self.scaling)

    @cached_property
    def endpoints(self) -> dict[int, int]:
        """``{level: block index}`` of the output blocks inside ``endpoint_levels``."""
        lo, hi = self.endpoint_levels
        return {b.level: i for i, b in enumerate(self.blocks) if b.output and lo <= b.level <= hi}

    @cached_property
    def decoder_source(self) -> int | None:
        """The block whose output feeds the DeepLabv3+ decoder (last block at its level)."""
        if self.head.kind != "deeplabv3plus":
            return None
        at_level = [i for i, b in enumerate(self.blocks) if b.level == self.head.decoder_level]
        return at_level[-1] if at_level else None

    @cached_property
    def absorbed(self) -> dict[int, tuple[int, ...]]:
        """SpineNet's dead-end rule: ``{output block: earlier blocks it also sums}``.

        Walking the blocks in order, a fused output block takes every earlier block that has no
        outgoing connection so far and has the block's level and input width.
        """
        outgoing = [0] * len(self.blocks)
        result: dict[int, tuple[int, ...]] = {}
        for i, block in enumerate(self.blocks):
            for p in block.parents:
                if p != STEM:
                    outgoing[p] += 1
            if block.output and block.connection == "fuse":
                width = block.out_channels(self.scaling)
                taken = tuple(
                    j
                    for j in range(i)
                    if outgoing[j] == 0
                    and self.blocks[j].level == block.level
                    and self.blocks[j].out_channels(self.scaling) == width
                )
                for j in taken:
                    outgoing[j] += 1
                if taken:
                    result[i] = taken
        return result

    @cached_property
    def live(self) -> frozenset[int]:
        """Blocks the network computes: ancestors of the endpoints and of the decoder's input.

        Other blocks are dead genes: they stay in the spec (a mutation may revive them) but are
        not built, exactly as a Keras functional model leaves out layers that reach no output.
        """
        stack = list(self.endpoints.values())
        if self.decoder_source is not None:
            stack.append(self.decoder_source)
        seen: set[int] = set()
        while stack:
            node = stack.pop()
            if node == STEM or node in seen:
                continue
            seen.add(node)
            stack.extend(self.blocks[node].parents)
            stack.extend(self.absorbed.get(node, ()))
        return frozenset(seen)

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "name": self.name,
            "stem_channels": self.stem_channels,
            "endpoint_levels": list(self.endpoint_levels),
            "scaling": _plain(self.scaling),
            "head": _plain(self.head),
            "blocks": [_plain(b) for b in self.blocks],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> ArchSpec:
        return spec_from_dict(data)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        if len(text) > MAX_JSON_CHARS:
            raise SpecError(f"spec: {len(text):,} characters of JSON, more than the limit of {MAX_JSON_CHARS:,}")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise SpecError("malformed JSON: nested too deeply") from None
        return spec_from_dict(data)

    def canonical_json(self) -> str:
        """Key-sorted, whitespace-free JSON of everything but the name: the hashed form."""
        data = self.to_dict()
        del data["name"]
        return _canonical(data)

    @cached_property
    def hash(self) -> str:
        """Content hash, stable across processes and machines (16 hex digits of SHA-256)."""
        return _digest(self.canonical_json())

    @cached_property
    def network_hash(self) -> str:
        """Hash of the network the spec builds: equal for specs that differ only in dead genes.

        It covers exactly what the builder reads: the stem, scaling and head, and the live blocks
        in order with their parents, absorbed dead ends, endpoints and decoder source renumbered
        over live blocks. (Deleting the dead blocks from the spec instead would not do: a live
        block that lost its only, dead, child could then be absorbed by SpineNet's dead-end rule.)
        """
        live = sorted(self.live)
        slot = {STEM: STEM, **{block: k for k, block in enumerate(live)}}
        blocks = []
        for i in live:
            block = _plain(self.blocks[i])
            del block["output"]  # an output block matters through `endpoints` and `absorbed` only
            block["parents"] = [slot[p] for p in self.blocks[i].parents]
            block["absorbed"] = [slot[j] for j in self.absorbed.get(i, ())]
            blocks.append(block)
        data = self.to_dict()
        del data["name"], data["endpoint_levels"]
        data.update(
            blocks=blocks,
            endpoints={str(level): slot[i] for level, i in sorted(self.endpoints.items())},
            decoder_source=None if self.decoder_source is None else slot[self.decoder_source],
        )
        return _digest(_canonical(data))

    def with_blocks(self, blocks: tuple[Block, ...] | list[Block], name: str = "") -> ArchSpec:
        return replace(self, blocks=tuple(blocks), name=name)


def aspp_rates(level: int) -> tuple[int, ...]:
    """DeepLabv3's ASPP rates for a head at ``level``: (6, 12, 18) at output stride 16 or coarser, doubled at 8."""
    return (6, 12, 18) if level >= 4 else (12, 24, 36)


def scaled_width(width: int, scaling: Scaling) -> int:
    # SpineNet truncates: int(64 * 0.65) = 41.
    return int(width * scaling.filter_size_scale)


def _canonical(data: dict[str, Any]) -> str:
    """Key-sorted, whitespace-free JSON: one text per content."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _digest(text: str) -> str:
    """16 hex digits of SHA-256."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _show(value: Any, limit: int = 60) -> str:
    """``value`` as JSON cut to ``limit`` characters, so that an error stays one short line."""
    try:
        text = json.dumps(value)
    except (RecursionError, TypeError, ValueError):
        text = type(value).__name__
    return _clip(text, limit)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(obj: Any) -> dict[str, Any]:
    return {f.name: list(v) if isinstance(v := getattr(obj, f.name), tuple) else v for f in fields(obj)}


# --------------------------------------------------------------------------- parsing
_SPEC_WORDS = replace(JSON_WORDS, top="spec")


def spec_from_dict(data: Any) -> ArchSpec:
    """Build a spec from its JSON object, with errors that name the offending key (`nas.common.config`)."""
    if not isinstance(data, Mapping):
        raise SpecError(f"spec: expected a JSON object, got {_show(data, 40)}")
    if data.get("format", SPEC_FORMAT) != SPEC_FORMAT:
        raise SpecError(f"spec.format: unsupported format {_show(data['format'])} (expected {SPEC_FORMAT})")
    blocks = data.get("blocks")
    if isinstance(blocks, list) and len(blocks) > MAX_BLOCKS:  # before building them: the limit also bounds the work
        raise SpecError(f"spec.blocks: {len(blocks):,} blocks, more than the limit of {MAX_BLOCKS}")
    fields_only = {key: value for key, value in data.items() if key != "format"}
    try:
        return from_dict(ArchSpec, fields_only, words=_SPEC_WORDS)
    except ConfigError as exc:
        raise SpecError(str(exc)) from None


# --------------------------------------------------------------------------- validation
def validate(spec: ArchSpec) -> None:
    """Raise `SpecError` naming the first problem; the spec's constructor calls this."""
    if not spec.blocks:
        raise SpecError("spec: no blocks")
    if len(spec.blocks) > MAX_BLOCKS:
        raise SpecError(f"spec.blocks: {len(spec.blocks):,} blocks, more than the limit of {MAX_BLOCKS}")
    _validate_name(spec.name)
    if spec.stem_channels < 1:
        raise SpecError(f"stem_channels: must be >= 1, got {spec.stem_channels}")
    _at_most("stem_channels:", spec.stem_channels, MAX_CHANNELS)
    _validate_scaling(spec.scaling)
    for i, block in enumerate(spec.blocks):
        _validate_block(spec, i, block)
    _validate_outputs(spec)
    _validate_head(spec)
    _validate_size(spec)


def _at_most(label: str, value: float, limit: float) -> None:
    """``label`` names the field, e.g. ``block 3: width`` or ``stem_channels:``."""
    if value > limit:
        raise SpecError(f"{label} {value:,} is more than the limit of {limit:,}")


def _validate_name(name: str) -> None:
    if not isinstance(name, str):
        raise SpecError(f"name: expected a string, got {_clip(repr(name))}")
    if len(name) > MAX_NAME_CHARS:
        raise SpecError(f"name: {len(name):,} characters, more than the limit of {MAX_NAME_CHARS}")
    if not name.isprintable():  # names go into file names, titles and one-line messages
        raise SpecError(f"name: {_clip(repr(name))} holds a control character (a line break, a tab, ...)")


def _validate_scaling(s: Scaling) -> None:
    if not s.filter_size_scale > 0:
        raise SpecError(f"scaling.filter_size_scale: must be > 0, got {s.filter_size_scale}")
    _at_most("scaling.filter_size_scale:", s.filter_size_scale, MAX_FILTER_SIZE_SCALE)
    if s.block_repeats < 1:
        raise SpecError(f"scaling.block_repeats: must be >= 1, got {s.block_repeats}")
    _at_most("scaling.block_repeats:", s.block_repeats, MAX_BLOCK_REPEATS)
    if not s.resample_alpha > 0:
        raise SpecError(f"scaling.resample_alpha: must be > 0, got {s.resample_alpha}")
    _at_most("scaling.resample_alpha:", s.resample_alpha, MAX_RESAMPLE_ALPHA)
    if s.endpoint_channels is not None:
        if s.endpoint_channels < 1:
            raise SpecError(f"scaling.endpoint_channels: must be >= 1 or null, got {s.endpoint_channels}")
        _at_most("scaling.endpoint_channels:", s.endpoint_channels, MAX_CHANNELS)


def _validate_block(spec: ArchSpec, i: int, b: Block) -> None:
    where = f"block {i}"
    for name in ("level", "width", "dilation"):
        value = getattr(b, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise SpecError(f"{where}: {name} must be an integer, got {_clip(repr(value))}")
    if not MIN_LEVEL <= b.level <= MAX_LEVEL:
        raise SpecError(f"{where}: level {b.level} out of range [{MIN_LEVEL}, {MAX_LEVEL}]")
    if b.type not in BLOCK_TYPES:
        raise SpecError(f"{where}: type {_clip(repr(b.type))} is not one of {', '.join(BLOCK_TYPES)}")
    if b.connection not in CONNECTIONS:
        raise SpecError(f"{where}: connection {_clip(repr(b.connection))} is not one of {', '.join(CONNECTIONS)}")
    if b.width < 1 or scaled_width(b.width, spec.scaling) < 1:
        raise SpecError(f"{where}: width {b.width} is below 1 channel after scaling")
    _at_most(f"{where}: width", b.width, MAX_CHANNELS)
    scaled = scaled_width(b.width, spec.scaling)
    if scaled > MAX_CHANNELS:
        raise SpecError(
            f"{where}: width {b.width} x filter_size_scale {spec.scaling.filter_size_scale} = {scaled:,} channels, "
            f"more than the limit of {MAX_CHANNELS:,}"
        )
    if b.dilation < 1:
        raise SpecError(f"{where}: dilation must be >= 1, got {b.dilation}")
    _at_most(f"{where}: dilation", b.dilation, MAX_DILATION)
    if not isinstance(b.output, bool):
        raise SpecError(f"{where}: output must be a boolean, got {_clip(repr(b.output))}")
    if not isinstance(b.parents, tuple) or not all(isinstance(p, int) and not isinstance(p, bool) for p in b.parents):
        raise SpecError(f"{where}: parents must be a list of node indices, got {_clip(repr(b.parents))}")
    if b.connection == "chain" and len(b.parents) != 1:
        raise SpecError(f"{where}: a chain block has exactly one parent, got {len(b.parents)}")
    if b.connection == "fuse" and len(b.parents) not in (1, 2):
        raise SpecError(f"{where}: a fused block has one or two parents, got {len(b.parents)}")
    if len(set(b.parents)) != len(b.parents):
        raise SpecError(f"{where}: parent {b.parents[0]} is listed twice")
    for p in b.parents:
        if not STEM <= p < i:
            raise SpecError(f"{where}: parent {p} is not an earlier block (use -1 for the stem, 0..{i - 1})")
    if b.connection == "chain":
        parent_level = spec.level_of(b.parents[0])
        if b.level not in (parent_level, parent_level + 1):
            raise SpecError(
                f"{where}: level jump {parent_level}->{b.level} from parent {b.parents[0]} is not possible "
                f"for a chain connection (same level or one coarser); use connection 'fuse'"
            )
    else:
        alpha_width = min(int(spec.resample_width_of(p) * spec.scaling.resample_alpha) for p in b.parents)
        if alpha_width < 1:
            raise SpecError(f"{where}: resampling a parent leaves 0 channels (resample_alpha too small)")


def _validate_outputs(spec: ArchSpec) -> None:
    lo, hi = spec.endpoint_levels
    if not MIN_LEVEL <= lo <= hi <= MAX_LEVEL:
        raise SpecError(f"endpoint_levels: [{lo}, {hi}] is not a range inside [{MIN_LEVEL}, {MAX_LEVEL}]")
    seen: dict[int, int] = {}
    for i, b in enumerate(spec.blocks):
        if b.output:
            if b.level in seen:
                raise SpecError(f"block {i}: duplicate output level {b.level} (block {seen[b.level]} is one)")
            seen[b.level] = i
    if not seen:
        raise SpecError("spec: no output block (set output: true on at least one block)")
    if not spec.endpoints:
        raise SpecError(f"spec: no output block inside endpoint_levels [{lo}, {hi}]")


def _validate_head(spec: ArchSpec) -> None:
    h = spec.head
    if h.kind not in HEAD_KINDS:
        raise SpecError(f"head.kind: {_clip(repr(h.kind))} is not one of {', '.join(HEAD_KINDS)}")
    if h.level not in spec.endpoints:
        raise SpecError(
            f"head.level: no endpoint feature at level {h.level} (endpoints at levels "
            f"{', '.join(map(str, sorted(spec.endpoints)))})"
        )
    if h.aspp_channels < 1:
        raise SpecError(f"head.aspp_channels: must be >= 1, got {h.aspp_channels}")
    _at_most("head.aspp_channels:", h.aspp_channels, MAX_CHANNELS)
    if len(h.aspp_rates) > MAX_ASPP_RATES:
        raise SpecError(f"head.aspp_rates: {len(h.aspp_rates):,} rates, more than the limit of {MAX_ASPP_RATES}")
    if not h.aspp_rates or any(r < 1 for r in h.aspp_rates):
        raise SpecError(f"head.aspp_rates: must be positive integers, got {list(h.aspp_rates)}")
    _at_most("head.aspp_rates: rate", max(h.aspp_rates), MAX_DILATION)
    if not 0.0 <= h.aspp_dropout < 1.0:
        raise SpecError(f"head.aspp_dropout: must be in [0, 1), got {h.aspp_dropout}")
    if spec.scaling.endpoint_channels is None:
        widths = {lvl: spec.channels_of(i) for lvl, i in spec.endpoints.items()}
        if len(set(widths.values())) > 1:
            listed = ", ".join(f"level {lvl}: {w}" for lvl, w in sorted(widths.items()))
            raise SpecError(
                f"head: endpoints have different widths ({listed}); set scaling.endpoint_channels so they can be summed"
            )
    if not MIN_LEVEL <= h.decoder_level <= MAX_LEVEL:  # unused by a DeepLabv3 head, but still a level
        raise SpecError(f"head.decoder_level: {h.decoder_level} out of range [{MIN_LEVEL}, {MAX_LEVEL}]")
    if h.kind == "deeplabv3plus":
        if not MIN_LEVEL <= h.decoder_level < h.level:
            raise SpecError(
                f"head.decoder_level: {h.decoder_level} must be finer than head.level {h.level} and >= {MIN_LEVEL}"
            )
        if spec.decoder_source is None:
            raise SpecError(f"head.decoder_level: no block at level {h.decoder_level} to take low-level features from")
        if h.decoder_channels < 1:
            raise SpecError(f"head.decoder_channels: must be >= 1, got {h.decoder_channels}")
        _at_most("head.decoder_channels:", h.decoder_channels, MAX_CHANNELS)


def _validate_size(spec: ArchSpec) -> None:
    """Bound the built blocks' weights, which the per-field limits alone let grow with their product."""
    params = sum(_block_params_at_least(spec, i) for i in spec.live)
    if params > MAX_BLOCK_PARAMS:
        raise SpecError(
            f"spec: the built blocks hold at least {params:.2e} parameters (blocks x block_repeats x width^2), "
            f"more than the limit of {MAX_BLOCK_PARAMS:.0e}"
        )


def _block_params_at_least(spec: ArchSpec, i: int) -> int:
    """A lower bound of a block group's conv weights: per block a bottleneck has 3x3 and 1x1 convs of at
    least 9 + 4 times width^2 weights, a residual block two 3x3 convs of at least 9 times width^2."""
    block = spec.blocks[i]
    width = scaled_width(block.width, spec.scaling)
    return spec.scaling.block_repeats * (13 if block.type == "bottleneck" else 9) * width * width
