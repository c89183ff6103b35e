"""Data-parallel training on Ray Train: one `run_trial` over N workers, for `nas train --workers N` and
`nas promote --workers N`.

`train_data_parallel` runs a Ray Train `TorchTrainer` whose workers each run `train_worker`: the same
`run_trial` as a one-process training, with this worker's `proxy_tasks.parallel.DataParallel` part
(DistributedDataParallel over gloo on CPUs, NCCL on GPUs; SyncBatchNorm on CUDA). The global batch and
the order of the samples are the one-process run's (see `proxy_tasks.parallel`).

The chief worker reports each evaluation with the trial checkpoint, the file a one-process run writes;
Ray Train stores it, and when a worker or node is lost it restarts the workers (up to ``retries``
times), which resume from it with exactly the batches the run would have seen. `state_mirror` copies each
stored checkpoint to a file of the caller's (``nas train --out``), from which a later run resumes with
any number of workers, or in one process.

Ray Train waits for the resources of its workers without limit: `check_workers_fit` first refuses a
group of workers that the alive nodes cannot hold.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from nas.common.atomic import atomic_path
from nas.common.errors import UserError, first_line, one_line
from nas.model.checkpoint import save_model
from proxy_tasks.parallel import micro_batch_size, process_group_parallel
from proxy_tasks.task import TaskConfig, task_from_dict
from proxy_tasks.trial import CHECKPOINT_NAME, run_trial
from search_spaces import ArchSpec

from .config import RAY_RESOURCE_UNIT, SearchConfig
from .runner import SearchError, cluster_may_grow, connect_ray
from .trainable import MODEL_NAME, initializer

Log = Callable[[str], None]


@dataclass(frozen=True)
class Workers:
    """A data-parallel group: ``count`` workers, each with ``cpus`` CPUs (its compute threads) and ``gpus`` GPUs."""

    count: int
    cpus: int = 1
    gpus: int = 0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise SearchError(f"--workers must be >= 1, got {self.count}")
        if self.cpus < 1:
            raise SearchError(f"--cpus-per-worker must be >= 1, got {self.cpus}")
        if self.gpus < 0:
            raise SearchError(f"--gpus-per-worker must be >= 0, got {self.gpus}")

    def describe(self) -> str:
        gpus = f" and {self.gpus} GPU{'s' if self.gpus != 1 else ''}" if self.gpus else ""
        return f"{self.count} workers of {self.cpus} CPU{'s' if self.cpus != 1 else ''}{gpus}"


@dataclass
class Trained:
    """What a data-parallel training gave: the chief's `TrialResult` as a dict, or the reason it failed
    (``error``, one line; ``cause``: the first failed worker's exception, where Ray Train kept it), and the
    folder of its last checkpoint (``model.pt`` after a finished training), valid inside
    `train_data_parallel`'s context."""

    result: dict[str, Any] | None
    folder: Path | None = None
    error: str | None = None
    cause: BaseException | None = None


# ---------------------------------------------------------------------------------- checks
def check_batch_split(fidelity_name: str, task: TaskConfig, workers: Workers) -> None:
    """Refuse a fidelity whose global batch does not split over ``workers`` (before anything starts)."""
    try:
        micro_batch_size(task.preset(fidelity_name), workers.count)
    except UserError as exc:
        raise SearchError(f"--workers {workers.count}: fidelity {fidelity_name!r}: {exc}") from None


def connect_for_workers(workers: Workers, address: str | None, log: Log, config: SearchConfig | None = None) -> bool:
    """Join the cluster at ``address`` (or start a private local Ray, sized by ``config``'s resources) and
    check that the workers fit; returns whether this call connected (`connect_ray`); on a refusal nothing
    of Ray is left running."""
    config = config or SearchConfig()
    # `connect_ray` checks one trial's resources, in a search's words; the workers are checked below, as a group.
    least = replace(config.resources, cpus_per_trial=RAY_RESOURCE_UNIT, gpus_per_trial=0.0)
    said: list[str] = []  # said once the workers fit: a refusal is the only line
    connected = connect_ray(replace(config, resources=least), address, said.append)
    joined = bool(address or os.environ.get("RAY_ADDRESS"))  # a private local Ray never grows
    try:
        check_workers_fit(workers, said.append, may_grow=joined and cluster_may_grow())
    except SearchError:
        if connected:
            import ray

            ray.shutdown()
        raise
    for line in said:
        log(line)
    return connected


def check_workers_fit(workers: Workers, log: Log, may_grow: bool) -> None:
    """Refuse a group of workers that the alive nodes of the connected Ray cannot hold all at once;
    where an autoscaler may add nodes (``may_grow``), say so and go on."""
    import ray

    nodes = [(n["Resources"].get("CPU", 0), n["Resources"].get("GPU", 0)) for n in ray.nodes() if n.get("Alive")]
    capacity = sum(min(_workers_on(cpus, gpus, workers), workers.count) for cpus, gpus in nodes)
    if capacity >= workers.count:
        return
    total_cpus, total_gpus = sum(c for c, _ in nodes), sum(g for _, g in nodes)
    problem = (
        f"{workers.describe()} do not fit on the Ray cluster: its {len(nodes)} node(s) "
        f"({total_cpus:g} CPUs, {total_gpus:g} GPUs in all) hold {capacity} of them"
    )
    if not may_grow:
        raise SearchError(problem)
    log(f"{problem} yet; the training waits for the autoscaler to add nodes")


def _workers_on(cpus: float, gpus: float, workers: Workers) -> int:
    by_cpu = math.floor(cpus / workers.cpus + 1e-9)
    by_gpu = math.floor(gpus / workers.gpus + 1e-9) if workers.gpus else by_cpu
    return min(by_cpu, by_gpu)


# ---------------------------------------------------------------------------------- the driver
@contextmanager
def train_data_parallel(
    spec: ArchSpec,
    task: TaskConfig,
    fidelity: str,
    seed: int,
    workers: Workers,
    storage: str,
    *,
    retries: int = 2,
    state_file: Path | None = None,
    log_file: Path | None = None,
    weights_metadata: dict[str, Any] | None = None,
    init: dict[str, Any] | None = None,
) -> Iterator[Trained]:
    """Train on Ray Train (connected already); the context is what it gave. ``storage`` is Ray Train's
    (a folder every node mounts, or a cloud URI); a ``state_file`` that exists is resumed from, and each
    checkpoint is copied to it; ``log_file`` gets a line per evaluation; ``weights_metadata`` goes into
    the saved weights beside the class names and mIoU; ``init``: the weights every worker starts from
    ({file, partial}, as a promotion's trials take them; the file must be on storage they share)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if task.dataset.root is not None:  # the workers run in folders of Ray's
        task = replace(task, dataset=replace(task.dataset, root=str(Path(task.dataset.root).resolve())))
    initial_state = ray.put(state_file.read_bytes()) if state_file is not None and state_file.is_file() else None
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "spec": spec.to_json(indent=None),
            "task": task.to_dict(),
            "fidelity": fidelity,
            "seed": seed,
            "cpus": workers.cpus,
            "gpus": workers.gpus,
            "initial_state": initial_state,
            "weights_metadata": weights_metadata or {},
            "init": init,
        },
        scaling_config=ScalingConfig(
            num_workers=workers.count,
            use_gpu=workers.gpus > 0,
            resources_per_worker={"CPU": workers.cpus, **({"GPU": workers.gpus} if workers.gpus else {})},
        ),
        run_config=RunConfig(
            name=session_name(),
            storage_path=storage,
            failure_config=FailureConfig(max_failures=retries),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[state_mirror(state_file, log_file)] if state_file or log_file else None,
        ),
    )
    try:
        outcome = trainer.fit()
    except Exception as exc:  # ray.train.TrainingFailedError: the workers failed more often than `retries`
        cause = _first_failure(exc)
        yield Trained(None, error=one_line(f"{type(cause).__name__}: {first_line(cause)}")[:500], cause=cause)
        return
    if outcome.checkpoint is None:
        yield Trained(outcome.return_value)
        return
    with outcome.checkpoint.as_directory() as folder:
        yield Trained(outcome.return_value, Path(folder))


def session_name() -> str:
    """A new Ray Train run's name, unguessable like the search's Tune experiments (`runner.tune_session_name`)."""
    return f"train-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


def _first_failure(exc: BaseException) -> BaseException:
    """The exception of the lowest-ranked failed worker (Ray Train's WorkerGroupError keeps them), else ``exc``."""
    failures = getattr(exc, "worker_failures", None) or {}
    return failures[min(failures)] if failures else exc


def state_mirror(state_file: Path | None, log_file: Path | None):
    """A Ray Train callback (run by its controller, on the driver's node) that copies the trial state of
    every stored checkpoint to ``state_file`` and writes each evaluation to ``log_file``."""
    from ray.train import UserCallback

    class StateMirror(UserCallback):
        def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
            chief = metrics[0] if metrics else {}
            if log_file is not None and "miou" in chief:
                now = time.time()
                stamp = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))},{int(now % 1 * 1000):03d}"
                with open(log_file, "a") as log:  # the format of `nas train`'s own lines
                    log.write(f"{stamp} step {chief['step']}: mIoU {chief['miou']:.4f}, loss {chief['loss']:.4f}\n")
            if state_file is None or checkpoint is None:
                return
            with checkpoint.as_directory() as folder:
                saved = Path(folder) / CHECKPOINT_NAME
                if saved.is_file():
                    with atomic_path(state_file) as tmp:
                        shutil.copy(saved, tmp)

    return StateMirror()


# ---------------------------------------------------------------------------------- the workers
def train_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train's function on every worker: its part of the training. The chief (rank 0) checkpoints,
    saves the weights with the last report and returns the `TrialResult` as a dict."""
    import ray.train
    import ray.train.torch

    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device() if config["gpus"] > 0 else torch.device("cpu")
    torch.set_num_threads(config["cpus"])
    task = task_from_dict(config["task"])
    if device.type == "cpu" and task.workers is None:
        task = replace(task, workers=0)  # loader processes would compete with the workers for the cores
    with tempfile.TemporaryDirectory(prefix="nas-ddp-") as work:
        work_dir = Path(work)
        _restore(work_dir, config["initial_state"])

        def report(metrics: dict[str, Any]) -> bool:
            checkpoint = ray.train.Checkpoint.from_directory(work) if rank == 0 else None
            ray.train.report({**_scalars(metrics), "final": False}, checkpoint=checkpoint)
            return False  # every worker must go on: only the last report ends the run

        trained: dict[str, torch.nn.Module] = {}
        init, _ = initializer(config.get("init"))
        result = run_trial(
            ArchSpec.from_json(config["spec"]),
            task,
            config["fidelity"],
            config["seed"],
            device,
            report=report,
            checkpoint_dir=work,
            on_trained=lambda model: trained.update(model=model),
            parallel=process_group_parallel(device),
            init=init,
        )
        if rank == 0:
            extra = {"class_names": result.class_names, "miou": result.miou, **config["weights_metadata"]}
            save_model(work_dir / MODEL_NAME, trained["model"], **extra)
        final = {"final": True, "status": result.status, "step": result.steps}
        ray.train.report(final, checkpoint=ray.train.Checkpoint.from_directory(work) if rank == 0 else None)
    return result.to_dict() if rank == 0 else None


def _restore(work_dir: Path, initial_state) -> None:
    """Put the trial state to resume from into ``work_dir``: after a restart, that of Ray Train's last
    checkpoint; else the caller's (``initial_state``, an object reference to the file's bytes), if any."""
    import ray
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = Path(folder) / CHECKPOINT_NAME
            if saved.is_file():
                shutil.copy(saved, work_dir / CHECKPOINT_NAME)
    elif initial_state is not None:
        (work_dir / CHECKPOINT_NAME).write_bytes(ray.get(initial_state))


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
