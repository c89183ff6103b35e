"""`nas search` and `nas promote` refuse what cannot run: one line, exit 2, nothing written, no hang.

New runs: the run directory is not even created. Resumes: every file of the run directory keeps
its bytes and modification time. The legitimate crash states still resume.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from nas.cli import main
from nas.search import STRATEGIES, Outcome, evaluate_in_process
from nas.search.config import STRATEGY_NAMES, search_config_from_dict
from nas.search.run_dir import STATE_NAME, TABLE_NAME
from nas.search.runner import CONTROLLER_MAKERS, open_search, prepare_run_dir
from nas.search.store import read_rows, write_rows
from search_spaces import get_spec

BASE = {
    "name": "t",
    "task": "synthetic",
    "fidelity": "smoke",
    "baselines": [],
    "strategy": {"name": "random"},
    "budget": {"trials": 3},
    "resources": {"cpus_per_trial": 1, "max_concurrent": 1, "ray_cpus": 1},
}


class Hung(BaseException):
    """A command that did not return in time (BaseException: no error handler turns it into a refusal)."""


@pytest.fixture(autouse=True)
def _private_cache_and_no_hang(monkeypatch, tmp_path) -> Iterator[None]:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    def hung(signum, frame):
        raise Hung("still running after 180 s: a refusal must not wait")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(180)  # the slowest test starts Ray twice: about 25 s on 2 busy cores
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def write_config(folder: Path, **extra) -> Path:
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump(merged(BASE, extra)))
    return path


def refused(args: list[str], capsys) -> str:
    """The one stderr line of a refused command (exit 2, no traceback)."""
    code = main(args)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and lines[0].startswith("nas: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every entry under ``folder``: a file's bytes and mtime, None for a folder."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


# ---------------------------------------------------------------------------------- new runs
NEW_RUN_REFUSALS = {
    "unknown storage scheme": (
        {"strategy": {"name": "tpe"}, "storage": {"optuna": "foo://bar"}},
        "storage.optuna: unknown database 'foo'",
    ),
    "malformed storage URL": ({"strategy": {"name": "tpe"}, "storage": {"optuna": "sqlite://:x:y@"}}, "storage.optuna"),
    "in-memory SQLite study": (
        {"strategy": {"name": "nsga2"}, "storage": {"optuna": "sqlite://"}},
        "storage.optuna: an in-memory SQLite",
    ),
    "SQLite file in a missing folder": (
        {"strategy": {"name": "tpe"}, "storage": {"optuna": "sqlite:////nonexistent/folder/x.db"}},
        "storage.optuna: the folder of the SQLite file, /nonexistent/folder, does not exist",
    ),
    "grace steps beyond the fidelity's steps": (
        {"fidelity": "proxy", "scheduler": {"asha": True, "grace_steps": 1000}},
        "scheduler.grace_steps: 1000 exceeds the 200 steps of fidelity 'proxy'",
    ),
    "ASHA without intermediate evaluations": (
        {"scheduler": {"asha": True, "grace_steps": 2}},
        "scheduler.asha: needs intermediate evaluations",
    ),
    "reduction factor below 1": ({"scheduler": {"reduction_factor": 0.5}}, "scheduler.reduction_factor: must be > 1"),
    "reduction factor 1": ({"scheduler": {"reduction_factor": 1}}, "scheduler.reduction_factor: must be > 1"),
    "grace steps 0": ({"scheduler": {"grace_steps": 0}}, "scheduler.grace_steps: must be >= 1, got 0"),
    "an integer for a boolean": ({"scheduler": {"asha": 1}}, "scheduler.asha: expected true or false, got 1"),
    "negative retries": ({"retries": -1}, "retries: must be in [0, 100], got -1"),
    "retries as a boolean": ({"retries": True}, "retries: expected an integer, got true"),
    "no duplicates allowed": ({"budget": {"max_duplicates": 0}}, "budget.max_duplicates: must be >= 1, got 0"),
    "zero time limit": ({"budget": {"time_limit_s": 0}}, "budget.time_limit_s: must be > 0 or null"),
    "NaN time limit": ({"budget": {"time_limit_s": float("nan")}}, "budget.time_limit_s: expected a finite number"),
    "absurd concurrency": (
        {"resources": {"max_concurrent": 10**9}},
        "resources.max_concurrent: must be in [1, 1024], got 1000000000",
    ),
    "CPUs below Ray's unit": ({"resources": {"cpus_per_trial": 1e-6}}, "resources.cpus_per_trial: must be >= 0.0001"),
    "infinite CPUs": ({"resources": {"cpus_per_trial": float("inf")}}, "resources.cpus_per_trial: expected a finite"),
    "more CPUs per trial than the local Ray": (
        {"resources": {"cpus_per_trial": 4, "ray_cpus": 2}},
        "resources.cpus_per_trial 4 fits on no node of the local Ray (resources.ray_cpus 2)",
    ),
    "a GPU per trial on a local Ray without GPUs": (
        {"resources": {"gpus_per_trial": 1, "ray_gpus": 0}},
        "resources.gpus_per_trial 1 fits on no node of the local Ray (resources.ray_gpus 0)",
    ),
    "empty name": ({"name": ""}, "name: must be 1 to 100 printable characters"),
    "huge name": ({"name": "x" * 10_000}, "(10000 characters)"),
    "name with a newline": ({"name": "a\nb"}, "name: must be 1 to 100 printable characters"),
    "negative seed": ({"seed": -1}, "seed: must be in [0, 4294967295], got -1"),
    "unknown baseline": ({"baselines": ["no-such-net"]}, "no-such-net"),
    "empty baseline": ({"baselines": [""]}, "baselines[0]: must name a spec"),
    "baseline too narrow at the fidelity": (
        {"baselines": ["narrow.json"]},
        "baselines[0]: {folder}/narrow.json at fidelity 'smoke': block 0: width",
    ),
    "evolution seed outside the space": (
        {
            "baselines": ["deeplabv3-resnet50"],
            "strategy": {"name": "evolution", "population": 2, "sample_size": 2},
            "space": {"dilations": [1]},
        },
        "strategy: seed deeplabv3-resnet50 is outside the search space",
    ),
    "space without blocks": ({"space": {"num_blocks": 0}}, "space: search space: num_blocks must be >= 1"),
    "space of a million blocks": ({"space": {"num_blocks": 10**6}}, "space.num_blocks: must be <= 64"),
    "head level outside the space": ({"space": {"head_level": 9}}, "space: search space: output and head levels"),
    "unknown fidelity": ({"fidelity": "nope"}, "task 'synthetic' has no fidelity 'nope'"),
    "unknown task": ({"task": "nope"}, "unknown task 'nope'"),
}


@pytest.mark.parametrize("extra, message", NEW_RUN_REFUSALS.values(), ids=NEW_RUN_REFUSALS.keys())
def test_a_config_that_cannot_run_is_refused_before_the_run_directory_exists(tmp_path, capsys, extra, message):
    narrow = get_spec("deeplabv3-resnet50").to_dict()
    narrow["blocks"][0]["width"] = 4  # 4 x 0.125 rounds down to no channel at the smoke fidelity
    (tmp_path / "narrow.json").write_text(json.dumps(narrow))
    config = write_config(tmp_path, **extra)
    line = refused(["search", "--config", str(config), "--out", str(tmp_path / "run")], capsys)
    assert message.format(folder=tmp_path) in line
    assert not (tmp_path / "run").exists()
    # Refused again, not "already holds a search": nothing was left behind.
    assert refused(["search", "--config", str(config), "--out", str(tmp_path / "run")], capsys) == line


def test_a_spec_file_that_would_block_or_flood_the_reader_is_refused(tmp_path, capsys) -> None:
    os.mkfifo(tmp_path / "fifo.json")  # reading it would wait for a writer forever
    (tmp_path / "huge.json").write_bytes(b" " * (2**20 + 1))
    for name, message in (("fifo.json", "fifo.json: not a spec file"), ("huge.json", "more than a spec file holds")):
        config = write_config(tmp_path, baselines=[name])
        assert message in refused(["search", "--config", str(config), "--out", str(tmp_path / "run")], capsys)
        assert not (tmp_path / "run").exists()


def test_an_out_that_is_a_file_or_holds_a_search_is_left_as_it_is(tmp_path, capsys) -> None:
    config = write_config(tmp_path)
    (tmp_path / "file").write_text("mine")
    line = refused(["search", "--config", str(config), "--out", str(tmp_path / "file")], capsys)
    assert "file: exists and is not a folder" in line and (tmp_path / "file").read_text() == "mine"
    run_dir = finished_run(tmp_path)
    before = snapshot(run_dir)
    line = refused(["search", "--config", str(config), "--out", str(run_dir)], capsys)
    assert "already holds a search" in line and snapshot(run_dir) == before


def test_the_strategies_are_one_list(tmp_path, capsys) -> None:
    assert tuple(STRATEGIES) == STRATEGY_NAMES == tuple(CONTROLLER_MAKERS)
    config = write_config(tmp_path)
    line = refused(["search", "--config", str(config), "--out", str(tmp_path / "run"), "--strategy", "bogus"], capsys)
    assert (
        "invalid choice: 'bogus' (choose from random, evolution, tpe, nsga2)" in line
        and not (tmp_path / "run").exists()
    )


def test_a_budget_override_below_one_is_refused(tmp_path, capsys) -> None:
    config = write_config(tmp_path)
    line = refused(["search", "--config", str(config), "--out", str(tmp_path / "run"), "--trials", "-3"], capsys)
    assert "trials: must be >= 1, got -3" in line and not (tmp_path / "run").exists()


@pytest.mark.parametrize("strategy", ["random", "evolution", "tpe", "nsga2"])
@pytest.mark.parametrize("kind", ["miou", "pareto"])
def test_every_strategy_takes_every_objective(strategy, kind) -> None:
    # Decided from the code: evolution ranks a Pareto search by mIoU (objective.py), TPE and NSGA-II
    # are Optuna samplers that take one or two objectives, random search ignores the values.
    config = search_config_from_dict(merged(BASE, {"strategy": {"name": strategy}, "objective": {"kind": kind}}))
    assert config.objective.directions == (("maximize", "minimize") if kind == "pareto" else ("maximize",))


# ---------------------------------------------------------------------------------- resuming
def evaluate(candidate) -> Outcome:
    return Outcome({"miou": 0.1 + 0.01 * (candidate.id % 7), "flops": 1e9 + 1e7 * candidate.id})


def finished_run(tmp_path: Path, strategy: str = "random", trials: int = 3) -> Path:
    """A run directory as `nas search` leaves it, its trials evaluated in-process (no Ray)."""
    config = search_config_from_dict(merged(BASE, {"strategy": {"name": strategy}, "budget": {"trials": trials}}))
    run_dir = tmp_path / f"run-{strategy}"
    prepare_run_dir(config, run_dir, resume=False)
    evaluate_in_process(open_search(config, run_dir), evaluate)
    return run_dir


def drop_trial(run_dir: Path, trial_id: int) -> None:
    write_rows(run_dir / TABLE_NAME, [r for r in read_rows(run_dir / TABLE_NAME) if r["trial_id"] != trial_id])


def add_rows(run_dir: Path, *rows: dict) -> None:
    write_rows(run_dir / TABLE_NAME, [*read_rows(run_dir / TABLE_NAME), *rows])


def edit_state(run_dir: Path, **changes) -> None:
    state = json.loads((run_dir / STATE_NAME).read_text())
    (run_dir / STATE_NAME).write_text(json.dumps({**state, **changes}))


DAMAGE = {
    "table missing": (
        lambda d: (d / TABLE_NAME).unlink(),
        "trials.parquet: missing, but search_state.json records 3 finished trials (0-2); "
        "restore trials.parquet from a backup, or start a new run with another --out",
    ),
    "table lacks a trial": (
        lambda d: drop_trial(d, 1),
        "trials.parquet: lacks trials 1, which search_state.json records as finished",
    ),
    "state ahead of the table": (
        lambda d: edit_state(d, next_id=5),
        "trials.parquet: lacks trials 3-4, which search_state.json records",
    ),
    "table holds a trial never handed out": (
        lambda d: add_rows(d, {**read_rows(d / TABLE_NAME)[0], "trial_id": 7}),
        "trials.parquet: holds trials 7 that search_state.json never started (it handed out 3 trial ids)",
    ),
    "table holds a trained trial the state never started": (
        lambda d: edit_state(d, attempts={"0": 1, "2": 1}),
        "trials.parquet: holds trials 1 that search_state.json never started",
    ),
    "a trial recorded twice": (
        lambda d: add_rows(d, read_rows(d / TABLE_NAME)[2]),
        "trials.parquet: trials 2 have more than one row",
    ),
    "table unreadable": (
        lambda d: (d / TABLE_NAME).write_bytes(b"PAR1 damaged"),
        "trials.parquet: unreadable results table",
    ),
    "state missing beside a table": (
        lambda d: (d / STATE_NAME).unlink(),
        "search_state.json: missing, but {run_dir}/trials.parquet holds 3 trials",
    ),
    "state not an object": (lambda d: (d / STATE_NAME).write_text("[]"), "search_state.json: unreadable search state"),
    "state with a negative next id": (
        lambda d: edit_state(d, next_id=-1),
        "search_state.json: unreadable search state (next_id: expected a count",
    ),
}


@pytest.mark.parametrize("damage, message", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_run_whose_state_and_table_disagree_is_refused_and_left_unchanged(tmp_path, capsys, damage, message):
    run_dir = finished_run(tmp_path)
    damage(run_dir)
    before = snapshot(run_dir)
    for args in (["--resume", str(run_dir)], ["--resume", "--out", str(run_dir), "--trials", "10"]):
        line = refused(["search", *args], capsys)
        assert message.format(run_dir=run_dir) in line
        assert snapshot(run_dir) == before


def test_a_tpe_run_without_its_optuna_journal_is_refused(tmp_path, capsys) -> None:
    run_dir = finished_run(tmp_path, "tpe")
    (run_dir / "optuna.journal").unlink()
    before = snapshot(run_dir)
    line = refused(["search", "--resume", str(run_dir), "--trials", "5"], capsys)
    assert "optuna.journal: missing, but search_state.json records a tpe search; restore optuna.journal" in line
    assert snapshot(run_dir) == before


def test_a_finished_run_resumes_to_nothing_to_do_without_ray_or_writes(tmp_path, capsys) -> None:
    run_dir = finished_run(tmp_path)
    table = (run_dir / TABLE_NAME).read_bytes()
    assert main(["search", "--resume", str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert "the budget of 3 trials is spent; nothing to do" in captured.err and "Ray" not in captured.err
    assert "3 trials (ok 3" in captured.out and (run_dir / TABLE_NAME).read_bytes() == table


def test_the_crash_between_a_duplicate_row_and_its_state_save_still_resumes(tmp_path) -> None:
    config = search_config_from_dict(merged(BASE, {"budget": {"trials": 6}}))
    run_dir = tmp_path / "run"
    prepare_run_dir(config, run_dir, resume=False)
    search = open_search(config, run_dir)
    first = search.next_candidate()
    row = search.record(first, evaluate(first))
    # The next ask draws the same network: its duplicate row takes id next_id, and the driver is
    # killed before the state save that follows (the row is written, the state is not).
    search.store.append({**row, "trial_id": search.next_id, "status": "duplicate", "duplicate_of": first.id})
    del search
    resumed = open_search(config, run_dir)
    assert resumed.next_id == 2 and resumed.rerun == []
    evaluate_in_process(resumed, evaluate)
    ids = [r["trial_id"] for r in resumed.store.rows]
    assert len(ids) == len(set(ids)) and sum(r["status"] != "duplicate" for r in resumed.store.rows) == 6


def test_a_pending_candidate_with_its_row_still_resumes(tmp_path) -> None:
    config = search_config_from_dict(merged(BASE, {"budget": {"trials": 4}}))
    run_dir = tmp_path / "run"
    prepare_run_dir(config, run_dir, resume=False)
    search = open_search(config, run_dir)
    candidate = search.next_candidate()
    search.store.append({**search._identity(candidate), "status": "ok", "miou": 0.5, "objective": 0.5})
    del search  # killed between the row and the state save
    resumed = open_search(config, run_dir)
    assert resumed.rerun == [] and resumed.next_id == 1
    assert len(pq.read_table(run_dir / TABLE_NAME)) == 1


def test_the_first_trial_in_flight_without_a_table_still_resumes(tmp_path) -> None:
    config = search_config_from_dict(BASE)
    run_dir = tmp_path / "run"
    prepare_run_dir(config, run_dir, resume=False)
    search = open_search(config, run_dir)
    in_flight = search.next_candidate()
    del search  # killed while the first trial ran: a state, no table yet
    assert not (run_dir / TABLE_NAME).exists()
    resumed = open_search(config, run_dir)
    assert [c.id for c in resumed.rerun] == [in_flight.id]


# ---------------------------------------------------------------------------------- promote
def test_promote_refuses_bad_arguments_before_anything_is_written(tmp_path, capsys) -> None:
    run_dir = finished_run(tmp_path)
    before = snapshot(run_dir)
    for args, message in (
        (["--top", "0"], "--top: must be >= 1, got 0"),
        (["--top", "-1"], "--top: must be >= 1, got -1"),
        (["--seed", "-5"], "--seed: must be in 0..4,294,967,295, got -5"),
        (["--fidelity", "nope"], "task 'synthetic' has no fidelity 'nope'"),
    ):
        assert message in refused(["promote", str(run_dir), *args], capsys)
        assert snapshot(run_dir) == before
    (run_dir / TABLE_NAME).write_bytes(b"PAR1 damaged")
    before = snapshot(run_dir)
    assert "unreadable results table" in refused(["promote", str(run_dir)], capsys)
    assert snapshot(run_dir) == before


# ---------------------------------------------------------------------------------- Ray
def test_trials_that_fit_no_node_are_refused_and_the_search_leaves_no_ray_behind(tmp_path, capfd, monkeypatch):
    import ray

    from nas.search.runner import connect_ray

    # capfd: what Ray's own processes and loggers write to the terminal counts as lines too.
    # HOME and the environment: not a cluster an autoscaler may grow (a cluster launcher's head, a
    # Kubernetes pod); Ray keeps its token under the new HOME.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    out = ["--out", str(tmp_path / "run")]
    # The search starts its own local Ray (every CPU of this machine), finds no node for the
    # trial and shuts that Ray down again.
    config = write_config(tmp_path, resources={"cpus_per_trial": 4096, "ray_cpus": None})
    line = refused(["search", "--config", str(config), *out], capfd)
    assert line.startswith("nas: error: resources.cpus_per_trial 4096 fits on no node of the Ray cluster (largest")
    assert not ray.is_initialized() and not (tmp_path / "run").exists()
    # A Ray the caller started is checked the same way and left running.
    ray.init(
        address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, logging_level="WARNING"
    )
    try:
        config = write_config(tmp_path, resources={"cpus_per_trial": 64})
        line = refused(["search", "--config", str(config), *out], capfd)
        assert line == (
            "nas: error: resources.cpus_per_trial 64 fits on no node of the Ray cluster (largest node: 2 CPUs, 0 GPUs)"
        )
        gpu_config = write_config(tmp_path, resources={"gpus_per_trial": 1, "ray_gpus": None})
        line = refused(["search", "--config", str(gpu_config), *out], capfd)
        assert line == (
            "nas: error: resources.gpus_per_trial 1 fits on no node of the Ray cluster (largest node: 2 CPUs, 0 GPUs)"
        )
        assert ray.is_initialized() and not (tmp_path / "run").exists()
        # On a cluster launcher's head an autoscaler may add a node that fits: said, not refused.
        (tmp_path / "ray_bootstrap_config.yaml").write_text("cluster_name: test\n")
        said: list[str] = []
        assert (
            connect_ray(search_config_from_dict(merged(BASE, {"resources": {"gpus_per_trial": 1}})), None, said.append)
            is False
        )
        assert said == [
            "resources.gpus_per_trial 1 fits on no node of the Ray cluster (largest node: 2 CPUs, 0 GPUs) yet; "
            "the trials wait for the autoscaler to add one"
        ]
    finally:
        ray.shutdown()
