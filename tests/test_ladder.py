"""The fidelity ladder: who goes up a rung, what the controller is told, resume, and the ladder's own measurement."""

from __future__ import annotations

import math
import random

import pytest
from scipy.stats import kendalltau
from search_bench import likeness_objective

from nas.common.config import ConfigError
from nas.search import STRATEGIES, Objective, Outcome, Search, evaluate_in_process
from nas.search.config import RungConfig, SearchConfig, search_config_from_dict
from nas.search.ladder import goes_up, ladder_agreement, rank_value, rung_quotas
from search_spaces import SearchSpace, get_spec

SPACE = SearchSpace()
likeness = likeness_objective()
LADDER = (RungConfig("zc", keep=0.25), RungConfig("cheap", keep=0.5))


def evaluate(candidate, fidelities=("zc", "cheap", "full"), rung=None) -> Outcome:
    """Rung 0 a training-free score, rungs 1 and 2 an mIoU: all monotone in the hidden likeness, with
    a distortion that grows down the ladder (the cheaper, the noisier)."""
    rung = candidate.rung if rung is None else rung
    true = likeness(candidate.spec)
    wobble = math.sin(1000 * true + 7 * len(candidate.spec.blocks)) * (0.08 - 0.04 * rung)
    if rung == 0:
        return Outcome({"score": 10 * (true + wobble), "flops": 1e9, "params": 1e6})
    return Outcome({"miou": true + wobble, "flops": 1e9 + 1e8 * len(candidate.spec.blocks), "steps": 10 * rung})


class CountingTells:
    """A controller wrapper that records every tell (candidate id as asked, values)."""

    def __init__(self, inner):
        self.inner, self.tells = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def tell(self, candidate, values):
        self.tells.append((candidate.id, candidate.spec.hash, values))
        self.inner.tell(candidate, values)


def make(run_dir, strategy="random", budget=16, baselines=()):
    controller = STRATEGIES[strategy](SPACE, 3)
    return Search(run_dir, controller, Objective(), budget, baselines, fidelity="full", ladder=LADDER)


# ---------------------------------------------------------------------------------- the rule
def test_a_result_goes_up_when_it_ranks_in_the_kept_share_of_its_rung_so_far():
    rung = RungConfig("zc", keep=0.5)
    rows: list[dict] = []
    decisions = []
    for value in (5, 3, 4, 9, 1, 6):
        rows.append({"status": "ok", "rung": 0, "score": value, "objective": None})
        decisions.append(goes_up(rows[-1], rows, rung, baseline=False))
    # n=1: best 1 -> 5 up; n=2: best 1 of [5,3] -> 3 stays; n=3: best 2 of [5,3,4] -> 4 up;
    # n=4: best 2 -> 9 up; n=5: best 3 of [5,3,4,9,1] -> 1 stays; n=6: best 3 -> 6 up
    assert decisions == [True, False, True, True, False, True]
    failed = {"status": "failed", "rung": 0, "score": None}
    assert not goes_up(failed, [*rows, failed], rung, baseline=True)  # a failed baseline stays too
    assert goes_up({"status": "ok", "rung": 0, "score": -1.0}, rows, rung, baseline=True)


def test_rank_values_by_metric():
    row = {"score": 2.0, "objective": 0.4, "val_loss": 0.3, "miou": None}
    assert rank_value(row) == 2.0  # a training-free rung ranks by its score
    assert rank_value({**row, "score": None}) == 0.4
    assert rank_value(row, "-val_loss") == -0.3 and rank_value(row, "miou") is None


# ---------------------------------------------------------------------------------- in a search
def test_a_ladder_search_trains_few_candidates_high_and_tells_each_candidate_once(tmp_path):
    search = make(tmp_path / "run", budget=24, baselines=(get_spec("deeplabv3-resnet50"),))
    counting = CountingTells(search.controller)
    search.controller = counting
    evaluate_in_process(search, evaluate)
    rows = search.store.rows
    per_rung = [[r for r in rows if r["rung"] == k] for k in range(3)]
    # keep 1/4 of 24, then 1/2: about 6 and 3, a few more from the early results compared with few
    # (the first always goes up) and the baseline, which always does (exact sizes: the replay test)
    assert len(per_rung[0]) == 24 and 6 <= len(per_rung[1]) <= 10 and 3 <= len(per_rung[2]) <= len(per_rung[1]) // 2 + 2
    assert [{r["fidelity"] for r in p} for p in per_rung] == [{"zc"}, {"cheap"}, {"full"}]
    up = {r["spec_hash"] for r in per_rung[1]}
    assert {r["spec_hash"] for r in per_rung[2]} <= up <= {r["spec_hash"] for r in per_rung[0]}
    baseline = get_spec("deeplabv3-resnet50").hash
    assert all(baseline in {r["spec_hash"] for r in p} for p in per_rung)  # the reference at every rung
    # Every non-baseline candidate is told exactly once: at the top rung it reached; a rung-0 end
    # (a score, no mIoU) is told as no result.
    told = [h for _, h, _ in counting.tells]
    assert sorted(told) == sorted(r["spec_hash"] for r in per_rung[0] if r["origin"] != "baseline")
    final = {h: v for _, h, v in counting.tells}
    for r in per_rung[2]:
        if r["origin"] != "baseline":
            assert final[r["spec_hash"]] == (pytest.approx(r["miou"]),)
    stayed_at_zero = {r["spec_hash"] for r in per_rung[0]} - up
    assert all(final[h] is None for h in stayed_at_zero)
    best = search.summary()["best"]
    assert best["rung"] == 2 and best["objective"] == max(r["objective"] for r in per_rung[2])
    assert search.trained == 24 and search.finished


def test_the_rung_sizes_follow_from_replaying_the_rule(tmp_path):
    search = evaluate_in_process(make(tmp_path / "run", budget=24), evaluate)
    rows = search.store.rows
    for level, rung in enumerate(LADDER):
        here = [r for r in rows if r["rung"] == level]
        quota = rung_quotas(LADDER, 24)[level]
        expected = {r["spec_hash"] for i, r in enumerate(here) if goes_up(r, here[: i + 1], rung, False, quota)}
        assert expected == {r["spec_hash"] for r in rows if r["rung"] == level + 1}


@pytest.mark.parametrize("strategy", ["random", "evolution", "tpe"])
def test_a_ladder_search_killed_at_any_point_resumes_to_the_uninterrupted_table(tmp_path, strategy):
    def open_(name):
        run_dir = tmp_path / name
        run_dir.mkdir(exist_ok=True)
        kwargs = {"storage": run_dir / "optuna.journal"} if strategy == "tpe" else {}
        if strategy == "evolution":
            kwargs.update(population=4, sample_size=2)
        return Search(
            run_dir, STRATEGIES[strategy](SPACE, 5, **kwargs), Objective(), 12, fidelity="full", ladder=LADDER
        )

    reference = evaluate_in_process(open_("ref"), evaluate)
    expected = [(r["trial_id"], r["spec_hash"], r["rung"], r["status"]) for r in reference.store.rows]
    for kill_after in (3, 7, 11):
        name = f"run{kill_after}"
        crashed = open_(name)
        for _ in range(kill_after):
            candidate = crashed.next_candidate()
            crashed.record(candidate, evaluate(candidate))
        in_flight = crashed.next_candidate()
        # Killed after the in-flight candidate's row was written, before its decision was saved.
        if in_flight is not None:
            row = {**crashed._identity(in_flight), **_row_metrics(crashed, evaluate(in_flight))}
            crashed.store.append({**row, "status": "ok", "attempts": 1})
        del crashed
        resumed = evaluate_in_process(open_(name), evaluate)
        got = [(r["trial_id"], r["spec_hash"], r["rung"], r["status"]) for r in resumed.store.rows]
        assert sorted(got) == sorted(expected), kill_after


def _row_metrics(search, outcome):
    m = outcome.metrics
    return {
        "miou": m.get("miou"),
        "score": m.get("score"),
        "flops": m.get("flops"),
        "objective": search.objective.score(m),
    }


# ---------------------------------------------------------------------------------- measuring the ladder
def test_ladder_agreement_is_kendall_tau_over_the_candidates_at_both_rungs(tmp_path):
    search = evaluate_in_process(make(tmp_path / "run", budget=40), evaluate)
    rows = search.store.rows
    report = ladder_agreement(rows, LADDER, "full")
    assert [(e["fidelity"], e["next_fidelity"]) for e in report] == [("zc", "cheap"), ("cheap", "full")]
    zero = {r["spec_hash"]: r["score"] for r in rows if r["rung"] == 0}
    one = {r["spec_hash"]: r["objective"] for r in rows if r["rung"] == 1}
    both = [h for h in zero if h in one]
    assert report[0]["evaluated"] == 40 and report[0]["went_up"] == len(both) == report[0]["n"]
    assert report[0]["tau"] == pytest.approx(kendalltau([zero[h] for h in both], [one[h] for h in both]).statistic)
    assert report[0]["tau_low"] <= report[0]["tau"] <= report[0]["tau_high"]
    lost = next(r for r in rows if r["rung"] == 1)  # a candidate that went up and failed there
    failed = [{**r, "status": "failed", "objective": None} if r is lost else r for r in rows]
    again = ladder_agreement(failed, LADDER, "full")[0]
    assert again["went_up"] == len(both) and again["n"] == len(both) - 1


# ---------------------------------------------------------------------------------- config
def test_ladder_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="keep"):
        RungConfig("zc", keep=0)
    with pytest.raises(ConfigError, match="metric"):
        RungConfig("zc", metric="magic")
    with pytest.raises(ConfigError, match="ladder"):
        SearchConfig(fidelity="proxy", ladder=(RungConfig("proxy"),))
    with pytest.raises(ConfigError, match="asha"):
        search_config_from_dict({"ladder": [{"fidelity": "smoke"}], "scheduler": {"asha": True}})
    config = search_config_from_dict({"fidelity": "proxy", "ladder": [{"fidelity": "zc-params", "keep": 0.3}]})
    assert config.rungs == ("zc-params", "proxy") and config.ladder[0].keep == 0.3


# ---------------------------------------------------------------------------------- on Ray, through the CLI
def test_a_ladder_search_on_ray_is_shown_reported_and_loaded_with_its_rungs(tmp_path, local_ray, capsys):
    import json

    import yaml

    from analysis import load_run
    from nas.cli import main

    config = {
        "name": "ladder",
        "task": "synthetic",
        "fidelity": "smoke",
        "ladder": [{"fidelity": "zc-params", "keep": 0.5}],
        "strategy": {"name": "random"},
        "budget": {"trials": 4},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 2},
    }
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    assert main(["search", "--config", str(tmp_path / "search.yaml"), "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    run = load_run(run_dir)
    zero, top = run.trials[run.trials["rung"] == 0], run.trials[run.trials["rung"] == 1]
    assert len(zero) == 4 and set(zero["fidelity"]) == {"zc-params"}  # the budget: 3 candidates and the baseline
    assert (zero["score"] == zero["params"]).all() and (zero["steps"] == 0).all()
    assert 2 <= len(top) <= 3 and set(top["fidelity"]) == {"smoke"} and (top["steps"] == 4).all()
    assert set(top["spec_hash"]) <= set(zero["spec_hash"]) and len(run.ok()) == len(top)
    assert run.leaderboard().iloc[0]["fidelity"] == "smoke"  # the search's ranking comes first
    ladder = run.ladder
    assert list(ladder["evaluated"]) == [4] and list(ladder["went_up"]) == [len(top)]
    assert "fidelity ladder" in out and "zc-params -> smoke: 4 evaluated" in out
    stored = json.loads((run_dir / "ladder.json").read_text())["ladder"]
    assert stored[0]["went_up"] == len(top)
    assert main(["report", str(run_dir)]) == 0
    assert "Fidelity ladder" in (run_dir / "report" / "index.html").read_text()


def test_a_rung_sends_up_at_most_keep_of_the_budget_even_when_every_result_beats_the_last():
    rung = RungConfig("zc", keep=0.25)
    rows = [{"trial_id": i, "status": "ok", "rung": 0, "score": float(i), "origin": "random"} for i in range(12)]
    ranked = [goes_up(r, rows[: i + 1], rung, baseline=False) for i, r in enumerate(rows)]
    assert all(ranked)  # each new result is the best so far: the rank rule alone sends every one up
    capped = [goes_up(r, rows[: i + 1], rung, baseline=False, quota=3) for i, r in enumerate(rows)]
    assert capped == [True] * 3 + [False] * 9
    assert rung_quotas((RungConfig("a", keep=0.25), RungConfig("b", keep=0.5)), 24) == [6, 3]


def _goes_up_by_definition(row, rows, rung, baseline, quota):
    """The rule as stated, replayed from scratch for every earlier candidate (quadratic)."""

    def within(r, upto):
        values = [rank_value(x, rung.metric) for x in upto if x["status"] == "ok" and x["rung"] == r["rung"]]
        values = [v for v in values if v is not None]
        mine = rank_value(r, rung.metric)
        return mine is not None and sum(v > mine for v in values) < math.ceil(rung.keep * len(values))

    if row["status"] != "ok":
        return False
    if baseline:
        return True
    i = rows.index(row)
    sent = 0
    for j, earlier in enumerate(rows[:i]):
        if earlier["rung"] == row["rung"] and earlier["status"] == "ok" and earlier["origin"] != "baseline":
            sent += sent < quota and within(earlier, rows[: j + 1])
    return within(row, rows[: i + 1]) and sent < quota


def test_the_one_pass_decision_is_the_rule_replayed_from_scratch():
    rng = random.Random(0)
    rung = RungConfig("zc", keep=0.3)
    for _ in range(20):
        rows = []
        for i in range(60):
            status = rng.choice(["ok"] * 8 + ["failed"])
            score = rng.choice([None, *range(10)]) if status == "ok" else None  # ties and missing values
            origin = "baseline" if rng.random() < 0.1 else "random"
            rows.append(
                {"trial_id": i, "status": status, "rung": rng.choice([0, 0, 1]), "score": score, "origin": origin}
            )
        quota = rng.choice([3, 8, 100])
        for i, row in enumerate(rows):
            baseline = row["origin"] == "baseline"
            expected = _goes_up_by_definition(row, rows[: i + 1], rung, baseline, quota)
            assert goes_up(row, rows[: i + 1], rung, baseline, quota) == expected


def test_a_baseline_that_is_evolutions_seed_still_goes_up_every_rung_outside_the_cap(tmp_path):
    baseline = get_spec("deeplabv3-resnet50")
    controller = STRATEGIES["evolution"](SPACE, 3, population=6, sample_size=3, seeds=(baseline,))
    search = Search(tmp_path / "run", controller, Objective(), 16, (baseline,), fidelity="full", ladder=LADDER)
    assert not search.baselines  # the strategy asks for it, as a seed, not the search

    def worst_baseline(candidate):
        outcome = evaluate(candidate)
        if candidate.spec.hash == baseline.hash and candidate.rung == 0:
            return Outcome({**outcome.metrics, "score": -1e9})  # last at the cheapest rung
        return outcome

    evaluate_in_process(search, worst_baseline)
    rows = search.store.rows
    assert all(any(r["spec_hash"] == baseline.hash and r["rung"] == k for r in rows) for k in range(3))
    others_up = {r["spec_hash"] for r in rows if r["rung"] == 1 and r["spec_hash"] != baseline.hash}
    assert len(others_up) == rung_quotas(LADDER, 16)[0]  # the whole quota: the baseline takes none of it
