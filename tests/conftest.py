from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the hand-written reference network, benchmark helpers


@pytest.fixture(autouse=True)
def _seeded_single_thread() -> None:
    # Two test workers share two cores: one intra-op thread each avoids oversubscription.
    torch.manual_seed(0)
    torch.set_num_threads(1)
