"""Initial weights from a checkpoint: torchvision's ResNets and DeepLabv3s, or this project's own.

`read_weights(path)` reads a state_dict (``torch.load(weights_only=True)``: nothing in the file
runs) and `load_into(model, weights)` copies it into a freshly built network. The kind of file is
told by its names:

* a torchvision ImageNet ResNet-50 or -101 (``conv1.weight``, ``layer1.0.conv1.weight``, ...):
  the backbone of a ResNet spec (the DeepLab specs, at any output stride); the head stays as
  initialised, and ``fc.*`` (ImageNet's classifier) is not used;
* a torchvision ``deeplabv3_resnet50`` / ``deeplabv3_resnet101`` (``backbone.layer1.0.conv1.weight``,
  ``classifier.0.convs.0.0.weight``, ...): backbone and DeepLabv3 head; ``aux_classifier.*`` (the
  auxiliary FCN head, which our networks do not have) is not used;
* this project's names (a `nas train` ``checkpoint.pt``, a promoted ``model.pt``, or their state_dict).

Tensors are matched by name, never by order: torchvision's ``layer<s>.<i>`` is block ``i`` of stage
``s`` of our ResNet chain (stages start where the block width changes), its ``conv<j>`` / ``bn<j>``
our ``conv<j>.0`` / ``conv<j>.1``, ``downsample`` our ``shortcut``; ``conv1`` / ``bn1`` our stem; the
ASPP branches, projection, 3x3 conv and classifier of the head likewise. A tensor the network needs
that the file lacks, one whose shape differs, and one of the file that nothing takes are each a
problem of one line; strict loading (the default) refuses a file with any, a partial one loads
the tensors that fit and reports the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nas.common.errors import UserError
from search_spaces import ArchSpec

from .builder import SegmentationModel, build_model

RESNET = "torchvision ResNet"
DEEPLABV3 = "torchvision DeepLabv3"
NATIVE = "nas"
# What a kind of file is expected to set (by our names' prefix; "" is everything) and which of its
# tensors are known to have no counterpart in our networks.
EXPECTED = {RESNET: "backbone.", DEEPLABV3: "", NATIVE: ""}
UNUSED = {RESNET: ("fc.",), DEEPLABV3: ("aux_classifier.",), NATIVE: ()}
SHOWN_PROBLEMS = 2  # problems named in a refusal's one line


class InitError(UserError):
    """An initialisation file that cannot be used; the message names the file."""


@dataclass
class InitReport:
    """What `load_into` did: the tensors set from the file, those left as initialised, the problems."""

    source: str
    kind: str
    loaded: list[str] = field(default_factory=list)  # our names, set from the file
    fresh: list[str] = field(default_factory=list)  # our names the file is not expected to set (e.g. the head)
    problems: list[str] = field(default_factory=list)  # one line each: missing, mis-shaped, unused

    def summary(self) -> str:
        skipped = f", {len(self.problems)} problems skipped" if self.problems else ""
        return (
            f"{len(self.loaded)} tensors from {self.source} ({self.kind}), "
            f"{len(self.fresh)} freshly initialised{skipped}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "kind": self.kind,
            "loaded": len(self.loaded),
            "fresh": len(self.fresh),
            "problems": list(self.problems),
        }


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """The state_dict in ``path``: a plain one, or one under ``state_dict`` or ``model`` (training
    checkpoints), with a data-parallel ``module.`` prefix removed."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InitError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InitError(f"{path}: is a folder, not a weights file") from None
    except Exception as exc:  # unpickling errors come in many types
        raise InitError(f"{path}: not a readable weights file ({type(exc).__name__})") from None
    if isinstance(payload, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), Mapping):
                payload = payload[key]
                break
    if not isinstance(payload, Mapping) or not payload:
        raise InitError(f"{path}: not a state_dict (expected a mapping of names to tensors)")
    bad = next((k for k, v in payload.items() if not isinstance(k, str) or not isinstance(v, Tensor)), None)
    if bad is not None:
        raise InitError(f"{path}: not a state_dict ({str(bad)[:60]!r} is not a name with a tensor)")
    weights = dict(payload)
    if all(k.startswith("module.") for k in weights):
        weights = {k.removeprefix("module."): v for k, v in weights.items()}
    return weights


def file_kind(weights: Mapping[str, Tensor]) -> str:
    """Which kind of checkpoint ``weights`` is, by its names (see the module docstring)."""
    if "backbone.stem.0.0.weight" in weights:
        return NATIVE
    if "backbone.conv1.weight" in weights and "classifier.0.convs.0.0.weight" in weights:
        return DEEPLABV3
    if "conv1.weight" in weights and "layer1.0.conv1.weight" in weights:
        return RESNET
    raise InitError(
        "not a torchvision ResNet, a torchvision DeepLabv3 nor a nas checkpoint "
        f"(its first names: {', '.join(list(weights)[:3])})"
    )


def resnet_stages(spec: ArchSpec) -> list[tuple[int, int]] | None:
    """(stage, index) of each built block of a ResNet chain, in build order (stages from 1, a new
    one where the width changes), or None when ``spec`` is not a chain of single bottlenecks."""
    if spec.scaling.block_repeats != 1:
        return None
    layout: list[tuple[int, int]] = []
    previous_width = None
    for block_id in sorted(spec.live):
        block = spec.blocks[block_id]
        if block.connection != "chain" or block.type != "bottleneck":
            return None
        if block.width != previous_width:
            layout.append((len({s for s, _ in layout}) + 1, 0))
        else:
            stage, index = layout[-1]
            layout.append((stage, index + 1))
        previous_width = block.width
    return layout


def module_names(model: SegmentationModel, kind: str) -> dict[str, str]:
    """Our module names -> the file's, for a file of ``kind`` (the identity for our own names)."""
    if kind == NATIVE:
        return {name: name for name, _ in model.named_modules() if name}
    prefix = "backbone." if kind == DEEPLABV3 else ""
    names = {"backbone.stem.0.0": f"{prefix}conv1", "backbone.stem.0.1": f"{prefix}bn1"}
    for node, (stage, index) in enumerate(resnet_stages(model.spec) or []):
        ours, theirs = f"backbone.nodes.{node}.body.0", f"{prefix}layer{stage}.{index}"
        for j in (1, 2, 3):
            names[f"{ours}.conv{j}.0"], names[f"{ours}.conv{j}.1"] = f"{theirs}.conv{j}", f"{theirs}.bn{j}"
        names[f"{ours}.shortcut.0"], names[f"{ours}.shortcut.1"] = f"{theirs}.downsample.0", f"{theirs}.downsample.1"
    if kind == DEEPLABV3:
        names.update(_aspp_names(len(model.spec.head.aspp_rates)))  # a DeepLabv3+ head has the same ASPP
        if model.spec.head.kind == "deeplabv3":
            names["head.conv.0"], names["head.conv.1"] = "classifier.1", "classifier.2"
            names["head.classifier"] = "classifier.4"
    return names


def _aspp_names(rates: int) -> dict[str, str]:
    """torchvision's DeepLabHead: classifier.0 is the ASPP (convs: 1x1, one per rate, pooling;
    project), classifier.1 / .2 the 3x3 conv and its BN, classifier.4 the 1x1 classifier."""
    names = {}
    for branch in range(rates + 1):
        for part in (0, 1):
            names[f"head.aspp.branches.{branch}.{part}"] = f"classifier.0.convs.{branch}.{part}"
    pooling = rates + 1  # ours: (pool, conv-BN-ReLU); theirs: (pool, conv, BN, ReLU)
    names[f"head.aspp.branches.{pooling}.1.0"] = f"classifier.0.convs.{pooling}.1"
    names[f"head.aspp.branches.{pooling}.1.1"] = f"classifier.0.convs.{pooling}.2"
    names["head.aspp.project.0.0"], names["head.aspp.project.0.1"] = "classifier.0.project.0", "classifier.0.project.1"
    return names


def plan(model: SegmentationModel, weights: Mapping[str, Tensor], source: str = "") -> tuple[InitReport, dict]:
    """The report of loading ``weights`` into ``model`` and the (our name -> file name) pairs that fit."""
    kind = file_kind(weights)
    report = InitReport(source or "the weights", kind)
    modules = module_names(model, kind)
    expected = EXPECTED[kind]
    taken: dict[str, str] = {}
    claimed: set[str] = set()  # the file's names some tensor of the network maps to, fitting or not
    for ours, tensor in model.state_dict().items():
        module, _, leaf = ours.rpartition(".")
        theirs = f"{modules[module]}.{leaf}" if module in modules else None
        if not ours.startswith(expected):
            report.fresh.append(ours)
            continue
        if theirs is not None:
            claimed.add(theirs)
        if theirs is None:
            report.problems.append(f"{ours}: the network's, no counterpart in a {kind} checkpoint")
        elif theirs not in weights:
            report.problems.append(f"{theirs}: not in the file (the network's {ours})")
        elif tuple(weights[theirs].shape) != tuple(tensor.shape):
            shapes = f"{list(weights[theirs].shape)} in the file, {list(tensor.shape)} in the network"
            report.problems.append(f"{theirs}: shape {shapes} ({ours})")
        else:
            taken[ours] = theirs
    for theirs in weights:
        if theirs not in claimed and not theirs.startswith(UNUSED[kind]):
            report.problems.append(f"{theirs}: in the file, no counterpart in the network")
    report.loaded = list(taken)
    return report, taken


def load_into(
    model: SegmentationModel, weights: Mapping[str, Tensor], source: str = "", strict: bool = True
) -> InitReport:
    """Copy ``weights`` into ``model`` by name (see the module docstring). ``strict``: refuse, in one
    line, a file with any problem, before anything is copied; else copy what fits."""
    report, taken = plan(model, weights, source)
    if strict and report.problems:
        raise InitError(refusal(report, model.spec))
    state = model.state_dict()
    with torch.no_grad():
        for ours, theirs in taken.items():
            state[ours].copy_(weights[theirs])
    return report


def refusal(report: InitReport, spec: ArchSpec) -> str:
    """The one line that refuses a strict initialisation: the count and the first problems."""
    shown = "; ".join(report.problems[:SHOWN_PROBLEMS])
    more = len(report.problems) - SHOWN_PROBLEMS
    count = len(report.problems)
    tensors = "1 tensor does not fit" if count == 1 else f"{count} tensors do not fit"
    return (
        f"{report.source}: {tensors} {spec.name or spec.hash} "
        f"({report.kind} checkpoint): {shown}{f' (and {more} more)' if more > 0 else ''}; "
        "--init-partial loads the tensors that fit"
    )


def check_fits(
    spec: ArchSpec, num_classes: int, weights: Mapping[str, Tensor], source: str = "", strict: bool = True
) -> InitReport:
    """`load_into` a network of ``spec`` built without memory (on the meta device): what loading would
    do, or the refusal, before anything is trained or written."""
    with torch.device("meta"):
        model = build_model(spec, num_classes)
    return load_into(model, weights, source, strict)


__all__ = [
    "InitError",
    "InitReport",
    "check_fits",
    "file_kind",
    "load_into",
    "module_names",
    "plan",
    "read_weights",
    "resnet_stages",
]
