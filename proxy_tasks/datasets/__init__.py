"""Datasets: the built-in synthetic scenes and the Cityscapes, PASCAL VOC and folder layouts.

A dataset yields ``(image uint8 H x W x 3, mask uint8 H x W)`` with train ids and 255 = ignore,
and has ``class_names``, ``num_classes`` and ``fixed_size`` (all images the same size).
"""

from __future__ import annotations

import numpy as np

from .files import DatasetError, FileSegmentationDataset, cityscapes, folder, voc
from .synthetic import SHAPES, load_or_generate


class SyntheticDataset:
    """Synthetic scenes held in memory (see `proxy_tasks.datasets.synthetic`)."""

    fixed_size = True
    prescaled = True  # rendered at the fidelity's resolution already

    def __init__(
        self,
        count: int,
        size: int,
        seed: int,
        min_objects: int = 5,
        max_objects: int = 12,
        shapes: tuple[str, ...] = SHAPES,
    ) -> None:
        self.class_names = ("background", *shapes)
        self.num_classes = len(self.class_names)
        self.images, self.masks = load_or_generate(count, size, seed, min_objects, max_objects, shapes=shapes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[index], self.masks[index]


__all__ = [
    "DatasetError",
    "FileSegmentationDataset",
    "SyntheticDataset",
    "cityscapes",
    "folder",
    "voc",
]
