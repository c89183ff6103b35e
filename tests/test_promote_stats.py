"""The promotion's verdict: candidate against baseline mIoU over seeds, numbers worked by hand."""

from __future__ import annotations

import math

import pytest
from scipy.stats import t as student_t

from nas.search.promote import VERDICT_RULE, compare_seeds, format_comparison, verdict


def test_a_clear_margin_beats_the_baseline_beyond_seed_noise() -> None:
    stats = compare_seeds([0.5, 0.6, 0.7], [0.3, 0.4])
    # By hand: means 0.6 and 0.35, sample variances 0.01 and 0.005; Welch's standard error
    # sqrt(0.01/3 + 0.005/2) = 0.076376, t = 0.25 / 0.076376 = 3.2733; Welch-Satterthwaite
    # df = 0.0058333^2 / ((0.01/3)^2 / 2 + 0.0025^2 / 1) = 2.8824; one-sided p = P(T > t).
    assert stats["mean"] == pytest.approx(0.6) and stats["std"] == pytest.approx(0.1)
    assert stats["baseline_mean"] == pytest.approx(0.35) and stats["baseline_std"] == pytest.approx(math.sqrt(0.005))
    assert (stats["seeds"], stats["baseline_seeds"]) == (3, 2)
    assert stats["p_value"] == pytest.approx(student_t.sf(3.2733, 2.8824), rel=1e-3)
    assert stats["p_value"] < 0.05 and stats["beats"] is True


def test_a_margin_within_the_seed_spread_does_not() -> None:
    stats = compare_seeds([0.5, 0.6], [0.45, 0.55])
    # t = 0.05 / sqrt(0.005/2 + 0.005/2) = 0.70711 with df = 2: p = P(T > 0.70711) = 0.27639.
    assert stats["p_value"] == pytest.approx(0.27639, abs=1e-4) and stats["beats"] is False
    assert compare_seeds([0.4, 0.5], [0.6, 0.7])["beats"] is False  # worse: p near 1


def test_fewer_than_two_seeds_on_a_side_is_too_few_and_failed_seeds_do_not_count() -> None:
    stats = compare_seeds([0.9, float("nan")], [0.1, 0.2, 0.3])
    assert stats["seeds"] == 1 and stats["std"] is None and stats["p_value"] is None and stats["beats"] is None
    assert verdict("deeplabv3-resnet50", None).startswith("too few seeds")
    assert verdict("deeplabv3-resnet50", True) == "beats deeplabv3-resnet50 beyond seed noise"
    assert verdict("deeplabv3-resnet50", False) == "does not beat deeplabv3-resnet50 beyond seed noise"


def test_identical_seeds_on_both_sides_are_no_evidence() -> None:
    stats = compare_seeds([0.5, 0.5], [0.4, 0.4])  # no spread: the t statistic is undefined
    assert stats["p_value"] is None and stats["beats"] is False


def test_the_printed_comparison_states_the_rule_and_the_ratios() -> None:
    comparison = {
        "fidelity": "smoke",
        "seeds": [0, 1],
        "rule": VERDICT_RULE,
        "baselines": [{"name": "base", "spec_hash": "b" * 16, "mean": 0.35, "std": 0.07, "seeds": 2, "flops": 4e9}],
        "candidates": [
            {
                "name": "cand",
                "spec_hash": "c" * 16,
                "mean": 0.6,
                "std": 0.1,
                "seeds": 2,
                "flops": 1e9,
                "params": 2e6,
                "versus": [
                    {
                        "baseline": "base",
                        "p_value": 0.012,
                        "verdict": "beats base beyond seed noise",
                        "flops_ratio": 0.25,
                        "params_ratio": None,
                    }
                ],
            }
        ],
    }
    text = "\n".join(format_comparison(comparison))
    assert "comparison at smoke fidelity over seeds 0, 1" in text
    assert "candidate cand (cccccccccc): 0.6000 ± 0.1000 over 2 seeds, 1.000 GFLOPs, 2.00 M params" in text
    assert "vs base: FLOPs x0.250, params x-, p 0.0120: beats base beyond seed noise" in text
    assert "one-sided Welch t-test" in text and "p < 0.05" in text and format_comparison({}) == []
