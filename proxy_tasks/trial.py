"""The trial: train one architecture on one task at one fidelity and measure it honestly.

`run_trial(spec, task, fidelity, seed, device)` is a pure function of its arguments (no global
state), so the same call runs in-process, inside a Ray worker, and for the full training of a
promoted model. It reports each evaluation through ``report`` (return True from it to stop the
trial early, e.g. for a scheduler), checkpoints to ``checkpoint_dir`` (atomically) and resumes
from a checkpoint found there, continuing with exactly the batches the run would have seen.

The loop is meant to be read top to bottom.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from nas.common.atomic import atomic_path
from nas.common.errors import UserError
from nas.common.faults import failpoint
from nas.model.builder import build_model
from nas.model.cost import count_flops, count_params, measure_latency
from search_spaces import ArchSpec

from .loader import eval_loader, train_loader
from .metrics import ConfusionMatrix
from .task import Fidelity, TaskConfig, build_datasets, scale_spec

CHECKPOINT_NAME = "trial_state.pt"
Report = Callable[[dict[str, Any]], bool | None]


@dataclass
class TrialResult:
    """Everything a trial measured; `to_dict` gives JSON-ready values."""

    status: str = "ok"  # ok | diverged | oom | pruned
    error: str | None = None
    miou: float = math.nan
    pixel_accuracy: float = math.nan
    val_loss: float = math.nan  # mean cross-entropy over the labelled validation pixels
    per_class_iou: dict[str, float] = field(default_factory=dict)
    loss_final: float = math.nan
    loss_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since last point)
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per evaluation
    steps: int = 0
    params: int = 0
    flops: int = 0  # forward FLOPs of one evaluation-size image (multiply-add = 2)
    latency_ms: float = math.nan  # median batch-1 forward at evaluation size, on the trial's device
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    images_per_second: float = 0.0
    data_wait_fraction: float = 0.0  # share of training time spent waiting for batches
    peak_memory_mb: float = math.nan  # CUDA: peak allocated; CPU: peak resident set of the process
    input_size: tuple[int, int] = (0, 0)
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    spec_hash: str = ""
    fidelity: str = ""
    seed: int = 0
    device: str = "cpu"
    resumed_from_step: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_trial(
    spec: ArchSpec,
    task: TaskConfig,
    fidelity: str = "proxy",
    seed: int = 0,
    device: str | torch.device = "cpu",
    report: Report | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    on_trained: Callable[[torch.nn.Module], None] | None = None,
) -> TrialResult:
    """Train ``spec`` on ``task`` at ``fidelity`` and evaluate it (see the module docstring)."""
    device = torch.device(device)
    fid: Fidelity = task.fidelity(fidelity)
    torch.manual_seed(seed)
    train_data, val_data = build_datasets(task, fid)
    num_classes = train_data.num_classes
    model_spec = scale_spec(spec, fid)
    model = build_model(model_spec, num_classes).to(device)
    channels_last = task.channels_last if task.channels_last is not None else device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = make_optimizer(model, task, fid)
    lr_lambda = poly_schedule(fid.steps, task.optimizer.poly_power, task.optimizer.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(task.precision)
    use_autocast = autocast_dtype is not None and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_autocast and task.precision == "fp16")
    forward = torch.compile(model) if task.compile else model
    ema = (  # the weights that are evaluated and kept, when the fidelity asks for an average
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(fid.ema_decay), use_buffers=True)
        if fid.ema_decay
        else None
    )
    evaluated = ema.module if ema is not None else model

    result = TrialResult(
        spec_hash=spec.hash,
        fidelity=fidelity,
        seed=seed,
        device=str(device),
        num_classes=num_classes,
        class_names=list(train_data.class_names),
        params=count_params(model),
    )
    step, loss_sum, loss_count, data_wait = 0, 0.0, 0, 0.0
    state_file = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    if state_file and state_file.is_file():
        state = _load_state(state_file, device, spec.hash, fidelity, seed)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            if "ema" not in state:
                raise ResumeError(
                    f"{state_file}: checkpoint has no weight average, this fidelity keeps one; delete it to start over"
                )
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"].cpu())
        step = result.resumed_from_step = int(state["step"])
        result.loss_curve = [tuple(p) for p in state["loss_curve"]]
        result.history = list(state["history"])
        # The last evaluation's metrics: a checkpoint of the final step skips the loop, so they come from here.
        evaluation = state.get("evaluation", {})
        result.miou = float(evaluation.get("miou", math.nan))
        result.pixel_accuracy = float(evaluation.get("pixel_accuracy", math.nan))
        result.val_loss = float(evaluation.get("val_loss", math.nan))
        result.per_class_iou = {str(k): float(v) for k, v in evaluation.get("per_class_iou", {}).items()}
        pending_loss = state.get("loss_since_last_point", (0.0, 0))
        loss_sum, loss_count = float(pending_loss[0]), int(pending_loss[1])
        result.train_seconds, result.eval_seconds = float(state["train_seconds"]), float(state["eval_seconds"])
        data_wait = float(state["data_wait_seconds"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    loader = iter(train_loader(train_data, task, fid, seed, step * fid.batch_size, device))
    log_every = max(1, fid.steps // 50)
    model.train()
    try:
        while step < fid.steps:
            tick = time.perf_counter()
            images, masks = next(loader)
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            masks = masks.to(device, non_blocking=True)
            fetched = time.perf_counter()
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=use_autocast):
                loss = F.cross_entropy(forward(images), masks, ignore_index=task.ignore_index)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            loss_value = float(loss.detach())  # also synchronises, so the timing below is real
            result.train_seconds += time.perf_counter() - tick
            data_wait += fetched - tick
            if not math.isfinite(loss_value):
                result.status, result.error = "diverged", f"loss became {loss_value} at step {step}"
                break
            loss_sum, loss_count = loss_sum + loss_value, loss_count + 1
            if step % log_every == 0 or step == fid.steps:
                result.loss_curve.append((step, loss_sum / loss_count))
                loss_sum, loss_count = 0.0, 0
            if progress:
                progress(step, fid.steps, loss_value)
            if (fid.eval_every and step % fid.eval_every == 0) or step == fid.steps:
                tock = time.perf_counter()
                summary = evaluate(
                    evaluated, val_data, task, fid, device, memory_format, forward if ema is None else None
                )
                result.eval_seconds += time.perf_counter() - tock
                result.miou, result.pixel_accuracy = summary["miou"], summary["pixel_accuracy"]
                result.val_loss = summary["loss"]
                result.per_class_iou = summary["per_class_iou"]
                result.history.append({"step": step, "miou": summary["miou"], "loss": loss_value})
                if state_file:
                    losses = (loss_sum, loss_count)  # since the last loss-curve point
                    _save_state(state_file, model, optimizer, scheduler, scaler, step, result, data_wait, losses, ema)
                stop = report({**result.history[-1], "pixel_accuracy": summary["pixel_accuracy"]}) if report else None
                if step == fid.steps:
                    failpoint("trial.after_final_checkpoint")  # checkpointed and reported: a restart resumes here
                if stop and step < fid.steps:
                    result.status = "pruned"
                    break
    except torch.cuda.OutOfMemoryError as exc:
        result.status, result.error = "oom", f"out of memory at step {step + 1}: {str(exc).splitlines()[0]}"
    except RuntimeError as exc:
        if "out of memory" not in str(exc) and "can't allocate memory" not in str(exc):
            raise
        result.status, result.error = "oom", f"out of memory at step {step + 1}: {str(exc).splitlines()[0]}"
    finally:
        del loader  # stops the worker processes

    result.steps = step
    if on_trained is not None:
        on_trained(evaluated)  # e.g. to save the trained weights
    result.loss_final = result.loss_curve[-1][1] if result.loss_curve else math.nan
    done = result.train_seconds  # cumulative over resumptions, like ``step``
    result.images_per_second = step * fid.batch_size / done if done else 0.0
    result.data_wait_fraction = data_wait / done if done else 0.0
    if result.status == "oom":
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return result
    sample = val_data[0][0]
    height, width = sample.shape[:2]
    if not getattr(val_data, "prescaled", False):
        height, width = round(height * fid.resolution), round(width * fid.resolution)
    result.input_size = (height, width)
    result.flops = count_flops(model, (height, width))
    failpoint("trial.measure_cost")
    result.latency_ms = measure_latency(model, (height, width), device=device, warmup=2, repeats=5)
    result.peak_memory_mb = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return result


def evaluate(
    model: torch.nn.Module,
    val_data,
    task: TaskConfig,
    fid: Fidelity,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Confusion-matrix metrics of ``model`` over the whole validation set (see `metrics`), and
    ``loss``: the mean cross-entropy over its labelled pixels, which moves before the argmax does."""
    forward = forward or model
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(val_data.num_classes, task.ignore_index, device)
    loss_sum, labelled = torch.zeros((), dtype=torch.float64, device=device), 0
    with torch.no_grad():
        for images, masks in eval_loader(val_data, task, fid, device):
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            masks = masks.to(device, non_blocking=True)
            logits = forward(images).float()
            matrix.update(logits.argmax(1), masks)
            loss_sum += F.cross_entropy(logits, masks, ignore_index=task.ignore_index, reduction="sum").double()
            labelled += int((masks != task.ignore_index).sum())
    model.train(was_training)
    return {**matrix.summary(list(val_data.class_names)), "loss": float(loss_sum) / labelled if labelled else math.nan}


def make_optimizer(model: torch.nn.Module, task: TaskConfig, fid: Fidelity) -> torch.optim.Optimizer:
    cfg = task.optimizer
    lr = fid.lr or cfg.lr
    # No weight decay on BN parameters and biases (the usual DeepLab / timm practice).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)


def poly_schedule(steps: int, power: float, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - step / steps) ** power

    return factor


class ResumeError(UserError):
    """A checkpoint that cannot be resumed; the message names the file."""


def _load_state(path: Path, device: torch.device, spec_hash: str, fidelity: str, seed: int) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a damaged file: unpickling errors come in many types
        raise ResumeError(
            f"{path}: unreadable trial checkpoint ({type(exc).__name__}); delete it to start over"
        ) from None
    if not isinstance(state, dict):
        raise ResumeError(f"{path}: not a trial checkpoint ({type(state).__name__}); delete it to start over")
    saved = (state.get("spec_hash"), state.get("fidelity"), state.get("seed"))
    if saved != (spec_hash, fidelity, seed):
        raise ResumeError(
            f"{path}: checkpoint of spec {saved[0]} at {saved[1]} fidelity, seed {saved[2]}; "
            f"this trial is spec {spec_hash} at {fidelity}, seed {seed}"
        )
    return state


def _save_state(
    path: Path,
    model,
    optimizer,
    scheduler,
    scaler,
    step: int,
    result: TrialResult,
    data_wait: float,
    loss_since_last_point: tuple[float, int],
    ema: AveragedModel | None = None,
):
    state = {
        **({"ema": ema.state_dict()} if ema is not None else {}),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": torch.get_rng_state(),
        **({"cuda_rng": torch.cuda.get_rng_state()} if next(model.parameters()).is_cuda else {}),
        "step": step,
        "loss_curve": [list(p) for p in result.loss_curve],
        "history": result.history,
        # The evaluation just made, so that resuming from the final step still knows the result.
        "evaluation": {
            "miou": result.miou,
            "pixel_accuracy": result.pixel_accuracy,
            "val_loss": result.val_loss,
            "per_class_iou": dict(result.per_class_iou),
        },
        # Losses summed since the last loss-curve point, when evaluations fall between points.
        "loss_since_last_point": list(loss_since_last_point),
        "train_seconds": result.train_seconds,
        "eval_seconds": result.eval_seconds,
        "data_wait_seconds": data_wait,
        "spec_hash": result.spec_hash,
        "fidelity": result.fidelity,
        "seed": result.seed,
    }
    with atomic_path(path) as tmp:  # a crash leaves the previous checkpoint intact
        torch.save(state, tmp)
