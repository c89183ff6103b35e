"""The trial: train one architecture on one task at one fidelity and measure it honestly.

`run_trial(spec, task, fidelity, seed, device)` is a pure function of its arguments (no global
state), so the same call runs in-process, inside a Ray worker, and for the full training of a
promoted model; with ``parallel`` it is one worker of a data-parallel training (`proxy_tasks.parallel`),
whose steps are the one-process run's. It reports each evaluation through ``report`` (return True from it to stop the
trial early, e.g. for a scheduler), checkpoints to ``checkpoint_dir`` (atomically) and resumes
from a checkpoint found there, continuing with exactly the batches the run would have seen.

`run_trial` reads as the table of contents of its phases, each a function below it: `_set_up`
(seed, data, model, optimizer, schedule, precision, EMA), `_resume` (from a checkpoint), `_train`
(the loop: `_train_step`, and `_evaluate_and_checkpoint` every ``eval_every`` steps and at the end),
`_summarise_training` (final loss, throughput) and `_measure_cost` (FLOPs, latency, peak memory).
"""

from __future__ import annotations

import contextlib
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
from nas.common.errors import UserError, first_line
from nas.common.faults import failpoint
from nas.model.builder import build_model
from nas.model.cost import count_flops, count_params, measure_latency
from search_spaces import ArchSpec

from .inference import augmented_probabilities, describe, window_logits
from .loader import eval_loader, train_loader
from .metrics import ConfusionMatrix
from .parallel import SINGLE_PROCESS, DataParallel, micro_batch_size, no_sync
from .task import Fidelity, TaskConfig, build_datasets, scale_spec
from .zero_cost import SCORES as ZERO_COST_SCORES
from .zero_cost import first_batch

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
    score: float = math.nan  # a training-free fidelity's zero-cost score (higher is better)
    # The same with test-time augmentation (the fidelity's eval_scales and eval_flip), measured once
    # after training; NaN when the fidelity asks for none. ``evaluation`` says how each was measured.
    miou_ms: float = math.nan
    pixel_accuracy_ms: float = math.nan
    per_class_iou_ms: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, str] = field(default_factory=dict)
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
    init: Callable[[torch.nn.Module], None] | None = None,
    parallel: DataParallel = SINGLE_PROCESS,
) -> TrialResult:
    """Train ``spec`` on ``task`` at ``fidelity`` and evaluate it (see the module docstring);
    ``init`` sets the freshly built network's initial weights (e.g. pretrained ones); with
    ``parallel``, as one worker of a data-parallel training (see `proxy_tasks.parallel`)."""
    run = _set_up(spec, task, task.fidelity(fidelity), seed, torch.device(device), init, parallel)
    result = TrialResult(
        spec_hash=spec.hash,
        fidelity=fidelity,
        seed=seed,
        device=str(run.device),
        num_classes=run.train_data.num_classes,
        class_names=list(run.train_data.class_names),
        params=count_params(run.model),
        evaluation=_evaluation_labels(run.fid),
    )
    if run.fid.zero_cost:
        return _score_untrained(run, result)
    state_file = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    counters = _Counters()
    if state_file and state_file.is_file():
        counters = _resume(run, state_file, result)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    _train(run, counters, result, state_file, report, progress)
    result.steps = counters.step
    if run.fid.augmented_evaluation and result.status == "ok":
        _evaluate_augmented(run, result)
    if on_trained is not None:
        on_trained(run.evaluated)  # e.g. to save the trained weights
    _summarise_training(run, counters, result)
    if result.status == "oom":
        if run.device.type == "cuda":
            torch.cuda.empty_cache()
        return result
    if parallel.chief:
        _measure_cost(run, result)
    return result


@dataclass
class _Run:
    """What a trial trains with, built once by `_set_up`: data, model, optimizer, schedule, precision, EMA."""

    task: TaskConfig
    fid: Fidelity
    seed: int
    device: torch.device
    train_data: Any
    val_data: Any
    model: torch.nn.Module
    parallel: DataParallel
    trained: torch.nn.Module  # the model as the training loop calls it (data-parallel: wrapped)
    forward: Callable[[torch.Tensor], torch.Tensor]  # ``trained``, compiled when the task asks for it
    memory_format: torch.memory_format
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    autocast_dtype: torch.dtype | None
    use_autocast: bool
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None  # the weights that are evaluated and kept, when the fidelity asks for an average

    @property
    def evaluated(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model


@dataclass
class _Counters:
    """Where training stands; a checkpoint saves it and resuming restores it."""

    step: int = 0
    loss_sum: float = 0.0  # losses since the last loss-curve point
    loss_count: int = 0
    data_wait: float = 0.0  # seconds spent waiting for batches


def _set_up(
    spec: ArchSpec,
    task: TaskConfig,
    fid: Fidelity,
    seed: int,
    device: torch.device,
    init: Callable[[torch.nn.Module], None] | None = None,
    parallel: DataParallel = SINGLE_PROCESS,
) -> _Run:
    """Seed, then build in a fixed order (the seed decides the data order and the initial weights)."""
    micro_batch_size(fid, parallel.world_size)  # refuse a batch that does not split before building anything
    torch.manual_seed(seed)
    train_data, val_data = build_datasets(task, fid)
    model = build_model(scale_spec(spec, fid), train_data.num_classes)
    if init is not None:
        init(model)
    model = parallel.prepare(model.to(device))
    channels_last = task.channels_last if task.channels_last is not None else device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = make_optimizer(model, task, fid)
    warmup = fid.warmup_steps if fid.warmup_steps is not None else task.optimizer.warmup_steps
    lr_lambda = poly_schedule(fid.steps, task.optimizer.poly_power, warmup)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(task.precision)
    use_autocast = autocast_dtype is not None and device.type == "cuda"
    trained = parallel.wrap(model)
    return _Run(
        task=task,
        fid=fid,
        seed=seed,
        device=device,
        train_data=train_data,
        val_data=val_data,
        model=model,
        parallel=parallel,
        trained=trained,
        forward=torch.compile(trained) if task.compile else trained,
        memory_format=memory_format,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda),
        autocast_dtype=autocast_dtype,
        use_autocast=use_autocast,
        scaler=torch.amp.GradScaler("cuda", enabled=use_autocast and task.precision == "fp16"),
        ema=AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(fid.ema_decay), use_buffers=True)
        if fid.ema_decay
        else None,
    )


def _resume(run: _Run, state_file: Path, result: TrialResult) -> _Counters:
    """Restore the weights, optimizer, schedule, random state and results so far from a checkpoint."""
    state = _load_state(state_file, run.device, result.spec_hash, result.fidelity, result.seed)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    if run.ema is not None:
        if "ema" not in state:
            raise ResumeError(
                f"{state_file}: checkpoint has no weight average, this fidelity keeps one; delete it to start over"
            )
        run.ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng"].cpu())
    if run.device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), run.device)
    result.resumed_from_step = int(state["step"])
    result.loss_curve = [tuple(p) for p in state["loss_curve"]]
    result.history = list(state["history"])
    # The last evaluation's metrics: a checkpoint of the final step skips the loop, so they come from here.
    evaluation = state.get("evaluation", {})
    result.miou = float(evaluation.get("miou", math.nan))
    result.pixel_accuracy = float(evaluation.get("pixel_accuracy", math.nan))
    result.val_loss = float(evaluation.get("val_loss", math.nan))
    result.per_class_iou = {str(k): float(v) for k, v in evaluation.get("per_class_iou", {}).items()}
    result.train_seconds, result.eval_seconds = float(state["train_seconds"]), float(state["eval_seconds"])
    pending_loss = state.get("loss_since_last_point", (0.0, 0))
    return _Counters(
        step=result.resumed_from_step,
        loss_sum=float(pending_loss[0]),
        loss_count=int(pending_loss[1]),
        data_wait=float(state["data_wait_seconds"]),
    )


def _train(
    run: _Run,
    counters: _Counters,
    result: TrialResult,
    state_file: Path | None,
    report: Report | None,
    progress: Callable[[int, int, float], None] | None,
) -> None:
    """The training loop, from ``counters.step`` on: step, log the loss, evaluate and checkpoint, stop early."""
    fid = run.fid
    shard = (run.parallel.rank, run.parallel.world_size)
    start = counters.step * fid.batch_size
    loader = iter(train_loader(run.train_data, run.task, fid, run.seed, start, run.device, shard))
    log_every = max(1, fid.steps // 50)
    run.model.train()
    try:
        while counters.step < fid.steps:
            loss_value = _train_step(run, counters, result, loader)
            if not math.isfinite(loss_value):
                result.status, result.error = "diverged", f"loss became {loss_value} at step {counters.step}"
                break
            counters.loss_sum, counters.loss_count = counters.loss_sum + loss_value, counters.loss_count + 1
            if counters.step % log_every == 0 or counters.step == fid.steps:
                result.loss_curve.append((counters.step, counters.loss_sum / counters.loss_count))
                counters.loss_sum, counters.loss_count = 0.0, 0
            if progress:
                progress(counters.step, fid.steps, loss_value)
            if (fid.eval_every and counters.step % fid.eval_every == 0) or counters.step == fid.steps:
                stop = _evaluate_and_checkpoint(run, counters, result, loss_value, state_file, report)
                if counters.step == fid.steps:
                    failpoint("trial.after_final_checkpoint")  # checkpointed and reported: a restart resumes here
                if stop and counters.step < fid.steps:
                    result.status = "pruned"
                    break
    except torch.cuda.OutOfMemoryError as exc:
        if run.parallel.world_size > 1:
            raise  # the other workers wait in a collective: only ending this one's process frees them
        result.status, result.error = "oom", f"out of memory at step {counters.step + 1}: {first_line(exc)}"
    except RuntimeError as exc:
        if "out of memory" not in str(exc) and "can't allocate memory" not in str(exc):
            raise
        if run.parallel.world_size > 1:
            raise
        result.status, result.error = "oom", f"out of memory at step {counters.step + 1}: {first_line(exc)}"
    finally:
        del loader  # stops the worker processes


def _train_step(run: _Run, counters: _Counters, result: TrialResult, loader) -> float:
    """One optimizer step on the next global batch (this worker's ``accumulate`` micro-batches of it);
    returns the batch's loss and adds the step's time to the counters.

    The loss is the batch's mean cross-entropy over its labelled pixels, however the batch is split:
    each micro-batch's sum, divided by the labelled pixels of the whole batch (over all workers), times
    the number of workers, whose gradients the data-parallel backward averages."""
    tick = time.perf_counter()
    batches = [_to_device(run, *next(loader)) for _ in range(run.fid.accumulate)]
    fetched = time.perf_counter()
    parallel = run.parallel
    labelled = sum((masks != run.task.ignore_index).sum() for _, masks in batches)
    labelled = parallel.all_reduce(labelled.to(torch.float64)).float()
    run.optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    for k, (images, masks) in enumerate(batches):
        synchronise = k == len(batches) - 1  # the gradients are averaged over the workers once, after the last
        loss_sum += _backward(run, images, masks, labelled, synchronise)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    counters.step += 1
    loss_value = float(parallel.all_reduce(loss_sum) / labelled)  # also synchronises, so the timing below is real
    result.train_seconds += time.perf_counter() - tick
    counters.data_wait += fetched - tick
    return loss_value


def _backward(
    run: _Run, images: torch.Tensor, masks: torch.Tensor, labelled: torch.Tensor, synchronise: bool
) -> torch.Tensor:
    """Forward and backward of one micro-batch (see `_train_step`); returns its summed loss."""
    with contextlib.nullcontext() if synchronise else no_sync(run.trained):
        with torch.autocast(run.device.type, dtype=run.autocast_dtype or torch.float32, enabled=run.use_autocast):
            loss = F.cross_entropy(run.forward(images), masks, ignore_index=run.task.ignore_index, reduction="sum")
        run.scaler.scale(loss * run.parallel.world_size / labelled).backward()
    return loss.detach().double()


def _to_device(run: _Run, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(run.device, non_blocking=True, memory_format=run.memory_format)
    return images, masks.to(run.device, non_blocking=True)


def _evaluate_and_checkpoint(
    run: _Run,
    counters: _Counters,
    result: TrialResult,
    loss_value: float,
    state_file: Path | None,
    report: Report | None,
) -> bool | None:
    """Evaluate, record the metrics, checkpoint, then report; returns what ``report`` said (True: stop).
    Of data-parallel workers, the chief evaluates and checkpoints; the others only report, and their
    reports wait for the chief's (Ray Train's report is a barrier)."""
    if not run.parallel.chief:
        return report({"step": counters.step, "loss": loss_value}) if report else None
    tock = time.perf_counter()
    # The compiled model, when it is the one evaluated; not a data-parallel wrapper, whose forward
    # synchronises buffers with the other workers, which do not evaluate.
    forward = run.forward if run.ema is None and run.trained is run.model else None
    summary = evaluate(run.evaluated, run.val_data, run.task, run.fid, run.device, run.memory_format, forward)
    result.eval_seconds += time.perf_counter() - tock
    result.miou, result.pixel_accuracy = summary["miou"], summary["pixel_accuracy"]
    result.val_loss = summary["loss"]
    result.per_class_iou = summary["per_class_iou"]
    result.history.append({"step": counters.step, "miou": summary["miou"], "loss": loss_value})
    if state_file:
        _save_state(state_file, run, counters, result)
    return report({**result.history[-1], "pixel_accuracy": summary["pixel_accuracy"]}) if report else None


def _evaluate_augmented(run: _Run, result: TrialResult) -> None:
    """The test-time-augmented evaluation of the trained network, once: it costs a pass per scale and flip."""
    tock = time.perf_counter()
    summary = evaluate(run.evaluated, run.val_data, run.task, run.fid, run.device, run.memory_format, augmented=True)
    result.eval_seconds += time.perf_counter() - tock
    result.miou_ms, result.pixel_accuracy_ms = summary["miou"], summary["pixel_accuracy"]
    result.per_class_iou_ms = summary["per_class_iou"]


def _evaluation_labels(fid: Fidelity) -> dict[str, str]:
    """How ``miou`` (and ``miou_ms``, when the fidelity asks for it) are measured, in words."""
    labels = {"miou": describe(fid.eval_window, fid.eval_overlap)}
    if fid.augmented_evaluation:
        labels["miou_ms"] = describe(fid.eval_window, fid.eval_overlap, fid.eval_scales, fid.eval_flip)
    return labels


def _summarise_training(run: _Run, counters: _Counters, result: TrialResult) -> None:
    """The final loss and the throughput, over every resumption like ``step``."""
    result.loss_final = result.loss_curve[-1][1] if result.loss_curve else math.nan
    done = result.train_seconds
    result.images_per_second = counters.step * run.fid.batch_size / done if done else 0.0
    result.data_wait_fraction = counters.data_wait / done if done else 0.0


def _score_untrained(run: _Run, result: TrialResult) -> TrialResult:
    """A training-free fidelity: the zero-cost score of the network as built, on the first mini-batch
    the trial would have trained on, then the cost as for a trained network."""
    start = time.perf_counter()
    images, masks = first_batch(run.train_data, run.task, run.fid, run.seed)
    scorer = ZERO_COST_SCORES[run.fid.zero_cost]
    result.score = scorer(run.model, images.to(run.device), masks.to(run.device), run.task.ignore_index)
    result.train_seconds = time.perf_counter() - start
    _measure_cost(run, result)
    return result


def _measure_cost(run: _Run, result: TrialResult) -> None:
    """FLOPs and latency of the trained model at evaluation size, and the trial's peak memory."""
    sample = run.val_data[0][0]
    height, width = sample.shape[:2]
    if not getattr(run.val_data, "prescaled", False):
        height, width = round(height * run.fid.resolution), round(width * run.fid.resolution)
    result.input_size = (height, width)
    result.flops = count_flops(run.model, (height, width))
    failpoint("trial.measure_cost")
    result.latency_ms = measure_latency(run.model, (height, width), device=run.device, warmup=2, repeats=5)
    result.peak_memory_mb = (
        torch.cuda.max_memory_allocated(run.device) / 2**20
        if run.device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )


def evaluate(
    model: torch.nn.Module,
    val_data,
    task: TaskConfig,
    fid: Fidelity,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    augmented: bool = False,
) -> dict[str, Any]:
    """Confusion-matrix metrics of ``model`` over the whole validation set (see `metrics`),
    ``loss``: the mean cross-entropy over its labelled pixels, which moves before the argmax does,
    and ``evaluation``: how it was measured.

    Each image is evaluated whole, or in overlapping windows of ``fid.eval_window``; ``augmented``
    averages the softmax over ``fid.eval_scales`` and left-right flips (``fid.eval_flip``) instead,
    its loss the negative log of the averaged probabilities (see `proxy_tasks.inference`)."""
    forward = forward or model
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(val_data.num_classes, task.ignore_index, device)
    loss_sum, labelled = torch.zeros((), dtype=torch.float64, device=device), 0
    with torch.no_grad():
        for images, masks in eval_loader(val_data, task, fid, device):
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            masks = masks.to(device, non_blocking=True)
            if augmented:
                probabilities = augmented_probabilities(
                    forward, images, fid.eval_scales, fid.eval_flip, fid.eval_window, fid.eval_overlap
                )
                # Log-probabilities: cross-entropy takes them as logits whose softmax they already are.
                scores = probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()
            else:
                scores = window_logits(forward, images, fid.eval_window, fid.eval_overlap)
            matrix.update(scores.argmax(1), masks)
            loss_sum += F.cross_entropy(scores, masks, ignore_index=task.ignore_index, reduction="sum").double()
            labelled += int((masks != task.ignore_index).sum())
    model.train(was_training)
    scales, flip = (fid.eval_scales, fid.eval_flip) if augmented else ((), False)
    return {
        **matrix.summary(list(val_data.class_names)),
        "loss": float(loss_sum) / labelled if labelled else math.nan,
        "evaluation": describe(fid.eval_window, fid.eval_overlap, scales, flip),
    }


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


def check_resumable(path: Path, spec_hash: str, fidelity: str, seed: int) -> None:
    """Refuse (`ResumeError`) a checkpoint that `run_trial` of this spec, fidelity and seed could not resume
    from, before it is handed to workers elsewhere."""
    _load_state(path, torch.device("cpu"), spec_hash, fidelity, seed)


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


def _save_state(path: Path, run: _Run, counters: _Counters, result: TrialResult) -> None:
    state = {
        **({"ema": run.ema.state_dict()} if run.ema is not None else {}),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": torch.get_rng_state(),
        **({"cuda_rng": torch.cuda.get_rng_state()} if run.device.type == "cuda" else {}),
        "step": counters.step,
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
        "loss_since_last_point": [counters.loss_sum, counters.loss_count],
        "train_seconds": result.train_seconds,
        "eval_seconds": result.eval_seconds,
        "data_wait_seconds": counters.data_wait,
        "spec_hash": result.spec_hash,
        "fidelity": result.fidelity,
        "seed": result.seed,
    }
    with atomic_path(path) as tmp:  # a crash leaves the previous checkpoint intact
        torch.save(state, tmp)
