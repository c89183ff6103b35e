"""Confusion-matrix metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from proxy_tasks.metrics import ConfusionMatrix


def test_hand_computed_example_with_ignore_and_absent_class() -> None:
    # 3 classes; class 2 never appears in ground truth or prediction; 255 is ignored.
    target = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 2]])  # the 2 is at an ignored pixel
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[2, 1, 0], [1, 3, 0], [0, 0, 0]]
    iou = cm.iou()
    # class 0: TP 2, FP 1, FN 1 -> 2/4; class 1: TP 3, FP 1, FN 1 -> 3/5; class 2: absent -> NaN
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(0.6) and math.isnan(iou[2])
    assert cm.miou() == pytest.approx((0.5 + 0.6) / 2)
    assert cm.pixel_accuracy() == pytest.approx(5 / 7)


def test_class_predicted_but_absent_from_ground_truth_counts_as_zero() -> None:
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 2]]), torch.tensor([[0, 0]]))
    assert cm.iou()[0] == pytest.approx(0.5)
    assert cm.iou()[2] == 0.0 and math.isnan(cm.iou()[1])
    assert cm.miou() == pytest.approx(0.25)


def test_accumulates_over_batches_not_per_image_means() -> None:
    a, b = ConfusionMatrix(2), ConfusionMatrix(2)
    t1, p1 = torch.tensor([[0, 0, 0, 1]]), torch.tensor([[0, 0, 0, 0]])
    t2, p2 = torch.tensor([[1, 1]]), torch.tensor([[1, 1]])
    a.update(p1, t1)
    a.update(p2, t2)
    b.update(torch.cat([p1.flatten(), p2.flatten()])[None], torch.cat([t1.flatten(), t2.flatten()])[None])
    assert a.matrix.tolist() == b.matrix.tolist()
    assert a.iou() == pytest.approx([3 / 4, 2 / 3])


def test_logits_are_reduced_with_argmax() -> None:
    logits = torch.tensor([[[[0.1, 2.0]], [[1.0, 0.5]]]])  # N=1, C=2, H=1, W=2 -> prediction [1, 0]
    cm = ConfusionMatrix(2)
    cm.update(logits, torch.tensor([[[1, 0]]]))
    assert cm.pixel_accuracy() == 1.0 and cm.miou() == 1.0


def test_bad_labels_and_shapes_are_errors() -> None:
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([[0]]), torch.tensor([[5]]))
    with pytest.raises(ValueError, match="differ in shape"):
        cm.update(torch.tensor([[0, 1]]), torch.tensor([[0]]))


def test_summary_names_classes() -> None:
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    summary = cm.summary(["road", "car"])
    assert summary["per_class_iou"] == {"road": 1.0, "car": 1.0} and summary["miou"] == 1.0
