"""The fidelity ladder of a search: which candidates go up a rung, and how well each rung predicts the next.

A search with ``ladder:`` evaluates every candidate at the cheapest rung and sends the best ``keep``
share of each rung up to the next, up to the search's ``fidelity`` (successive halving across
fidelities). `goes_up` decides once, when the candidate's result arrives: it goes up when its value
ranks within the best ``ceil(keep * n)`` of the n results of its rung so far (itself included), so
the decision depends only on the table up to its row and a resumed search decides the same. The
first results are compared with few: the very first always goes up. A rung sends up at most
``ceil(keep * budget)`` candidates over the whole search, a later rung ``keep`` of the cap of the
rung below (`rung_quotas`): without that cap a stream of ever better candidates, which an evolving
population is, sends up far more than ``keep`` of them (62 % at keep 0.3 in the quickstart).
Baselines always go up (they are the reference at every rung) and count among the results, not
against the cap.

`ladder_agreement` measures the ladder: for each rung and the next, Kendall tau and Spearman rho with
bootstrap intervals (`nas.search.correlation.rank_agreement`) between the candidates' values at the
two rungs, over the candidates that reached both (the ones the lower rung kept: a narrower range than
the rung saw, which lowers the correlations).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

from .config import RungConfig
from .correlation import format_agreement, rank_agreement
from .status import DUPLICATE, OK


def rung_of(row: dict[str, Any]) -> int:
    """A row's rung (a table written before ladders has only rung 0)."""
    rung = row.get("rung")
    return 0 if rung is None or rung != rung else int(rung)  # NaN from pandas: no rung


def rank_value(row: dict[str, Any], metric: str = "auto") -> float | None:
    """What ranks a row at its rung, higher is better: ``metric`` (a column, "-column" for lower is
    better), or for ``auto`` the zero-cost score of a training-free fidelity, else the objective."""
    if metric == "auto":
        metric = "score" if _finite(row.get("score")) else "objective"
    sign = -1.0 if metric.startswith("-") else 1.0
    value = row.get(metric.lstrip("-"))
    return sign * float(value) if _finite(value) else None


def goes_up(
    row: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    rung: RungConfig,
    baseline: bool,
    quota: int | None = None,
    baselines: frozenset[str] = frozenset(),
) -> bool:
    """Whether the candidate of ``row`` (at ``rung``, not the top) goes up; ``rows``: the table up to
    and including ``row``. ``quota``: the most candidates (baselines aside: rows of origin "baseline"
    or of a spec hash in ``baselines``) this rung sends up over the whole search, `rung_quotas`; once
    that many have gone up, no more do. One pass over the table: each earlier candidate's decision is
    replayed against the values its rung held when it arrived."""
    if row["status"] != OK:
        return False
    if baseline:
        return True
    level, cap = rung_of(row), math.inf if quota is None else quota
    arrived: list[float] = []  # the values of the rung so far, sorted
    sent = 0
    for earlier in rows:
        if rung_of(earlier) != level or earlier["status"] != OK:
            continue
        value = rank_value(earlier, rung.metric)
        if value is not None:
            bisect.insort(arrived, value)
        if earlier is row or (row.get("trial_id") is not None and earlier.get("trial_id") == row["trial_id"]):
            return value is not None and _within(value, arrived, rung.keep) and sent < cap
        is_baseline = earlier.get("origin") == "baseline" or earlier.get("spec_hash") in baselines
        if not is_baseline and value is not None and sent < cap:
            sent += _within(value, arrived, rung.keep)
    mine = rank_value(row, rung.metric)  # a row not in ``rows``: judged against all of them
    return mine is not None and _within(mine, arrived, rung.keep) and sent < cap


def _within(value: float, arrived: list[float], keep: float) -> bool:
    """Whether ``value`` is within the best ``ceil(keep * n)`` of the n sorted values ``arrived``."""
    better = len(arrived) - bisect.bisect_right(arrived, value)
    return better < math.ceil(keep * len(arrived))


def rung_quotas(ladder: Sequence[RungConfig], budget: int) -> list[int]:
    """The most candidates each rung sends up: ``keep`` of the budget at the cheapest rung, ``keep`` of
    what the rung below sends up at the others (rounded up), so that ``keep`` bounds what a rung passes
    on even when later candidates keep beating earlier ones (as an evolving population does)."""
    quotas, arriving = [], budget
    for rung in ladder:
        arriving = math.ceil(rung.keep * arriving)
        quotas.append(arriving)
    return quotas


def ladder_agreement(rows: Sequence[dict[str, Any]], ladder: Sequence[RungConfig], top: str) -> list[dict[str, Any]]:
    """One entry per pair of adjacent rungs: their fidelities, how many candidates each evaluated, and
    the rank agreement over the candidates (baselines too) at both (`rank_agreement`'s keys)."""
    metrics = [r.metric for r in ladder] + ["auto"]
    fidelities = [r.fidelity for r in ladder] + [top]
    by_rung: list[dict[str, float]] = [{} for _ in fidelities]
    reached: list[set[str]] = [set() for _ in fidelities]  # every candidate with a finished trial there
    for row in rows:
        level = rung_of(row)
        if row["status"] == DUPLICATE or level >= len(fidelities):
            continue
        reached[level].add(row["spec_hash"])
        if row["status"] != OK:
            continue
        value = rank_value(row, metrics[level])
        if value is not None:
            by_rung[level].setdefault(row["spec_hash"], value)
    out = []
    for level in range(len(ladder)):
        low, high = by_rung[level], by_rung[level + 1]
        both = sorted(h for h in low if h in high)  # the same pairs in the same order, whatever read the rows
        stats = rank_agreement([low[h] for h in both], [high[h] for h in both])
        out.append(
            {
                "rung": level,
                "fidelity": fidelities[level],
                "next_fidelity": fidelities[level + 1],
                "evaluated": len(low),
                "went_up": len(reached[level + 1]),  # failed ones too (``n``: those with values at both)
                **stats,
            }
        )
    return out


def format_ladder(entries: Sequence[dict[str, Any]]) -> list[str]:
    """The lines `nas show` and `nas search` print for `ladder_agreement`; [] without a ladder."""
    if not entries:
        return []
    lines = ["fidelity ladder (rank agreement of each rung with the next, over the networks at both; 90% intervals):"]
    for e in entries:
        lines.append(
            f"  {e['fidelity']} -> {e['next_fidelity']}: {e['evaluated']} evaluated, {e['went_up']} went up; "
            + format_agreement(e)
        )
    return lines


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
