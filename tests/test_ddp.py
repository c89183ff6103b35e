"""Data-parallel training: the sharded stream, accumulation, two gloo workers against one process,
resuming after a lost node, and the refusals of `nas train --workers` / `nas promote --workers`.

BatchNorm normalises each worker's (and each micro-batch's) images by themselves, and the ASPP's
dropout draws its masks per process, so no split of a batch can reproduce the one-process training
with them. The equivalence tests train networks without either: dropout 0, and per-sample
normalisation (GroupNorm) where the builder puts BatchNorm, in the test process and, through Ray's
``worker_process_setup_hook``, in every Ray worker.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
import yaml
from torch import nn

import proxy_tasks.trial as trial
from nas.cli import main
from nas.common.config import ConfigError
from nas.model.checkpoint import load_model
from proxy_tasks.loader import ShardSampler, StreamSampler
from proxy_tasks.parallel import BatchSplitError, micro_batch_size
from proxy_tasks.task import load_task
from search_spaces import ArchSpec, get_spec

HOOK = f"{__name__}.in_every_ray_worker"
PAUSE_VAR = "NAS_TEST_PAUSE"  # STEP:MARKER_FILE: the first workers to reach STEP's checkpoint stop there
RTOL = 1e-5  # float32 rounding, summed in another order: measured below 3e-7 over these 20 steps


# ---------------------------------------------------------------------------------- the network and the pause
def per_sample_norm(model: nn.Module) -> nn.Module:
    """``model`` with GroupNorm(1) (each image normalised by itself) where it has BatchNorm."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.GroupNorm(1, child.num_features))
    return model


def _build_per_sample_norm(spec, num_classes: int) -> nn.Module:
    from nas.model.builder import build_model

    return per_sample_norm(build_model(spec, num_classes))


def _pause_at(step: int, marker: Path):
    """`_evaluate_and_checkpoint` that, the first time (across processes: ``marker``), stops at ``step``
    once the checkpoint is reported, until the process is killed."""
    evaluate_and_checkpoint = trial._evaluate_and_checkpoint

    def paused(run, counters, *args, **kwargs):
        answer = evaluate_and_checkpoint(run, counters, *args, **kwargs)
        if counters.step == step and not marker.exists():
            marker.touch()
            while True:
                time.sleep(1)
        return answer

    return paused


def in_every_ray_worker() -> None:
    """Ray's ``worker_process_setup_hook`` for these tests (it runs in each Ray worker process)."""
    trial.build_model = _build_per_sample_norm
    pause = os.environ.get(PAUSE_VAR)
    if pause:
        step, marker = pause.split(":", 1)
        trial._evaluate_and_checkpoint = _pause_at(int(step), Path(marker))


# ---------------------------------------------------------------------------------- files
def write_task(folder: Path, steps: int = 20, eval_every: int = 0) -> Path:
    """A tiny synthetic task; scale augmentation pads crops with ignored pixels, so that micro-batches
    hold different numbers of labelled pixels."""
    fidelity = {"resolution": 1.0, "crop": 32, "width": 0.125, "resample_alpha": 0.25, "steps": steps}
    task = {
        "name": "tiny",
        "dataset": {"kind": "synthetic", "synthetic": {"image_size": 32, "num_train": 16, "num_val": 4, "seed": 0}},
        "fidelities": {
            "b4": {**fidelity, "batch_size": 4, "eval_every": eval_every},
            "b4x2": {**fidelity, "batch_size": 4, "accumulate": 2, "eval_every": eval_every},
        },
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "augment": {"scale_min": 0.5, "scale_max": 1.5, "hflip": True},
        "workers": 0,
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


def write_spec(folder: Path) -> Path:
    spec = get_spec("deeplabv3-resnet50")
    path = folder / "spec.json"
    path.write_text(replace(spec, head=replace(spec.head, aspp_dropout=0.0)).to_json())
    return path


def train(folder: Path, out: str, *options: str) -> int:
    """``nas train`` of the files `write_spec` and `write_task` wrote into ``folder``, at fidelity b4."""
    arch, task = str(folder / "spec.json"), str(folder / "tiny.yaml")
    command = ["train", "--arch", arch, "--task", task, "--fidelity", "b4", "--out", str(folder / out), "--quiet"]
    return main([*command, *options])


def curve(out: Path) -> np.ndarray:
    metrics = json.loads((out / "metrics.json").read_text())
    return np.array([loss for _, loss in metrics["loss_curve"]])


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    # Ray's workers import HOOK from this module: the repository root must be on their path, as it is
    # on pytest's (the installed project holds the packages, not the tests). They inherit this.
    root = str(Path(__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))


# ---------------------------------------------------------------------------------- without Ray
def test_the_shards_of_the_stream_are_the_one_worker_batches() -> None:
    stream = [item for item, _ in zip(StreamSampler(10, seed=3, start=8), range(24))]
    shards = [list(islice(ShardSampler(StreamSampler(10, seed=3, start=8), rank, 2, 3), 12)) for rank in (0, 1)]
    # Worker r's k-th micro-batch of 3 is the r-th half of the k-th run of 6 positions.
    for k in range(4):
        for rank in (0, 1):
            assert shards[rank][3 * k : 3 * k + 3] == stream[6 * k + 3 * rank : 6 * k + 3 * rank + 3]
    assert sorted(shards[0] + shards[1]) == sorted(stream)


def test_the_global_batch_must_split_over_workers_and_accumulation(tmp_path: Path) -> None:
    task = load_task(write_task(tmp_path))
    assert micro_batch_size(task.fidelity("b4"), 2) == 2 and micro_batch_size(task.fidelity("b4x2"), 2) == 1
    with pytest.raises(BatchSplitError, match="batch_size 2 does not split into 2 workers x 2 accumulation steps"):
        micro_batch_size(replace(task.fidelity("b4x2"), batch_size=2), 2)
    with pytest.raises(ConfigError, match="accumulate: batch_size 4 does not split into 3 micro-batches"):
        replace(task.fidelity("b4"), accumulate=3)


def test_accumulated_micro_batches_train_as_the_whole_batch(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(trial, "build_model", _build_per_sample_norm)
    task = load_task(write_task(tmp_path))
    spec = get_spec("deeplabv3-resnet50")
    spec = replace(spec, head=replace(spec.head, aspp_dropout=0.0))
    whole = trial.run_trial(spec, task, "b4", seed=1)
    accumulated = trial.run_trial(spec, task, "b4x2", seed=1)
    assert whole.steps == accumulated.steps == 20 and len(whole.loss_curve) == 20
    np.testing.assert_allclose([v for _, v in accumulated.loss_curve], [v for _, v in whole.loss_curve], rtol=RTOL)
    assert accumulated.val_loss == pytest.approx(whole.val_loss, rel=1e-4)
    assert accumulated.images_per_second > 0 and accumulated.status == "ok"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "3"], "--workers 3: fidelity 'b4': batch_size 4 does not split into 3 workers x 1"),
        (["--workers", "0"], "train: argument --workers: must be in 1..4,096, got 0"),
        (["--workers", "2", "--gpus-per-worker", "-1"], "argument --gpus-per-worker: must be in 0..64, got -1"),
    ],
)
def test_bad_worker_options_are_one_line_and_write_nothing(tmp_path: Path, capsys, options, message) -> None:
    write_spec(tmp_path), write_task(tmp_path)
    assert train(tmp_path, "out", *options) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists() and not ray.is_initialized()


def test_a_damaged_state_to_resume_is_refused_before_ray_starts(tmp_path: Path, capsys) -> None:
    write_spec(tmp_path), write_task(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / trial.CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    assert train(tmp_path, "out", "--workers", "2", "--resume") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trial_state.pt: unreadable trial checkpoint (UnpicklingError)" in err, err
    assert [p.name for p in (tmp_path / "out").iterdir()] == [trial.CHECKPOINT_NAME] and not ray.is_initialized()


# ---------------------------------------------------------------------------------- on Ray Train
def test_workers_no_node_can_hold_are_refused_instead_of_waiting_forever(tmp_path: Path, capsys) -> None:
    write_spec(tmp_path), write_task(tmp_path)
    # 64 GPUs a worker, which no machine has: Ray Train would wait for them without end. The private Ray
    # started to check is shut down again, and the refusal is the only line.
    assert train(tmp_path, "out", "--workers", "2", "--gpus-per-worker", "64") == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: 2 workers of 1 CPU and 64 GPUs do not fit on the Ray cluster: its 1 node(s)")
    assert err.count("\n") == 1 and err.rstrip().endswith("GPUs in all) hold 0 of them"), err
    assert not (tmp_path / "out").exists() and not ray.is_initialized()


def test_two_gloo_workers_train_as_one_process(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(trial, "build_model", _build_per_sample_norm)
    write_spec(tmp_path), write_task(tmp_path)
    assert train(tmp_path, "one", "--threads", "1") == 0
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
        runtime_env={"worker_process_setup_hook": HOOK},
    )
    try:
        # More than the cluster holds: refused in one line before anything is written; the caller's Ray stays up.
        assert train(tmp_path, "big", "--workers", "2", "--cpus-per-worker", "2") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "2 workers of 2 CPUs do not fit on the Ray cluster" in err, err
        assert not (tmp_path / "big").exists() and ray.is_initialized()
        assert train(tmp_path, "two", "--workers", "2") == 0
    finally:
        ray.shutdown()
    one, two = tmp_path / "one", tmp_path / "two"
    assert len(curve(one)) == 20
    np.testing.assert_allclose(curve(two), curve(one), rtol=RTOL)
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["steps"] == 20 and metrics["resumed_from_step"] == 0
    assert metrics["val_loss"] == pytest.approx(json.loads((one / "metrics.json").read_text())["val_loss"], rel=1e-4)
    weights = [torch.load(out / "checkpoint.pt", weights_only=True) for out in (one, two)]
    assert weights[1]["fidelity"] == "b4" and weights[1]["class_names"] == weights[0]["class_names"]
    for name, tensor in weights[0]["state_dict"].items():
        torch.testing.assert_close(weights[1]["state_dict"][name], tensor, rtol=1e-4, atol=1e-5)
    # Finished: no resume state and no Ray Train storage left in --out.
    assert sorted(p.name for p in two.iterdir()) == ["checkpoint.pt", "metrics.json", "spec.json", "train.log"]


def test_a_node_lost_mid_training_resumes_from_the_last_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from ray.cluster_utils import Cluster

    monkeypatch.setattr(trial, "build_model", _build_per_sample_norm)
    write_spec(tmp_path), write_task(tmp_path, eval_every=10)
    assert train(tmp_path, "one", "--threads", "1") == 0
    marker = tmp_path / "paused"
    monkeypatch.setenv(PAUSE_VAR, f"10:{marker}")  # before the nodes start: their workers inherit it
    # The head has no CPU: the workers run on the node that is then lost.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    doomed = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, runtime_env={"worker_process_setup_hook": HOOK})
    codes: list[int] = []
    out = tmp_path / "two"
    driver = threading.Thread(
        target=lambda: codes.append(train(tmp_path, "two", "--workers", "2", "--address", cluster.address)),
        daemon=True,
    )
    try:
        driver.start()
        # Both workers stand still after the checkpoint of step 10, which the driver's node now holds.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (marker.exists() and (out / trial.CHECKPOINT_NAME).exists()):
            time.sleep(0.2)
        assert marker.exists(), "the workers never reached step 10"
        cluster.add_node(num_cpus=2)
        cluster.remove_node(doomed, allow_graceful=False)
        driver.join(timeout=300)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert not driver.is_alive() and codes == [0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["steps"] == 20 and metrics["resumed_from_step"] == 10
    assert [h["step"] for h in metrics["history"]] == [10, 20]
    # The resumed run is the uninterrupted one: the same batches in the same order from step 11 on.
    np.testing.assert_allclose(curve(out), curve(tmp_path / "one"), rtol=RTOL)


def test_promote_trains_each_model_data_parallel(tmp_path: Path, capsys) -> None:
    from nas.search import Outcome, evaluate_in_process
    from nas.search.config import load_search_config
    from nas.search.runner import open_search, prepare_run_dir

    # A run of two trials, the baseline and one candidate, trained in this process.
    write_task(tmp_path)
    config = {
        "name": "ddp",
        "task": "tiny.yaml",
        "fidelity": "b4",
        "baselines": ["deeplabv3-resnet50"],
        "strategy": {"name": "random"},
        "budget": {"trials": 2},
        "resources": {"cpus_per_trial": 1, "ray_cpus": 2},
    }
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(config))
    config = prepare_run_dir(load_search_config(tmp_path / "search.yaml"), tmp_path / "run", resume=False)
    task = load_task(tmp_path / "tiny.yaml")
    evaluate_in_process(
        open_search(config, tmp_path / "run"),
        lambda candidate: Outcome(trial.run_trial(candidate.spec, task, "b4", seed=0).to_dict()),
    )
    command = ["promote", str(tmp_path / "run"), "--top", "1", "--fidelity", "b4", "--seeds", "1"]

    assert main([*command, "--workers", "3"]) == 2  # refused before Ray starts or anything is written
    err = capsys.readouterr().err
    assert err == "nas: error: --workers 3: fidelity 'b4': batch_size 4 does not split into 3 workers x 1 " + (
        "accumulation steps (workers x per-worker batch x accumulate must equal batch_size)\n"
    )
    assert not (tmp_path / "run" / "promoted").exists() and not ray.is_initialized()

    assert main([*command, "--workers", "2"]) == 0
    err = capsys.readouterr().err
    baseline = get_spec("deeplabv3-resnet50")
    assert f"training baseline deeplabv3-resnet50 ({baseline.hash[:10]}) seed 0 on 2 workers of 1 CPU" in err
    assert "training candidate random-1 " in err  # the search's own find, beside the baseline
    folder = tmp_path / "run" / "promoted" / baseline.hash
    record = json.loads((folder / "metrics.json").read_text())
    assert record["status"] == "ok" and record["role"] == "baseline" and record["seed"] == 0
    assert record["full"]["steps"] == 20 and record["full"]["fidelity"] == "b4" and 0 <= record["full"]["miou"] <= 1
    model, meta = load_model(folder / "model.pt")
    assert (
        model.spec == ArchSpec.from_json((folder / "spec.json").read_text()) and meta["miou"] == record["full"]["miou"]
    )
    assert not ray.is_initialized()  # the private Ray of the promotion is gone
