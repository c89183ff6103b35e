"""The phenotype: layers, the builder, costs, checkpoints and exports of a spec's network.

``create_model("spinenet-49", 19)`` or ``create_model("spec.json", 21)`` is the one entry point.
"""

from __future__ import annotations

from pathlib import Path

from search_spaces import ArchSpec, get_spec

from .builder import Backbone, SegmentationModel, build_backbone, build_model

__all__ = ["Backbone", "SegmentationModel", "build_backbone", "build_model", "create_model", "resolve_spec"]


def resolve_spec(arch: str | Path | ArchSpec) -> ArchSpec:
    """A spec from a spec, a published name, or a path to a spec JSON file."""
    if isinstance(arch, ArchSpec):
        return arch
    path = Path(arch)
    if str(arch).endswith(".json") or path.is_file():
        return ArchSpec.from_json(path.read_text())
    return get_spec(str(arch))


def create_model(arch: str | Path | ArchSpec, num_classes: int) -> SegmentationModel:
    """The network of ``arch`` (a spec, a published name or a spec file) for ``num_classes`` classes."""
    return build_model(resolve_spec(arch), num_classes)
