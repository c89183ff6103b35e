"""How far one ranking of architectures predicts another: rank correlations with bootstrap intervals.

`rank_agreement(x, y)` gives Kendall's tau and Spearman's rho between two measurements of the same
architectures (a cheap fidelity against a dearer one, or one seed against another) with a percentile
bootstrap interval over the architectures: resample the (x, y) pairs with replacement, recompute,
take the central ``level`` share. An interval that includes 0 means the data cannot tell the ranking
from chance. The resampling is seeded, so the same numbers give the same interval.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

LEVEL = 0.9
RESAMPLES = 2000
# What `rank_agreement` returns besides ``n`` and ``level``, in the order tables show them.
AGREEMENT_KEYS = ("tau", "tau_low", "tau_high", "rho", "rho_low", "rho_high", "includes_zero")
MIN_PAIRS = 3  # below this a rank correlation says nothing (two points always agree or disagree)


def rank_agreement(
    x: Sequence[float], y: Sequence[float], level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Kendall tau and Spearman rho of the pairs (x[i], y[i]) whose values are both numbers, each with
    its bootstrap interval (``*_low``, ``*_high``), ``n`` the pairs used and ``includes_zero``: whether
    the tau interval includes 0. With fewer than `MIN_PAIRS` pairs every figure is None."""
    from scipy.stats import kendalltau, spearmanr

    pairs = [(float(a), float(b)) for a, b in zip(x, y) if _rankable(a) and _rankable(b)]
    result: dict[str, Any] = {"n": len(pairs), "level": level}
    for key in AGREEMENT_KEYS:
        result[key] = None
    if len(pairs) < MIN_PAIRS:
        return result
    a, b = np.array(pairs).T
    result["tau"] = _nan_to_none(kendalltau(a, b).statistic)
    result["rho"] = _nan_to_none(spearmanr(a, b).statistic)
    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    for _ in range(resamples):
        pick = rng.integers(0, len(a), len(a))
        if (a[pick] == a[pick][0]).all() or (b[pick] == b[pick][0]).all():
            continue  # a resample of one repeated value has no ranking
        taus.append(kendalltau(a[pick], b[pick]).statistic)
        rhos.append(spearmanr(a[pick], b[pick]).statistic)
    tail = (1 - level) / 2 * 100
    if taus:
        result["tau_low"], result["tau_high"] = (float(v) for v in np.nanpercentile(taus, [tail, 100 - tail]))
        result["rho_low"], result["rho_high"] = (float(v) for v in np.nanpercentile(rhos, [tail, 100 - tail]))
        result["includes_zero"] = result["tau_low"] <= 0 <= result["tau_high"]
    return result


def spread_over_noise(by_arch: Sequence[Sequence[float]]) -> float | None:
    """How far apart the architectures are against how far their seeds are: the standard deviation of
    the per-architecture means over the mean of the per-architecture seed standard deviations
    (architectures with 2+ finite values). Above 1: the ranking is more than seed noise."""
    groups = [[float(v) for v in values if _finite(v)] for values in by_arch]
    groups = [g for g in groups if len(g) >= 2]
    if len(groups) < 2:
        return None
    noise = statistics.fmean(statistics.stdev(g) for g in groups)
    spread = statistics.stdev(statistics.fmean(g) for g in groups)
    return None if noise == 0 else spread / noise


def format_agreement(stats: dict[str, Any]) -> str:
    """``tau 0.62 [0.41, 0.78], rho 0.80 [0.62, 0.90], n 40`` (the interval at the stats' level)."""
    if stats.get("tau") is None:
        if stats.get("n", 0) >= MIN_PAIRS:
            return f"no ranking (constant values), n {stats['n']}"
        return f"too few pairs (n {stats.get('n', 0)}, need {MIN_PAIRS})"
    flag = "  <- interval includes 0" if stats.get("includes_zero") else ""
    return (
        f"tau {_num(stats['tau'])} [{_num(stats['tau_low'])}, {_num(stats['tau_high'])}], "
        f"rho {_num(stats['rho'])} [{_num(stats['rho_low'])}, {_num(stats['rho_high'])}], n {stats['n']}{flag}"
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _rankable(value: Any) -> bool:
    """A number that has a place in a ranking: an infinity does (a singular NASWOT kernel scores -inf,
    the lowest), NaN does not."""
    try:
        return value is not None and not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _nan_to_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
