"""Cost model: parameters, FLOPs from torch's flop counter, latency."""

from __future__ import annotations

import torch
from torch import nn

from nas.model.cost import count_flops, count_params, measure_latency


class OneConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def test_flops_of_a_convolution_are_two_per_multiply_add() -> None:
    # 8 output channels x 16 x 16 pixels x (3 x 3 x 3) multiply-adds, 2 FLOPs each.
    assert count_flops(OneConv(), (16, 16)) == 2 * 8 * 16 * 16 * 27
    assert count_flops(OneConv(), (16, 16), batch=3) == 3 * 2 * 8 * 16 * 16 * 27


def test_params_count_only_trainable_tensors() -> None:
    model = OneConv()
    assert count_params(model) == 8 * 27 + 2 * 8  # BN running stats are buffers
    model.conv.weight.requires_grad_(False)
    assert count_params(model) == 16


def test_latency_is_a_positive_median_and_keeps_the_mode() -> None:
    model = OneConv().train()
    ms = measure_latency(model, (32, 32), warmup=1, repeats=3)
    assert ms > 0
    assert model.training
