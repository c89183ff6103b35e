"""The search engine without Ray: strategies, deduplication, seeding, the results table and resume."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace

import pandas as pd
import pyarrow.parquet as pq
import pytest
from search_bench import likeness_objective

from nas.search import (
    STRATEGIES,
    Objective,
    Outcome,
    RandomSearch,
    RegularizedEvolution,
    Search,
    TPESearch,
    evaluate_in_process,
    pareto_front,
)
from nas.search.encoding import decode, distributions, repair_levels
from nas.search.search import SearchStateError
from nas.search.store import ADDED_METRICS, StoreError, read_rows
from proxy_tasks.task import load_task
from proxy_tasks.trial import TrialResult
from search_spaces import SearchSpace, get_spec, sample

SPACE = SearchSpace()
# A cheap deterministic objective: agreement of the live blocks, in order, with a hidden target.
# Like a trained mIoU it is a function of the network (dead genes do not count), so network twins,
# which the search deduplicates, score the same. The efficiency benchmark ranks strategies by it too.
likeness = likeness_objective()


def evaluate(candidate) -> Outcome:
    return Outcome({"miou": likeness(candidate.spec), "flops": 1e9 + 1e8 * len(candidate.spec.blocks)})


def run(tmp_path, controller, budget, baselines=(), name="run") -> Search:
    return evaluate_in_process(Search(tmp_path / name, controller, Objective(), budget, baselines), evaluate)


def test_evolution_beats_random_at_equal_budget_over_seeds(tmp_path) -> None:
    seed_spec = get_spec("deeplabv3-resnet50")
    best = {"random": [], "evolution": []}
    for seed in range(8):
        evolution = RegularizedEvolution(SPACE, seed, population=10, sample_size=5, seeds=(seed_spec,))
        best["evolution"].append(run(tmp_path, evolution, 120, name=f"e{seed}").summary()["best"]["objective"])
        best["random"].append(
            run(tmp_path, RandomSearch(SPACE, seed), 120, name=f"r{seed}").summary()["best"]["objective"]
        )
    # Measured: 0.574 against 0.516, evolution ahead on all 8 seeds; equal strategies would tie.
    assert statistics.mean(best["evolution"]) > statistics.mean(best["random"]) + 0.04, best
    assert sum(e > r for e, r in zip(best["evolution"], best["random"])) >= 7, best


@pytest.mark.parametrize("strategy", ["random", "evolution", "tpe"])
def test_the_same_seed_reproduces_the_sequence_of_candidates(tmp_path, strategy) -> None:
    def hashes(seed, name):
        controller = STRATEGIES[strategy](SPACE, seed)
        trials = run(tmp_path, controller, 12, name=name).store.rows
        return [r["spec_hash"] for r in trials]

    assert hashes(3, "a") == hashes(3, "b")
    assert hashes(3, "a") != hashes(4, "c")


def test_evolution_starts_from_its_seeds_and_records_lineage(tmp_path) -> None:
    seed_spec = get_spec("deeplabv3-resnet50")
    search = run(tmp_path, RegularizedEvolution(SPACE, 0, population=4, sample_size=2, seeds=(seed_spec,)), 12)
    rows = search.store.rows
    assert rows[0]["spec_hash"] == seed_spec.hash and rows[0]["origin"] == "seed"
    children = [r for r in rows if r["origin"] == "mutation"]
    assert len(children) >= 8
    recorded = {r["spec_hash"] for r in rows}
    for child in children:
        assert child["parent_hashes"][0] in recorded  # a parent is always an evaluated candidate
        assert json.loads(child["mutation"])["kind"] in {
            "swap_levels",
            "rewire",
            "dilation",
            "type",
            "shift_level",
            "move_output",
            "add_parent",
            "drop_parent",
        }


class Repeating(RandomSearch):
    """Proposes only three distinct specs, over and over."""

    name = "random"

    def ask(self, candidate_id):
        candidate = super().ask(candidate_id)
        spec = sample(SPACE, candidate_id % 3)
        return type(candidate)(candidate_id, spec, "random")


def train_counting(search: Search) -> list[str]:
    """Run ``search`` in-process; the spec hashes it actually trained, in order."""
    trained = []

    def counting(candidate):
        trained.append(candidate.spec.hash)
        return evaluate(candidate)

    evaluate_in_process(search, counting)
    return trained


def test_a_duplicate_is_never_trained_again_and_reuses_the_recorded_result(tmp_path) -> None:
    search = Search(tmp_path / "run", Repeating(SPACE, 0), Objective(), budget=5, max_duplicates=10)
    trained = train_counting(search)
    rows = pd.DataFrame(search.store.rows)
    assert len(trained) == len(set(trained)) == 3  # each distinct spec trained once
    dups = rows[rows["status"] == "duplicate"]
    assert len(dups) == 10 and search.exhausted  # gave up after 10 duplicates in a row
    first = rows[rows["status"] == "ok"].set_index("spec_hash")
    for _, dup in dups.iterrows():
        original = rows[rows["trial_id"] == dup["duplicate_of"]].iloc[0]
        assert original["spec_hash"] == dup["spec_hash"]
        assert dup["miou"] == first.loc[dup["spec_hash"], "miou"]


def test_a_duplicate_of_a_running_candidate_waits_for_its_result(tmp_path) -> None:
    search = Search(tmp_path / "run", Repeating(SPACE, 0), Objective(), budget=4, max_duplicates=2)
    running = [search.next_candidate() for _ in range(3)]  # three distinct specs in flight
    assert search.next_candidate() is None  # the next two asks are twins of running ones: parked, not trained
    assert [c.spec.hash for c in search.parked] == [running[0].spec.hash, running[1].spec.hash]
    search.record(running[0], evaluate(running[0]))
    rows = search.store.rows
    assert [r["status"] for r in rows] == ["ok", "duplicate"]
    assert rows[1]["duplicate_of"] == running[0].id and rows[1]["miou"] == rows[0]["miou"]


class DeadGeneTwins(RandomSearch):
    """Proposes SpineNet-49 and then, over and over, the same network with an edited dead block."""

    name = "random"

    def ask(self, candidate_id):
        candidate = super().ask(candidate_id)
        spec = get_spec("spinenet-49")
        if candidate_id % 2:  # block 17 reaches no endpoint (see test_spec)
            blocks = list(spec.blocks)
            blocks[17] = replace(blocks[17], dilation=2 ** (1 + candidate_id // 2 % 2))  # 2, 4, 2, ...
            spec = spec.with_blocks(blocks, name=f"twin-{candidate_id}")
        return type(candidate)(candidate_id, spec, "random")


def test_a_spec_differing_only_in_dead_blocks_is_a_duplicate(tmp_path) -> None:
    search = Search(tmp_path / "run", DeadGeneTwins(SPACE, 0), Objective(), budget=3, max_duplicates=4)
    trained = train_counting(search)
    rows = search.store.rows
    assert len(trained) == 1 and search.exhausted  # one network, trained once
    assert len({r["spec_hash"] for r in rows}) == 3  # ... under three different spec hashes
    assert [r["status"] for r in rows] == ["ok", "duplicate", "duplicate", "duplicate", "duplicate"]
    assert all(r["duplicate_of"] == 0 and r["miou"] == rows[0]["miou"] for r in rows[1:])


def test_a_row_keeps_every_scalar_metric_of_the_trial(tmp_path) -> None:
    measured = TrialResult(
        miou=0.4, val_loss=0.8125, data_wait_fraction=0.25, resumed_from_step=6, input_size=(32, 48), num_classes=3
    ).to_dict()
    measured["flops"] = 10**9
    search = Search(tmp_path / "run", Repeating(SPACE, 0), Objective(), budget=4, max_duplicates=1)
    evaluate_in_process(search, lambda candidate: Outcome(measured))  # the fourth ask repeats the first spec
    rows = read_rows(tmp_path / "run" / "trials.parquet")
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "duplicate"]
    for row in rows:
        assert row["val_loss"] == 0.8125 and row["data_wait_fraction"] == 0.25 and row["resumed_from_step"] == 6
        assert (row["input_height"], row["input_width"], row["num_classes"]) == (32, 48, 3)


def test_a_table_written_before_the_added_metrics_loads_with_them_null(tmp_path) -> None:
    run(tmp_path, RandomSearch(SPACE, 0), 2)
    path = tmp_path / "run" / "trials.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(list(ADDED_METRICS)), path)
    rows = read_rows(path)
    assert len(rows) == 2 and all(r["val_loss"] is None and r["input_height"] is None for r in rows)
    pq.write_table(table.drop_columns(["miou", "val_loss"]), path)  # a core column missing is still refused
    with pytest.raises(StoreError, match=r"missing columns miou\)"):
        read_rows(path)


def test_failed_candidates_are_recorded_with_their_reason_and_the_search_goes_on(tmp_path) -> None:
    def flaky(candidate):
        if candidate.id % 2:
            return Outcome({"miou": float("nan")}, status="failed", error="diverged: loss became nan at step 3")
        return evaluate(candidate)

    search = evaluate_in_process(Search(tmp_path / "run", RandomSearch(SPACE, 0), Objective(), 6), flaky)
    rows = search.store.rows
    assert len(rows) == 6
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 3 and all("diverged" in r["error"] and r["objective"] is None for r in failed)
    assert search.summary()["best"]["status"] == "ok"


def test_baselines_are_trained_first_as_reference_points(tmp_path) -> None:
    baseline = get_spec("deeplabv3-resnet50")
    search = run(tmp_path, RandomSearch(SPACE, 0), 4, baselines=(baseline,))
    assert search.store.rows[0]["origin"] == "baseline" and search.store.rows[0]["spec_hash"] == baseline.hash
    assert len(search.store.rows) == 4  # the baseline counts against the budget


def test_the_table_is_readable_with_pandas_and_has_one_row_per_trial(tmp_path) -> None:
    search = run(tmp_path, RandomSearch(SPACE, 0), 5, baselines=(get_spec("spinenet-49"),))
    table = pd.read_parquet(tmp_path / "run" / "trials.parquet")
    assert list(table["trial_id"]) == [0, 1, 2, 3, 4]
    assert table["spec_hash"].is_unique and (table["status"] == "ok").all()
    assert table["finished_at"].dt.tz is not None and (table["finished_at"] >= table["started_at"]).all()
    assert table.loc[0, "name"] == "spinenet-49" and table["strategy"].eq("random").all()
    assert len(search.store) == 5


def test_the_time_limit_stops_new_candidates_and_the_running_ones_are_recorded(tmp_path) -> None:
    now = [100.0]  # a fake clock: each trial takes 10 seconds of it

    def ten_seconds(candidate) -> Outcome:
        now[0] += 10.0
        return evaluate(candidate)

    def clock() -> float:
        return now[0]

    search = Search(tmp_path / "run", RandomSearch(SPACE, 0), Objective(), 100, time_limit_s=25.0, clock=clock)
    evaluate_in_process(search, ten_seconds)
    # Asked at 0, 10 and 20 seconds; at 30 the limit has passed and nothing new starts.
    assert [r["trial_id"] for r in search.store.rows] == [0, 1, 2]
    assert search.stopped and search.finished and search.next_candidate() is None

    resumed = Search(tmp_path / "run", RandomSearch(SPACE, 0), Objective(), 4, time_limit_s=25.0, clock=clock)
    assert resumed.next_candidate().id == 3  # the limit counts from when the search was (re)opened


def test_retries_after_a_lost_worker_count_into_the_attempts(tmp_path) -> None:
    search = Search(tmp_path / "run", RandomSearch(SPACE, 0), Objective(), 2)
    first, second = search.next_candidate(), search.next_candidate()
    assert search.record(first, evaluate(first), retries=2)["attempts"] == 3
    assert search.record(second, evaluate(second))["attempts"] == 1
    assert [r["attempts"] for r in read_rows(tmp_path / "run" / "trials.parquet")] == [3, 1]


def test_the_store_refuses_a_second_row_for_a_trial_and_bad_statuses(tmp_path) -> None:
    search = run(tmp_path, RandomSearch(SPACE, 0), 2)
    with pytest.raises(StoreError, match="trial 0 is already recorded"):
        search.store.append(dict(search.store.rows[0]))
    with pytest.raises(StoreError, match="status 'great'"):
        search.store.append({**search.store.rows[0], "trial_id": 9, "status": "great"})
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(StoreError, match=r"bad\.parquet: unreadable results table"):
        read_rows(tmp_path / "bad.parquet")


@pytest.mark.parametrize("strategy", ["evolution", "tpe"])
def test_resume_after_a_crash_reruns_interrupted_candidates_once_and_continues_the_state(tmp_path, strategy) -> None:
    def make(run_dir):
        kwargs = {"storage": run_dir / "optuna.journal"} if strategy == "tpe" else {}
        if strategy == "evolution":
            kwargs.update(population=4, sample_size=2)
        (run_dir).mkdir(exist_ok=True)
        return Search(run_dir, STRATEGIES[strategy](SPACE, 7, **kwargs), Objective(), budget=10)

    # Reference: the uninterrupted search, one candidate at a time.
    reference = evaluate_in_process(make(tmp_path / "ref"), evaluate)
    ref_hashes = [r["spec_hash"] for r in reference.store.rows]

    # Crash: 4 candidates recorded, a 5th in flight, then the driver dies (objects dropped, no cleanup).
    crashed = make(tmp_path / "run")
    for _ in range(4):
        c = crashed.next_candidate()
        crashed.record(c, evaluate(c))
    in_flight = crashed.next_candidate()
    del crashed

    resumed = make(tmp_path / "run")
    assert [c.id for c in resumed.rerun] == [in_flight.id]
    evaluate_in_process(resumed, evaluate)
    rows = resumed.store.rows
    assert sorted(r["trial_id"] for r in rows) == list(range(10))  # every trial once
    assert [r["spec_hash"] for r in sorted(rows, key=lambda r: r["trial_id"])] == ref_hashes  # same sequence
    assert next(r for r in rows if r["trial_id"] == in_flight.id)["attempts"] == 2


def test_resume_replays_the_tell_a_crash_interrupted(tmp_path) -> None:
    run_dir = tmp_path / "run"
    search = Search(run_dir, RegularizedEvolution(SPACE, 0, population=4, sample_size=2), Objective(), budget=6)
    candidate = search.next_candidate()
    search.store.append({**search._identity(candidate), "status": "ok", "miou": 0.5, "objective": 0.5})
    del search  # the row was written, the controller never told and the state not saved

    resumed = Search(run_dir, RegularizedEvolution(SPACE, 0, population=4, sample_size=2), Objective(), budget=6)
    assert resumed.rerun == [] and len(resumed.controller.population) == 1
    assert resumed.controller.population[0][1] == 0.5


def test_resume_with_another_strategy_or_a_damaged_state_is_refused(tmp_path) -> None:
    run(tmp_path, RandomSearch(SPACE, 0), 2)
    with pytest.raises(SearchStateError, match=r"searched with 'random'.*--strategy random"):
        Search(tmp_path / "run", RegularizedEvolution(SPACE, 0, population=4, sample_size=2), Objective(), 4)
    (tmp_path / "run" / "search_state.json").write_text("{not json")
    with pytest.raises(SearchStateError, match=r"search_state\.json: unreadable search state"):
        Search(tmp_path / "run", RandomSearch(SPACE, 0), Objective(), 4)


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_tpe_tells_optuna_and_fails_orphaned_study_trials_on_resume(tmp_path, storage) -> None:
    storage = tmp_path / "optuna.journal" if storage == "journal" else f"sqlite:///{tmp_path}/optuna.db"
    search = Search(tmp_path / "run", TPESearch(SPACE, 0, storage=storage), Objective(), budget=5)
    for _ in range(3):
        c = search.next_candidate()
        search.record(c, evaluate(c))
    search.controller.study.ask()  # a study trial the driver started but never saved (killed in between)
    del search
    resumed = Search(tmp_path / "run", TPESearch(SPACE, 0, storage=storage), Objective(), budget=5)
    states = [t.state.name for t in resumed.controller.study.trials]
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"]
    values = [t.value for t in resumed.controller.study.trials[:3]]
    assert values == [r["miou"] for r in resumed.store.rows]


def test_the_encoding_decodes_every_parameter_set_to_a_valid_spec_of_the_space() -> None:
    import random

    dists = distributions(SPACE)
    assert len(dists) == 5 * SPACE.num_blocks
    rng = random.Random(0)
    for _ in range(50):
        params = {}
        for name, dist in dists.items():
            params[name] = rng.choice(dist.choices) if hasattr(dist, "choices") else rng.randint(dist.low, dist.high)
        spec = decode(SPACE, params)
        assert SPACE.contains(spec)
        assert {b.level for b in spec.blocks if b.output} == set(SPACE.output_levels)
    assert repair_levels(SPACE, [2] * 16)[-5:] == [7, 6, 5, 4, 3]  # missing output levels take the last blocks


def test_objectives_and_the_pareto_front() -> None:
    m = {"miou": 0.5, "flops": 2e9}
    assert Objective("miou").values(m) == (0.5,)
    assert Objective("pareto").values(m) == (0.5, 2e9)
    reward = Objective("constrained", target=1e9, weight=-0.07).values(m)[0]
    assert reward == pytest.approx(0.5 * 2**-0.07)
    assert Objective("miou").values({"miou": float("nan")}) is None
    points = [(0.5, 10), (0.6, 20), (0.4, 5), (0.45, 12), (0.6, 25)]
    assert pareto_front(points) == [0, 1, 2]


def test_the_shipped_search_configs_load_and_bad_keys_are_named(tmp_path) -> None:
    from nas.common.config import ConfigError
    from nas.search.config import load_search_config

    for name in ("smoke", "quickstart"):
        config = load_search_config(f"launch/configs/{name}.yaml")
        assert config.baselines == ("deeplabv3-resnet50",) and config.resources.max_concurrent == 2
        config.space.build()
    # The GPU search: the GPU proxy, eight trials sharing one GPU.
    gpu = load_search_config("launch/configs/gpu-proxy.yaml")
    assert gpu.fidelity == "proxy-gpu" and load_task(gpu.task).fidelity(gpu.fidelity).width == 0.5
    assert gpu.resources.gpus_per_trial * gpu.resources.max_concurrent == 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: {name: evolution, populaton: 8}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: strategy: unknown key 'populaton'"):
        load_search_config(bad)
    bad.write_text("objective: {kind: constrained, cost: flops}\n")
    with pytest.raises(ConfigError, match="target: the constrained objective needs a positive cost target"):
        load_search_config(bad)
    bad.write_text("budget: {trials: many}\n")
    with pytest.raises(ConfigError, match=r"budget\.trials: expected an integer"):
        load_search_config(bad)


def test_tune_results_map_to_statuses() -> None:
    from nas.search.runner import outcome_from_result

    final = {"final": True, "status": "ok", "miou": 0.4, "result_json": json.dumps({"miou": 0.4, "flops": 7})}
    ok = outcome_from_result(final, False, "t1")
    assert (ok.status, ok.metrics["flops"], ok.tune_trial_id) == ("ok", 7, "t1")
    pruned = outcome_from_result({"final": False, "miou": 0.1, "step": 100}, False, "t2")
    assert pruned.status == "pruned" and pruned.metrics["miou"] == 0.1 and "ASHA" in pruned.error
    failed = outcome_from_result({"final": True, "status": "failed", "error": "ValueError: boom"}, False, "t3")
    assert (failed.status, failed.error) == ("failed", "ValueError: boom")
    lost = outcome_from_result(None, True, "t4")
    assert lost.status == "failed" and "retries" in lost.error
