"""The trial function: smoke training per head type, reporting, early stop, resume, divergence."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nas.model.checkpoint import load_model
from proxy_tasks.task import load_task
from proxy_tasks.trial import CHECKPOINT_NAME, run_trial
from search_spaces import get_spec


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))


def _task(steps: int = 4, eval_every: int = 0, workers: int = 0, ema_decay: float | None = None, **optimizer: object):
    task = load_task("synthetic")
    smoke = replace(task.fidelity("smoke"), steps=steps, eval_every=eval_every, ema_decay=ema_decay)
    return replace(
        task,
        fidelities={**task.fidelities, "smoke": smoke},
        workers=workers,
        optimizer=replace(task.optimizer, **optimizer),
    )


@pytest.mark.parametrize("arch", ["deeplabv3-resnet50", "deeplabv3plus-resnet50", "spinenet-49"])
def test_smoke_trial_per_head_type_returns_complete_metrics(arch: str) -> None:
    result = run_trial(get_spec(arch), _task(workers=1), "smoke", seed=0)
    assert result.status == "ok" and result.error is None
    assert 0.0 <= result.miou <= 1.0 and 0.0 <= result.pixel_accuracy <= 1.0
    assert set(result.per_class_iou) == {"background", "disk", "ring", "square", "triangle", "cross", "bar"}
    assert result.steps == 4 and len(result.loss_curve) == 4 and math.isfinite(result.loss_final)
    assert math.isfinite(result.val_loss) and result.val_loss > 0
    assert result.params > 0 and result.flops > 0 and result.latency_ms > 0
    assert result.train_seconds > 0 and result.images_per_second > 0 and 0 <= result.data_wait_fraction < 1
    assert result.peak_memory_mb > 0 and result.input_size == (64, 64) and result.num_classes == 7
    assert result.spec_hash == get_spec(arch).hash
    json.dumps(result.to_dict())  # JSON-ready


def test_validation_loss_is_the_mean_cross_entropy_over_labelled_pixels() -> None:
    from proxy_tasks.task import build_datasets
    from proxy_tasks.trial import evaluate

    class Uniform(torch.nn.Module):  # equal logits for every class: cross-entropy ln(C) at every pixel
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.zeros(images.shape[0], 7, *images.shape[2:])

    task = _task()
    _, val = build_datasets(task, task.fidelity("smoke"))
    summary = evaluate(Uniform(), val, task, task.fidelity("smoke"), torch.device("cpu"))
    assert summary["loss"] == pytest.approx(math.log(7), rel=1e-6)  # float32 logits


def test_trial_is_reproducible_by_seed() -> None:
    a = run_trial(get_spec("deeplabv3plus-resnet50"), _task(), "smoke", seed=3)
    b = run_trial(get_spec("deeplabv3plus-resnet50"), _task(), "smoke", seed=3)
    assert a.loss_curve == b.loss_curve and a.miou == b.miou


def test_report_is_called_per_evaluation_and_can_stop_the_trial() -> None:
    seen: list[dict] = []
    result = run_trial(get_spec("spinenet-49"), _task(steps=6, eval_every=2), "smoke", report=seen.append)
    assert [r["step"] for r in seen] == [2, 4, 6] and result.status == "ok"
    assert all(0 <= r["miou"] <= 1 for r in seen)
    stopped = run_trial(get_spec("spinenet-49"), _task(steps=6, eval_every=2), "smoke", report=lambda m: m["step"] >= 4)
    assert stopped.status == "pruned" and stopped.steps == 4 and len(stopped.history) == 2


def test_interrupted_trial_resumes_to_the_same_result(tmp_path: Path) -> None:
    spec, task = get_spec("deeplabv3-resnet50"), _task(steps=6, eval_every=2)
    whole = run_trial(spec, task, "smoke", seed=1)
    # Stop after the first evaluation (as a killed worker would), then resume from the checkpoint.
    first = run_trial(spec, task, "smoke", seed=1, checkpoint_dir=tmp_path, report=lambda m: True)
    assert first.status == "pruned" and first.steps == 2 and (tmp_path / CHECKPOINT_NAME).is_file()
    resumed = run_trial(spec, task, "smoke", seed=1, checkpoint_dir=tmp_path)
    assert resumed.resumed_from_step == 2 and resumed.steps == 6
    assert [s for s, _ in resumed.loss_curve] == [1, 2, 3, 4, 5, 6]
    torch.testing.assert_close(torch.tensor(resumed.loss_curve), torch.tensor(whole.loss_curve))
    assert resumed.miou == pytest.approx(whole.miou, abs=1e-6)


# What naturally differs between an interrupted and an uninterrupted run: timings, and where it resumed.
TIMINGS = {
    "latency_ms",
    "train_seconds",
    "eval_seconds",
    "images_per_second",
    "data_wait_fraction",
    "peak_memory_mb",
    "resumed_from_step",
}


def _measured(result) -> str:
    """Every other field of a trial result as JSON text: exact, and NaN compares equal to NaN."""
    return json.dumps({k: v for k, v in result.to_dict().items() if k not in TIMINGS}, sort_keys=True)


@pytest.mark.parametrize(
    ("steps", "eval_every", "batch_size"),
    [(6, 2, 4), (100, 99, 2)],  # 100 steps: a loss-curve point every 2 steps, so step 99's checkpoint holds a half
)
def test_resuming_from_any_checkpoint_gives_the_uninterrupted_result(
    tmp_path: Path, steps: int, eval_every: int, batch_size: int
) -> None:
    spec, task = get_spec("deeplabv3-resnet50"), _task(steps=steps, eval_every=eval_every)
    task = replace(task, fidelities={"smoke": replace(task.fidelity("smoke"), batch_size=batch_size)})
    weights: dict[str, dict[str, torch.Tensor]] = {}

    def keep(name: str):
        return lambda model: weights.update({name: {k: v.clone() for k, v in model.state_dict().items()}})

    def copy_checkpoint(metrics: dict) -> None:  # each evaluation's checkpoint, as a killed worker would leave it
        shutil.copytree(tmp_path / "run", tmp_path / f"step-{metrics['step']}")

    whole = run_trial(
        spec, task, "smoke", seed=1, checkpoint_dir=tmp_path / "run", report=copy_checkpoint, on_trained=keep("whole")
    )
    assert whole.status == "ok" and math.isfinite(whole.miou) and whole.history[-1]["miou"] == whole.miou
    checkpoints = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("step-*"))
    assert checkpoints == [*range(eval_every, steps, eval_every), steps]
    for step in checkpoints:
        seen: list[dict] = []
        resumed = run_trial(
            spec,
            task,
            "smoke",
            seed=1,
            checkpoint_dir=tmp_path / f"step-{step}",
            report=seen.append,
            on_trained=keep("resumed"),
        )
        assert resumed.resumed_from_step == step and resumed.status == "ok" and resumed.error is None
        assert _measured(resumed) == _measured(whole), f"resumed from step {step}"
        assert [m["step"] for m in seen] == [s for s in checkpoints if s > step]  # evaluations not made again
        for name, tensor in weights["whole"].items():  # on_trained gets the trained weights, not fresh ones
            assert torch.equal(weights["resumed"][name], tensor), name


def test_weight_average_is_what_is_evaluated_and_kept_and_it_resumes(tmp_path: Path) -> None:
    spec = get_spec("deeplabv3plus-resnet50")
    kept: dict[str, dict[str, torch.Tensor]] = {}

    def keep(name: str):
        return lambda model: kept.update({name: {k: v.clone() for k, v in model.state_dict().items()}})

    plain = run_trial(spec, _task(steps=6, eval_every=2), "smoke", seed=2, on_trained=keep("plain"))
    averaged = run_trial(spec, _task(steps=6, eval_every=2, ema_decay=0.5), "smoke", seed=2, on_trained=keep("ema"))
    # The average only changes what is evaluated: training (the loss curve) is the same run.
    assert averaged.loss_curve == plain.loss_curve and averaged.status == "ok"
    assert averaged.miou != plain.miou or averaged.pixel_accuracy != plain.pixel_accuracy
    weights = [k for k, v in kept["plain"].items() if v.is_floating_point()]
    assert all(kept["ema"][k].shape == kept["plain"][k].shape for k in weights)
    assert any(not torch.equal(kept["ema"][k], kept["plain"][k]) for k in weights)
    # Killed after the first evaluation and resumed: the same average, the same metrics.
    task = _task(steps=6, eval_every=2, ema_decay=0.5)
    run_trial(spec, task, "smoke", seed=2, checkpoint_dir=tmp_path, report=lambda m: True)
    resumed = run_trial(spec, task, "smoke", seed=2, checkpoint_dir=tmp_path, on_trained=keep("resumed"))
    assert resumed.resumed_from_step == 2 and resumed.miou == pytest.approx(averaged.miou, abs=1e-6)
    for k in weights:
        torch.testing.assert_close(kept["resumed"][k], kept["ema"][k])


def test_resume_refuses_a_foreign_or_damaged_checkpoint(tmp_path: Path) -> None:
    from proxy_tasks.trial import ResumeError

    task = _task(steps=4, eval_every=2)
    run_trial(get_spec("spinenet-49"), task, "smoke", seed=0, checkpoint_dir=tmp_path, report=lambda m: True)
    with pytest.raises(ResumeError, match=r"checkpoint of spec .* this trial is spec"):
        run_trial(get_spec("deeplabv3-resnet50"), task, "smoke", seed=0, checkpoint_dir=tmp_path)
    with pytest.raises(ResumeError, match=r"seed 0; this trial is spec .* seed 1"):
        run_trial(get_spec("spinenet-49"), task, "smoke", seed=1, checkpoint_dir=tmp_path)
    with pytest.raises(ResumeError, match="checkpoint has no weight average, this fidelity keeps one"):
        run_trial(
            get_spec("spinenet-49"), _task(steps=4, eval_every=2, ema_decay=0.9), "smoke", checkpoint_dir=tmp_path
        )
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"truncated")
    with pytest.raises(ResumeError, match="unreadable trial checkpoint"):
        run_trial(get_spec("spinenet-49"), task, "smoke", seed=0, checkpoint_dir=tmp_path)


def test_divergence_is_reported_not_raised() -> None:
    result = run_trial(get_spec("deeplabv3-resnet50"), _task(steps=6, lr=1e12, name="sgd"), "smoke")
    assert result.status == "diverged" and "loss became" in result.error
    assert result.steps < 6


def test_nas_train_writes_metrics_checkpoint_and_log(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "nas.cli",
        "train",
        "--arch",
        "deeplabv3-resnet50",
        "--task",
        "synthetic",
        "--fidelity",
        "smoke",
        "--out",
        str(out),
        "--quiet",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["status"] == "ok"
    assert "step 4: mIoU" in (out / "train.log").read_text()
    assert not (out / CHECKPOINT_NAME).exists()
    model, meta = load_model(out / "checkpoint.pt")
    assert meta["fidelity"] == "smoke" and meta["task"] == "synthetic" and model.num_classes == 7
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "holds a finished run" in again.stderr
    evaluated = subprocess.run(
        [sys.executable, "-m", "nas.cli", "eval", str(out / "checkpoint.pt"), "--task", "synthetic"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["miou"] == pytest.approx(metrics["miou"], abs=1e-6)


def test_nas_train_reports_bad_data_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    (root / "classes.txt").write_text("a\nb\n")
    (root / "train" / "images" / "x.png").write_bytes(b"not a png")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nas.cli",
            "train",
            "--arch",
            "spinenet-49",
            "--task",
            "folder",
            "--data-root",
            str(root),
            "--fidelity",
            "smoke",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("nas: error: ") and "masks/x.png: missing mask" in done.stderr
    assert done.stderr.count("\n") == 1
