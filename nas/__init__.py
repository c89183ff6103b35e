"""Architecture search for semantic segmentation: scale-permuted, dilated topologies searched from
DeepLabv3/v3+.

The packages form layers that import only downward (enforced by import-linter, see setup.cfg):
``nas.cli`` > ``analysis`` > ``nas.search`` > ``proxy_tasks`` > ``nas.model`` > ``search_spaces`` >
``nas.common``. This module imports none of them on import, so that the lowest layers stay light
(``search_spaces`` is pure Python); ``nas.create_model`` reaches into ``nas.model`` when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from search_spaces import ArchSpec

    from .model import SegmentationModel

__all__ = ["create_model"]


def create_model(arch: str | Path | ArchSpec, num_classes: int) -> SegmentationModel:
    """The one entry point: ``create_model("spinenet-49", 19)`` or ``create_model("spec.json", 21)``."""
    from .model import create_model as create

    return create(arch, num_classes)
