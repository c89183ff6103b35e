"""Cost model: trainable parameters, FLOPs (torch.utils.flop_counter) and measured latency."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: nn.Module) -> int:
    """Trainable parameters (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@torch.no_grad()
def count_flops(model: nn.Module, input_size: tuple[int, int], batch: int = 1) -> int:
    """Forward FLOPs for one batch (a multiply-add counts 2), from PyTorch's flop counter."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(batch, 3, *input_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    input_size: tuple[int, int],
    device: str | torch.device = "cpu",
    batch: int = 1,
    warmup: int = 3,
    repeats: int = 10,
    channels_last: bool = False,
) -> float:
    """Median forward time in milliseconds after ``warmup`` untimed runs."""
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    x = torch.randn(batch, 3, *input_size, device=device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(warmup):
        model(x)
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        _synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    model.train(was_training)
    return statistics.median(times)
