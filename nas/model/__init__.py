"""The phenotype: layers, the builder, costs, checkpoints and exports of a spec's network.

``create_model("spinenet-49", 19)`` or ``create_model("spec.json", 21)`` is the one entry point.
"""

from __future__ import annotations

from pathlib import Path

from search_spaces import ArchSpec, resolve_spec

from .builder import Backbone, SegmentationModel, build_backbone, build_model

__all__ = ["Backbone", "SegmentationModel", "build_backbone", "build_model", "create_model"]


def create_model(arch: str | Path | ArchSpec, num_classes: int) -> SegmentationModel:
    """The network of ``arch`` (a spec, a published name or a spec file) for ``num_classes`` classes."""
    return build_model(resolve_spec(arch), num_classes)
