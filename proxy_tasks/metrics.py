"""Segmentation metrics from a confusion matrix (the Cityscapes / PASCAL VOC convention).

* Pixels whose label is the ignore index (255) are excluded everywhere.
* IoU of class c = TP / (TP + FP + FN), from the confusion matrix accumulated over the whole
  evaluation set (not averaged per image).
* mIoU is the mean over the classes present in the ground truth or the predictions; a class
  absent from both has no defined IoU (0 / 0) and is left out of the mean (reported as NaN).
* Pixel accuracy = correctly labelled pixels / labelled pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class ConfusionMatrix:
    """Accumulates ``matrix[true, predicted]`` pixel counts."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu") -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add a batch: ``prediction`` (class indices or logits N x C x H x W) and ``target`` labels."""
        if prediction.dim() == target.dim() + 1:
            prediction = prediction.argmax(dim=1)
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        keep = target != self.ignore_index
        true = target[keep].long()
        if true.numel() and (true.min() < 0 or true.max() >= self.num_classes):
            raise ValueError(f"target labels outside [0, {self.num_classes}) that are not the ignore index")
        pred = prediction[keep].long()
        counts = torch.bincount(true * self.num_classes + pred, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes).to(self.matrix.device)

    def iou(self) -> list[float]:
        """Per-class IoU; NaN for a class absent from both ground truth and predictions."""
        m = self.matrix.double().cpu()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        return [float(t / u) if u > 0 else math.nan for t, u in zip(tp.tolist(), union.tolist())]

    def miou(self) -> float:
        present = [v for v in self.iou() if not math.isnan(v)]
        return sum(present) / len(present) if present else math.nan

    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return float(self.matrix.diag().sum()) / total if total else math.nan

    def summary(self, class_names: list[str] | None = None) -> dict[str, object]:
        names = class_names or [str(c) for c in range(self.num_classes)]
        return {
            "miou": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "per_class_iou": dict(zip(names, self.iou())),
        }
