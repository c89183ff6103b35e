"""Inference on whole validation images as the papers evaluate: in overlapping windows when an image
is too large for one pass, and with test-time augmentation (input scales, left-right flips).

* `window_logits`: the logits of a batch of images, computed in windows of ``window`` pixels that
  overlap by ``overlap`` of a window; where windows overlap their logits are averaged. Every pixel
  is covered (the last window of a row or column ends at the image's edge), so for a network that
  is translation-equivariant within a window the result equals one whole-image pass.
* `augmented_probabilities`: the class probabilities averaged over ``scales`` (the image resized by
  each, its logits resized back) and, with ``flip``, over the left-right mirrored image too. The
  DeepLab papers average the softmax this way for their multi-scale figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Forward = Callable[[Tensor], Tensor]


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Offsets of windows of ``window`` pixels, ``stride`` apart, covering ``[0, size)``; the last
    window ends at ``size`` (closer to its neighbour than ``stride`` when the size asks for it)."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    return [*starts, size - window]


def window_logits(forward: Forward, images: Tensor, window: tuple[int, int] | None, overlap: float) -> Tensor:
    """Logits (N x C x H x W, float) of ``images``: one pass, or windows of ``window`` (height,
    width) overlapping by the share ``overlap``, averaged where they overlap. A window larger than
    the image in a dimension shrinks to the image there."""
    height, width = images.shape[-2:]
    if window is None or (window[0] >= height and window[1] >= width):
        return forward(images).float()
    win_h, win_w = min(window[0], height), min(window[1], width)
    stride_h = max(1, math.ceil(win_h * (1 - overlap)))
    stride_w = max(1, math.ceil(win_w * (1 - overlap)))
    total: Tensor | None = None
    count = torch.zeros((1, 1, height, width), device=images.device)
    for top in window_starts(height, win_h, stride_h):
        for left in window_starts(width, win_w, stride_w):
            logits = forward(images[..., top : top + win_h, left : left + win_w]).float()
            if total is None:
                total = logits.new_zeros((images.shape[0], logits.shape[1], height, width))
            total[..., top : top + win_h, left : left + win_w] += logits
            count[..., top : top + win_h, left : left + win_w] += 1
    assert total is not None
    return total / count


def augmented_probabilities(
    forward: Forward,
    images: Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    window: tuple[int, int] | None = None,
    overlap: float = 1 / 3,
) -> Tensor:
    """Softmax probabilities (N x C x H x W) averaged over the input ``scales`` and, with ``flip``,
    over left-right flips; each pass runs in windows as `window_logits` does."""
    height, width = images.shape[-2:]
    total: Tensor | float = 0.0
    passes = 0
    for scale in scales or (1.0,):
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = images if size == (height, width) else _resize(images, size)
        for mirrored in (False, True) if flip else (False,):
            logits = window_logits(forward, scaled.flip(-1) if mirrored else scaled, window, overlap)
            if mirrored:
                logits = logits.flip(-1)
            if size != (height, width):
                logits = _resize(logits, (height, width))
            total = total + logits.softmax(dim=1)
            passes += 1
    assert isinstance(total, Tensor)
    return total / passes


def _resize(tensor: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)


def describe(window: tuple[int, int] | None, overlap: float, scales: Sequence[float] = (), flip: bool = False) -> str:
    """How an evaluation was made, in words (the label beside its mIoU)."""
    where = "whole images" if window is None else f"{window[0]}x{window[1]} windows overlapping {overlap:.2g}"
    if not scales and not flip:
        return f"single scale, {where}"
    shown = ", ".join(f"{s:g}" for s in (scales or (1.0,)))
    return f"scales {shown}{' with left-right flips' if flip else ''}, softmax averaged, {where}"


__all__ = ["augmented_probabilities", "describe", "window_logits", "window_starts"]
