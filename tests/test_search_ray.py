"""The search on Ray Tune: tiny trials on a local Ray, failures, SIGKILL and resume, a lost node."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml

from analysis import load_run
from nas.cli import main
from nas.model.checkpoint import load_model
from nas.search import runner
from nas.search.config import load_search_config
from nas.search.promote import compare_seeds, promote, verdict
from nas.search.runner import SearchError, run_search
from nas.search.search import Search
from search_spaces import ArchSpec, get_spec

NAS = [sys.executable, "-m", "nas.cli"]


def write_task(folder: Path, steps: int = 3) -> Path:
    task = {
        "name": "tiny",
        "dataset": {"kind": "synthetic", "synthetic": {"image_size": 32, "num_train": 16, "num_val": 4, "seed": 0}},
        "fidelities": {
            "smoke": {
                "resolution": 1.0,
                "crop": 32,
                "width": 0.125,
                "resample_alpha": 0.25,
                "steps": steps,
                "batch_size": 2,
                "eval_every": max(1, steps // 2),
            },
            "full": {"resolution": 1.0, "crop": 32, "width": 1.0, "steps": 2, "batch_size": 2},
        },
        "optimizer": {"name": "adamw", "lr": 0.001},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


def write_config(folder: Path, trials: int = 4, steps: int = 3, **extra) -> Path:
    write_task(folder, steps)
    config = {
        "name": "t",
        "task": "tiny.yaml",
        "fidelity": "smoke",
        "baselines": [],
        "strategy": {"name": "random"},
        "budget": {"trials": trials},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 2, "ray_cpus": 2},
        "retries": 2,
        **extra,
    }
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_search_on_local_ray_records_every_trial_and_nas_show_lists_them(tmp_path, local_ray, capsys) -> None:
    config = load_search_config(
        write_config(tmp_path, trials=4, strategy={"name": "evolution", "population": 2, "sample_size": 2})
    )
    search = run_search(config, tmp_path / "run", log=lambda _: None)
    table = pd.read_parquet(tmp_path / "run" / "trials.parquet")
    assert len(table) == 4 and (table["status"] == "ok").all() and search.finished
    assert table["miou"].between(0, 1).all() and (table["flops"] > 0).all() and (table["params"] > 0).all()
    assert table["node"].notna().all() and (table["device"] == "cpu").all() and (table["attempts"] == 1).all()
    assert set(table["origin"]) <= {"random", "mutation"} and table["tune_trial_id"].is_unique
    assert main(["show", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "4 trials (ok 4, failed 0, pruned 0, duplicate 0)" in out and "best spec:" in out
    for name in table["name"]:
        assert name in out
    with pytest.raises(SearchError, match="already holds a search; use --resume"):
        run_search(config, tmp_path / "run", log=lambda _: None)

    # Promotion: the best two retrained at full fidelity (full width), weights and metrics kept.
    summary = promote(tmp_path / "run", top=2, seeds=1, log=lambda _: None)
    best = table.sort_values(["objective", "trial_id"], ascending=[False, True]).head(2)
    assert [r["spec_hash"] for r in summary.rows] == list(best["spec_hash"])
    promoted = pd.read_parquet(tmp_path / "run" / "promoted.parquet")
    assert (promoted["status"] == "ok").all() and promoted["promoted_miou"].between(0, 1).all()
    assert list(promoted["proxy_miou"]) == list(best["miou"])
    assert math.isnan(summary.kendall_tau)  # two models: too few to rank
    folder = tmp_path / "run" / "promoted" / best.iloc[0]["spec_hash"]
    model, _ = load_model(folder / "model.pt")
    assert model.spec.hash == best.iloc[0]["spec_hash"]  # full width: the searched spec itself
    assert ArchSpec.from_json((folder / "spec.json").read_text()) == model.spec  # they load together
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["fidelity"] == "full" and metrics["proxy"]["miou"] == best.iloc[0]["miou"]
    assert metrics["proxy"]["fidelity"] == "smoke" and 0 <= metrics["full"]["miou"] <= 1
    # A promoted spec retrains with nas train.
    out = tmp_path / "retrain"
    assert (
        main(
            [
                "train",
                "--arch",
                str(folder / "spec.json"),
                "--task",
                str(tmp_path / "tiny.yaml"),
                "--fidelity",
                "full",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((out / "metrics.json").read_text())["spec_hash"] == model.spec.hash


def test_promotion_compares_the_best_with_the_baseline_over_seeds_and_resumes(tmp_path, local_ray, capsys) -> None:
    run_search(load_search_config(write_config(tmp_path, trials=1, steps=2)), tmp_path / "run", log=lambda _: None)
    messages: list[str] = []
    summary = promote(tmp_path / "run", top=1, fidelity="smoke", seeds=2, log=messages.append)

    # The search trained the candidate at this fidelity with seed 0: that training is taken, not repeated;
    # seed 1 is trained here and gives the weights.
    [searched] = pd.read_parquet(tmp_path / "run" / "trials.parquet").to_dict("records")
    assert "(1 of 4 trainings already done, 1 of them by the search)" in messages[0]
    taken = tmp_path / "run" / "promoted" / searched["spec_hash"] / "seeds" / "smoke-seed0"
    record = json.loads((taken / "metrics.json").read_text())
    assert record["search_trial_id"] == searched["trial_id"] and record["full"]["miou"] == searched["miou"]
    assert record["full"]["flops"] == searched["flops"] and not (taken / "model.pt").exists()
    trained_here = taken.parent / "smoke-seed1" / "spec.json"
    assert ArchSpec.from_json((taken / "spec.json").read_text()) == ArchSpec.from_json(trained_here.read_text())
    assert sum(m.startswith("promoted ") and "trained by the search" not in m for m in messages) == 3
    published = json.loads((taken.parent.parent / "metrics.json").read_text())
    assert published["seed"] == 1 and (taken.parent.parent / "model.pt").is_file()  # the seed with weights

    # The best candidate and the default baseline (the config names none), each trained with seeds 0 and 1.
    seeds = pd.read_parquet(tmp_path / "run" / "promoted_seeds.parquet")
    assert sorted(zip(seeds["role"], seeds["seed"])) == [
        ("baseline", 0),
        ("baseline", 1),
        ("candidate", 0),
        ("candidate", 1),
    ]
    assert (seeds["status"] == "ok").all() and (seeds["fidelity"] == "smoke").all()
    base = seeds[seeds["role"] == "baseline"]
    cand = seeds[seeds["role"] == "candidate"]
    assert set(base["spec_hash"]) == {get_spec("deeplabv3-resnet50").hash}
    assert list(cand["spec_hash"]) == [summary.rows[0]["spec_hash"]] * 2

    comparison = json.loads((tmp_path / "run" / "promoted" / "summary.json").read_text())["comparison"]
    assert comparison["fidelity"] == "smoke" and comparison["seeds"] == [0, 1] and "Welch" in comparison["rule"]
    [candidate] = comparison["candidates"]
    assert candidate["mean"] == pytest.approx(cand["miou"].mean()) and candidate["seeds"] == 2
    assert candidate["std"] == pytest.approx(cand["miou"].std())  # the sample standard deviation
    [versus] = candidate["versus"]
    assert versus["flops_ratio"] == pytest.approx(cand["flops"].iloc[0] / base["flops"].iloc[0])
    assert versus["params_ratio"] == pytest.approx(cand["params"].iloc[0] / base["params"].iloc[0])
    expected = compare_seeds(list(cand["miou"]), list(base["miou"]))
    assert (
        versus["verdict"] == verdict("deeplabv3-resnet50", expected["beats"]) and versus["beats"] == expected["beats"]
    )
    promoted = pd.read_parquet(tmp_path / "run" / "promoted.parquet")
    assert list(promoted["fidelity"]) == ["smoke"] and promoted["promoted_miou"].iloc[0] == pytest.approx(
        candidate["mean"]
    )
    text = summary.to_text()
    assert "smoke mIoU" in text and versus["verdict"] in text and "one-sided Welch t-test" in text

    # Shown by nas show and the analysis API.
    assert main(["show", str(tmp_path / "run")]) == 0
    assert versus["verdict"] in capsys.readouterr().out
    table = load_run(tmp_path / "run").comparison
    assert list(table["baseline"]) == ["deeplabv3-resnet50"] and table["verdict"].iloc[0] == versus["verdict"]

    # Run again: every (model, fidelity, seed) is already trained, so nothing is.
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "promoted").glob("*/seeds/*/metrics.json")}
    messages.clear()
    again = promote(tmp_path / "run", top=1, fidelity="smoke", seeds=2, log=messages.append)
    assert len(written) == 4 and "(4 of 4 trainings already done)" in messages[0]
    assert not any(m.startswith("promoted ") for m in messages)
    assert {p: p.stat().st_mtime_ns for p in written} == written and again.comparison == summary.comparison

    # A promotion killed before one training finished kept the others (each is written as it ends): a rerun
    # trains only the missing one. Every experiment folder has an unguessable name, and the caller's Ray stays up.
    lost = next(
        p.parent for p in written if p.parent.name == "smoke-seed1" and json.loads(p.read_text())["role"] == "candidate"
    )
    shutil.rmtree(lost)
    messages.clear()
    promote(tmp_path / "run", top=1, fidelity="smoke", seeds=2, log=messages.append)
    assert "(3 of 4 trainings already done)" in messages[0]
    assert [m.split(":")[0] for m in messages if m.startswith("promoted ")] == [
        f"promoted candidate {summary.rows[0]['name']} ({summary.rows[0]['spec_hash'][:10]}) seed 1"
    ]
    assert (lost / "model.pt").is_file() and json.loads((lost / "metrics.json").read_text())["status"] == "ok"
    experiments = [p.name for p in (tmp_path / "run" / "ray").iterdir() if p.is_dir()]
    assert len(experiments) == 3 and all(re.fullmatch(r"tune-\d{8}-\d{6}-[0-9a-f]{8}", n) for n in experiments)
    assert ray.is_initialized()


def test_failing_trials_are_recorded_with_the_reason_and_the_search_completes(tmp_path, local_ray) -> None:
    path = write_config(tmp_path, trials=3)
    task = yaml.safe_load((tmp_path / "tiny.yaml").read_text())
    task["optimizer"]["lr"] = 1e12  # every candidate diverges
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(task))
    run_search(load_search_config(path), tmp_path / "run", log=lambda _: None)
    table = pd.read_parquet(tmp_path / "run" / "trials.parquet")
    assert len(table) == 3 and (table["status"] == "failed").all()
    assert table["error"].str.contains("loss became").all() and table["objective"].isna().all()


def test_the_time_limit_stops_new_trials_on_ray(tmp_path, local_ray, monkeypatch) -> None:
    ticks = iter(range(1000))  # a clock that moves one second per reading: when it is read, not how fast Ray is

    monkeypatch.setattr(runner, "Search", functools.partial(Search, clock=lambda: float(next(ticks))))
    config = load_search_config(write_config(tmp_path, trials=4, steps=1, budget={"trials": 4, "time_limit_s": 2.5}))
    search = run_search(config, tmp_path / "run", log=lambda _: None)
    # Read when opened (0 s), then at each ask: 1 s and 2 s hand out trials, 3 s is past the limit.
    table = pd.read_parquet(tmp_path / "run" / "trials.parquet")
    assert sorted(table["trial_id"]) == [0, 1] and (table["status"] == "ok").all()  # in the order they finish
    assert search.stopped and search.finished


def test_resume_after_sigkill_of_the_driver_finishes_without_duplicate_rows(tmp_path) -> None:
    config = write_config(tmp_path, trials=8, steps=12)
    run_dir = tmp_path / "run"
    env = {**os.environ, "NAS_CACHE_DIR": str(tmp_path / "cache"), "RAY_ADDRESS": ""}
    driver = subprocess.Popen(
        [*NAS, "search", "--config", str(config), "--out", str(run_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    table = run_dir / "trials.parquet"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not table.exists() or len(pd.read_parquet(table)) < 2):
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything in its process group, mid-search
    driver.wait()
    before = pd.read_parquet(table)
    assert 2 <= len(before) < 8

    done = subprocess.run(
        [*NAS, "search", "--resume", str(run_dir)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    after = pd.read_parquet(table)
    assert len(after) == 8 and after["trial_id"].is_unique and (after["status"] == "ok").all()
    # Finished trials were not rerun: their rows are unchanged.
    kept = after.set_index("trial_id").loc[before["trial_id"], ["spec_hash", "finished_at", "attempts"]]
    pd.testing.assert_frame_equal(kept, before.set_index("trial_id")[["spec_hash", "finished_at", "attempts"]])
    assert after["attempts"].max() <= 2  # an interrupted trial ran again once
    assert "resumed" in done.stderr and "8 trials (ok 8" in done.stdout


def test_a_node_lost_mid_search_is_survived_and_every_trial_recorded(tmp_path, monkeypatch) -> None:
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    # The head has no CPU, so the first trial can only run on the worker node.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    config = load_search_config(write_config(tmp_path, trials=3, steps=200))
    run_dir = tmp_path / "run"
    failures: list[BaseException] = []

    def search() -> None:
        try:
            run_search(config, run_dir, address=cluster.address, log=lambda _: None)
        except BaseException as exc:  # surfaced in the main thread
            failures.append(exc)

    driver = threading.Thread(target=search, daemon=True)
    driver.start()
    try:
        # Once a trial has reported from the worker, add a replacement node and kill the worker
        # (cluster_utils changes nodes from the main thread only).
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not list((run_dir / "ray").glob("*/*/result.json")):
            time.sleep(0.2)
        cluster.add_node(num_cpus=1)
        cluster.remove_node(worker, allow_graceful=False)
        driver.join(timeout=300)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert not driver.is_alive() and not failures, failures
    table = pd.read_parquet(run_dir / "trials.parquet")
    assert len(table) == 3 and table["trial_id"].is_unique and (table["status"] == "ok").all()
    assert table["attempts"].max() == 2  # the trial on the lost node was restarted once, elsewhere


def test_an_unreachable_cluster_is_one_line_and_loses_nothing(tmp_path, capsys) -> None:
    config = write_config(tmp_path, trials=2)
    code = main(["search", "--config", str(config), "--out", str(tmp_path / "run"), "--address", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [err.strip()]  # the error is the only line
    assert err.startswith("nas: error: cannot reach the Ray cluster at 127.0.0.1:1")
    assert not (tmp_path / "run").exists()  # the same command starts the run once the cluster is up
