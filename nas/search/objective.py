"""What a search optimises: mIoU, mIoU under a soft cost constraint, or a Pareto front.

* ``miou``: maximise mIoU.
* ``constrained``: maximise MnasNet's soft-constrained reward ``mIoU * (cost / target) ** weight``
  (``weight`` < 0, MnasNet uses -0.07): a candidate twice as costly as the target pays a factor
  2 ** -0.07 = 0.95, one at half the target gains 1.05.
* ``pareto``: two objectives, mIoU up and cost down; strategies that rank by one number (evolution,
  the leaderboard) use mIoU, multi-objective ones (NSGA-II, TPE) get both values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from nas.common.config import ConfigError

COSTS = ("flops", "latency_ms", "params")


@dataclass(frozen=True)
class Objective:
    kind: Literal["miou", "constrained", "pareto"] = "miou"
    cost: Literal["flops", "latency_ms", "params"] = "flops"
    target: float | None = None  # cost target of the constrained reward, in the cost's unit
    weight: float = -0.07

    def __post_init__(self) -> None:
        if self.kind == "constrained" and (self.target is None or self.target <= 0):
            raise ConfigError("target: the constrained objective needs a positive cost target")
        if self.weight > 0:
            raise ConfigError(f"weight: must be <= 0 (a penalty on cost), got {self.weight}")

    @property
    def directions(self) -> tuple[str, ...]:
        return ("maximize", "minimize") if self.kind == "pareto" else ("maximize",)

    def values(self, metrics: Mapping[str, Any]) -> tuple[float, ...] | None:
        """The objective values of a finished candidate (None if it has no usable mIoU)."""
        miou = finite_or_none(metrics.get("miou"))
        if miou is None:
            return None
        if self.kind == "miou":
            return (miou,)
        cost = finite_or_none(metrics.get(self.cost))
        if cost is None or cost <= 0:
            return None
        if self.kind == "pareto":
            return (miou, cost)
        return (miou * (cost / self.target) ** self.weight,)

    def score(self, metrics: Mapping[str, Any]) -> float | None:
        """One number to rank by (higher is better): the reward, or mIoU for a Pareto search."""
        values = self.values(metrics)
        return None if values is None else values[0]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (maximise first, minimise second), in input order."""
    front = []
    for i, (a, c) in enumerate(points):
        dominated = any((a2 >= a and c2 <= c) and (a2 > a or c2 < c) for j, (a2, c2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not a number, NaN or infinite."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
