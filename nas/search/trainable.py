"""The function Ray Tune runs on a worker: train one candidate with `run_trial` and report.

It knows nothing about the strategy or the search: it gets a spec, a task, a fidelity and a seed.
Intermediate evaluations are reported with the trial's checkpoint, so a scheduler (ASHA) can stop
a bad candidate and Tune can restart a candidate whose worker or node died from its last
evaluation instead of from scratch. Python errors, divergence and out-of-memory are reported as a
final ``failed`` result with the reason (retrying them would fail the same way); only a lost
worker or node makes Tune retry.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from nas.common.errors import first_line
from nas.model.checkpoint import save_model
from proxy_tasks.task import task_from_dict
from proxy_tasks.trial import CHECKPOINT_NAME, run_trial
from search_spaces import ArchSpec

from .status import FAILED, row_status

MODEL_NAME = "model.pt"


def node_name() -> str:
    try:
        import ray.util

        ip = ray.util.get_node_ip_address()
    except Exception:  # outside Ray
        ip = "local"
    return f"{socket.gethostname()} ({ip})"


def train_candidate(
    config: dict[str, Any], task: dict[str, Any], fidelity: str, seed: int, threads: int, gpus: float
) -> None:
    from ray import tune

    started = time.time()
    spec = ArchSpec.from_json(config["candidate"]["spec"])
    task_config = task_from_dict(task)
    device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
    torch.set_num_threads(max(1, threads))
    if device == "cpu" and task_config.workers is None:
        # Loader processes would compete with the trials packed onto this node's cores.
        task_config = replace(task_config, workers=0)
    save_weights = bool(config.get("save_weights"))
    # A promotion or a fidelity measurement trains several seeds and fidelities in one experiment, a
    # search's fidelity ladder several fidelities: each candidate may name its own.
    seed = int(config["candidate"].get("seed", seed))
    fidelity = config["candidate"].get("fidelity", fidelity)
    base = {"node": node_name(), "device": device, "started_at": started}

    with tempfile.TemporaryDirectory(prefix="nas-trial-") as work:
        work_dir = Path(work)
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:  # a retry after a lost worker: continue from the last evaluation
            with checkpoint.as_directory() as saved:
                state = Path(saved) / CHECKPOINT_NAME
                if state.is_file():
                    shutil.copy(state, work_dir / CHECKPOINT_NAME)

        def report(metrics: dict[str, Any]) -> bool:
            tune.report(
                {**base, **_scalars(metrics), "final": False},
                checkpoint=tune.Checkpoint.from_directory(work),
            )
            return False  # stopping is the scheduler's job: Tune stops the trial itself

        def keep_weights(model: torch.nn.Module) -> None:
            if save_weights:
                save_model(work_dir / "out" / MODEL_NAME, model)

        try:
            init, init_reports = initializer(config.get("init"))  # a file the worker cannot read fails the trial
            result = run_trial(
                spec,
                task_config,
                fidelity,
                seed=seed,
                device=device,
                report=report,
                checkpoint_dir=work,
                on_trained=keep_weights,
                init=init,
            )
        except Exception as exc:  # recorded as failed with its reason; the search goes on
            message = f"{type(exc).__name__}: {first_line(exc)}"
            tune.report(
                {
                    **base,
                    "final": True,
                    "status": FAILED,
                    "error": message,
                    "traceback": traceback.format_exc(limit=8),
                    "miou": float("nan"),
                    "step": 0,
                }
            )
            return
        metrics = result.to_dict()
        if init_reports:
            metrics["init"] = init_reports[-1].to_dict()
        status = row_status(result.status)
        final = {
            **base,
            **_scalars(metrics),
            "final": True,
            "status": status,
            "error": result.error or "",
            "step": result.steps,
            "result_json": json.dumps(metrics),
        }
        out = work_dir / "out"
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(out) if save_weights and out.is_dir() else None)


def initializer(setting: dict[str, Any] | None):
    """``run_trial``'s ``init`` for a trial config's ``init`` ({file, partial}; the driver has checked
    that the weights fit) and the list its reports go to; (None, []) without one."""
    if not setting:
        return None, []
    from nas.model.pretrained import load_into, read_weights

    weights, strict, reports = read_weights(setting["file"]), not setting.get("partial"), []

    def init(model: torch.nn.Module) -> None:
        reports.append(load_into(model, weights, setting["file"], strict))

    return init, reports


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
