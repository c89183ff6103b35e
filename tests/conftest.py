from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from search_spaces import ArchSpec, Scaling

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def slim(spec: ArchSpec, scale: float = 0.125, endpoint_channels: int | None = 16) -> ArchSpec:
    """The same topology with narrow layers, for fast forward passes in tests."""
    channels = endpoint_channels if spec.scaling.endpoint_channels is not None else None
    scaling = replace(spec.scaling, filter_size_scale=scale, endpoint_channels=channels)
    head = replace(spec.head, aspp_channels=16, decoder_channels=8)
    return replace(spec, scaling=scaling, head=head, stem_channels=16)


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


__all__ = ["ROOT", "Scaling", "slim"]
