"""Evaluation as the papers make it: overlapping windows, multi-scale and flipped inputs."""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.model.builder import build_model
from proxy_tasks.inference import augmented_probabilities, describe, window_logits, window_starts
from proxy_tasks.task import build_datasets, load_task
from proxy_tasks.trial import evaluate, run_trial
from search_spaces import get_spec
from tests.helpers import slim


def pointwise_net(classes: int = 4) -> nn.Module:
    """1x1 convolutions only: each pixel's logits depend on that pixel alone, so the network is
    exactly translation-equivariant and has no border effects."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, classes, 1)).eval()


def mirror_symmetric_net(classes: int = 4) -> nn.Module:
    """3x3 convolutions whose kernels are left-right symmetric: f(flip(x)) = flip(f(x))."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 3, padding=1))
    with torch.no_grad():
        for conv in (net[0], net[2]):
            conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    return net.eval()


def test_window_starts_cover_the_image_and_end_at_its_edge() -> None:
    assert window_starts(100, 40, 27) == [0, 27, 54, 60]
    assert window_starts(40, 40, 27) == [0]
    assert window_starts(30, 40, 27) == [0]  # a window larger than the image: one pass
    for size, window, stride in ((1024, 512, 342), (37, 16, 12), (53, 20, 15)):
        starts = window_starts(size, window, stride)
        covered = set()
        for s in starts:
            covered |= set(range(s, s + window))
        assert covered == set(range(size)) and starts[-1] + window == size
        assert all(b - a <= stride for a, b in pairwise(starts))


def test_windows_equal_the_whole_image_for_a_translation_equivariant_net() -> None:
    net = pointwise_net()
    images = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        whole = net(images)
        windowed = window_logits(net, images, (16, 20), overlap=0.25)
    assert windowed.shape == whole.shape
    assert torch.allclose(windowed, whole, atol=1e-6)
    # A net that sees its neighbours (zero padding at every window's border) differs near the seams:
    # the equality above is the windows' placement being right, not a test that cannot fail.
    seen = mirror_symmetric_net()
    with torch.no_grad():
        gap = (window_logits(seen, images, (16, 20), 0.25) - seen(images)).abs().max()
    assert gap > 1e-3


def test_a_window_as_large_as_the_image_is_one_pass() -> None:
    calls = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape[-2:]))
        return x[:, :2]

    images = torch.randn(1, 3, 24, 40)
    window_logits(forward, images, None, 0.5)
    window_logits(forward, images, (64, 64), 0.5)
    assert calls == [(24, 40), (24, 40)]
    calls.clear()
    window_logits(forward, images, (24, 16), 0.5)  # taller than needed, narrower than the image
    assert calls == [(24, 16)] * 4  # starts 0, 8, 16, 24 across 40 px


def test_flip_averaging_of_a_mirror_symmetric_net_equals_one_pass() -> None:
    net = mirror_symmetric_net()
    images = torch.randn(2, 3, 20, 28)
    with torch.no_grad():
        single = net(images).softmax(1)
        flipped = augmented_probabilities(net, images, (1.0,), flip=True)
    assert torch.allclose(flipped, single, atol=1e-6)
    # A net without the symmetry gives another average: the flip is really taken and undone.
    torch.manual_seed(1)
    lopsided = nn.Conv2d(3, 4, 3, padding=1).eval()
    with torch.no_grad():
        gap = (augmented_probabilities(lopsided, images, (1.0,), flip=True) - lopsided(images).softmax(1)).abs().max()
    assert gap > 1e-3


def test_multi_scale_averages_each_scales_resized_softmax() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, 1, 1), nn.Conv2d(8, 5, 3, padding=1))
    net.eval()
    images = torch.randn(1, 3, 32, 48)
    scales = (0.5, 1.0, 1.5)
    with torch.no_grad():
        averaged = augmented_probabilities(net, images, scales, flip=False)
        expected = torch.zeros_like(averaged)
        for scale in scales:
            scaled = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
            logits = F.interpolate(net(scaled), size=(32, 48), mode="bilinear", align_corners=False)
            expected += logits.softmax(1) / len(scales)
        single = net(images).softmax(1)
    assert averaged.shape == (1, 5, 32, 48)
    assert torch.allclose(averaged.sum(1), torch.ones(1, 32, 48), atol=1e-5)
    assert torch.allclose(averaged, expected, atol=1e-6)
    # It moves the probabilities, but not wildly: most pixels keep the single-scale class.
    gap = (averaged - single).abs().mean()
    assert 1e-4 < gap < 0.2
    assert (averaged.argmax(1) == single.argmax(1)).float().mean() > 0.5


def test_labels_say_how_each_evaluation_was_made() -> None:
    assert describe(None, 1 / 3) == "single scale, whole images"
    assert describe((1024, 2048), 1 / 3) == "single scale, 1024x2048 windows overlapping 0.33"
    text = describe(None, 0.5, (0.5, 1.0, 1.75), True)
    assert text == "scales 0.5, 1, 1.75 with left-right flips, softmax averaged, whole images"


def test_evaluate_single_and_multi_scale_on_a_small_network(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    task = load_task("synthetic")
    fid = replace(task.fidelity("smoke"), eval_scales=(0.75, 1.0, 1.25), eval_flip=True)
    _, val = build_datasets(task, fid)
    torch.manual_seed(0)
    model = build_model(slim(get_spec("deeplabv3-resnet50")), val.num_classes)
    device = torch.device("cpu")
    single = evaluate(model, val, task, fid, device)
    windowed = evaluate(model, val, task, replace(fid, eval_window=(32, 32), eval_overlap=0.5), device)
    multi = evaluate(model, val, task, fid, device, augmented=True)
    assert single["evaluation"] == "single scale, whole images"
    assert multi["evaluation"].startswith("scales 0.75, 1, 1.25 with left-right flips")
    for summary in (single, windowed, multi):
        assert 0 <= summary["miou"] <= 1 and math.isfinite(summary["loss"]) and summary["loss"] > 0
    assert multi["loss"] != pytest.approx(single["loss"], rel=1e-6)
    assert windowed["loss"] != pytest.approx(single["loss"], rel=1e-6)  # a real network sees its window's border


def test_a_trial_reports_single_and_multi_scale_miou_apart(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    task = load_task("synthetic")
    smoke = replace(task.fidelities["smoke"], steps=2, eval_scales=(0.5, 1.0), eval_flip=True)
    task = replace(task, fidelities={**task.fidelities, "smoke-ms": smoke}, workers=0)
    result = run_trial(slim(get_spec("deeplabv3-resnet50")), task, "smoke-ms", seed=0)
    plain = run_trial(slim(get_spec("deeplabv3-resnet50")), task, "smoke", seed=0)
    assert result.status == "ok" and 0 <= result.miou_ms <= 1 and 0 <= result.pixel_accuracy_ms <= 1
    assert set(result.per_class_iou_ms) == set(result.per_class_iou)
    assert result.evaluation == {
        "miou": "single scale, whole images",
        "miou_ms": "scales 0.5, 1 with left-right flips, softmax averaged, whole images",
    }
    assert math.isnan(plain.miou_ms) and plain.evaluation == {"miou": "single scale, whole images"}
    assert "miou_ms" in result.to_dict() and result.to_dict()["evaluation"]["miou_ms"].startswith("scales")


def test_nas_eval_prints_the_multi_scale_figures_beside_the_single_scale_ones(tmp_path, monkeypatch, capsys) -> None:
    import json

    import yaml

    from nas.cli import main
    from nas.model.checkpoint import save_model

    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    task = load_task("synthetic").to_dict()
    task["fidelities"]["smoke"].update(eval_scales=[0.5, 1.0], eval_flip=True, eval_window=[48, 48])
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))
    torch.manual_seed(0)
    save_model(tmp_path / "model.pt", build_model(slim(get_spec("deeplabv3-resnet50")), 7))
    assert main(["eval", str(tmp_path / "model.pt"), "--task", str(tmp_path / "task.yaml"), "--fidelity", "smoke"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["evaluation"] == "single scale, 48x48 windows overlapping 0.33"
    assert summary["evaluation_ms"].startswith("scales 0.5, 1 with left-right flips")
    assert 0 <= summary["miou"] <= 1 and 0 <= summary["miou_ms"] <= 1 and summary["loss_ms"] != summary["loss"]
