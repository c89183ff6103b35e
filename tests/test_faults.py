"""Crashes at chosen points (`nas.common.faults`): a worker killed mid-trial, the driver killed mid-search.

Whatever dies where, the finished table holds every candidate once, none lost and none wrongly failed.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import ray

from nas.common.faults import failpoint
from nas.search.config import load_search_config
from nas.search.runner import run_search
from tests.test_search_ray import NAS, write_config


def _reach_five_times(env: dict[str, str], passes: Path) -> None:
    os.environ.update(env)
    for _ in range(5):
        failpoint("point")
        with passes.open("a") as out:
            out.write("passed\n")


def _run_reaching(env: dict[str, str], tmp_path: Path) -> tuple[int, int]:
    """A forked process that reaches ``point`` five times: its exit code and how often it got past."""
    passes = tmp_path / "passes"
    passes.unlink(missing_ok=True)
    child = multiprocessing.get_context("fork").Process(target=_reach_five_times, args=(env, passes))
    child.start()
    child.join(timeout=60)
    return child.exitcode, len(passes.read_text().splitlines()) if passes.exists() else 0


def test_a_failpoint_kills_on_the_chosen_reach_and_once_with_a_marker(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NAS_FAILPOINTS", raising=False)
    failpoint("point")  # not listed: nothing happens
    assert _run_reaching({"NAS_FAILPOINTS": "other, point@3"}, tmp_path) == (-signal.SIGKILL, 2)
    assert _run_reaching({"NAS_FAILPOINTS": "point"}, tmp_path) == (-signal.SIGKILL, 0)
    markers = {"NAS_FAILPOINTS": "point@2", "NAS_FAILPOINT_DIR": str(tmp_path / "markers")}
    assert _run_reaching(markers, tmp_path) == (-signal.SIGKILL, 1)
    assert (tmp_path / "markers" / "point").is_file()
    assert _run_reaching(markers, tmp_path) == (0, 5)  # a restarted process passes the point
    monkeypatch.setenv("NAS_FAILPOINTS", "point@0")
    with pytest.raises(ValueError, match="NAS_FAILPOINTS: 'point@0': the count after @ must be a whole number"):
        failpoint("point")


def _assert_every_trial_recorded_once(table: pd.DataFrame, budget: int) -> None:
    assert len(table) == budget and sorted(table["trial_id"]) == list(range(budget))
    assert (table["status"] == "ok").all(), table[["trial_id", "status", "error"]]
    for _, row in table.iterrows():  # the result is the trial's own last evaluation
        assert math.isfinite(row["miou"]) and row["miou"] == json.loads(row["history"])[-1]["miou"]


def test_workers_killed_at_the_end_of_their_trials_are_restarted_and_keep_their_results(
    tmp_path: Path, monkeypatch
) -> None:
    # Set before Ray starts, so that its workers inherit them. The markers let each point fire once: one worker
    # dies with its final evaluation checkpointed, one (the same trial restarted, or another) while measuring cost.
    points = ("trial.after_final_checkpoint", "trial.measure_cost")
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NAS_FAILPOINTS", ",".join(points))
    monkeypatch.setenv("NAS_FAILPOINT_DIR", str(tmp_path / "markers"))
    budget = 3
    config = load_search_config(write_config(tmp_path, trials=budget, steps=2))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        run_search(config, tmp_path / "run", log=lambda _: None)
    finally:
        ray.shutdown()
    assert sorted(p.name for p in (tmp_path / "markers").iterdir()) == sorted(points)  # both fired
    table = pd.read_parquet(tmp_path / "run" / "trials.parquet")
    _assert_every_trial_recorded_once(table, budget)
    assert table["attempts"].sum() == budget + 2  # each kill cost one restart, nothing more


def _nas(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    """``nas ARGS`` in its own process group, which is killed afterwards: a driver killed by SIGKILL
    leaves its local Ray behind."""
    process = subprocess.Popen(
        [*NAS, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone: nothing lingers
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_a_driver_killed_at_each_point_resumes_to_every_trial_once(tmp_path: Path) -> None:
    budget = 6
    config = write_config(tmp_path, trials=budget, steps=2)
    run_dir, table = tmp_path / "run", tmp_path / "run" / "trials.parquet"
    env = {**os.environ, "NAS_CACHE_DIR": str(tmp_path / "cache"), "RAY_ADDRESS": ""}
    start = ["search", "--config", str(config), "--out", str(run_dir)]
    resume = ["search", "--resume", str(run_dir)]
    tables: list[pd.DataFrame] = []  # the table as each kill left it
    # One search killed three times, each run resuming the last; how many rows each kill leaves in the table:
    kills = [
        (start, "search.ask@3", (1, 2)),  # a candidate asked, not yet saved: after one or two rows
        (resume, "search.tell@2", (2, 2)),  # the second row written, the controller not yet told
        (resume, "store.write@2", (1, 1)),  # the second row's table beside the first's: the first's stays
    ]
    for args, point, (fewest, most) in kills:
        rows_before = len(tables[-1]) if tables else 0
        killed = _nas(args, {**env, "NAS_FAILPOINTS": point})
        assert killed.returncode == -signal.SIGKILL, f"{point}: {killed.stderr[-2000:]}"
        tables.append(pd.read_parquet(table))
        assert fewest <= len(tables[-1]) - rows_before <= most, point

    done = _nas(resume, env)
    assert done.returncode == 0, done.stderr[-2000:]
    after = pd.read_parquet(table)
    _assert_every_trial_recorded_once(after, budget)
    # The rows written before the kills are kept as they were: not lost, not trained again.
    columns = ["spec_hash", "miou", "finished_at", "attempts"]
    for before in tables:
        kept = after.set_index("trial_id").loc[before["trial_id"], columns]
        pd.testing.assert_frame_equal(kept, before.set_index("trial_id")[columns])
    assert f"{budget} trials (ok {budget}" in done.stdout
