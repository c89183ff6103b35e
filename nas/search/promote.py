"""Promotion: retrain a run's best candidates at full fidelity on Ray and compare the rankings.

`promote(run_dir, top=K)` takes the K best trained candidates by objective (or the Pareto front of
mIoU against cost with ``pareto=True``), trains each at ``fidelity`` (default ``full``) as Ray Tune
trials (the same trainable as the search, which also keeps the trained weights), and writes

* ``RUN_DIR/promoted/<hash>/``: ``spec.json``, ``model.pt`` (weights + spec, `nas.model.checkpoint`) and
  ``metrics.json`` (the full-fidelity metrics beside the proxy ones);
* ``RUN_DIR/promoted.parquet``: one row per promoted model, proxy and full metrics side by side;
* ``RUN_DIR/promoted/summary.json``: Kendall tau and Spearman rho between proxy and full mIoU.

A model already promoted at that fidelity is not trained again, so an interrupted promotion
resumes where it stopped. ``nas train --arch RUN_DIR/promoted/<hash>/spec.json`` retrains one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nas.common.atomic import atomic_path
from nas.common.jsonutil import json_ready
from proxy_tasks.task import load_task, scale_spec
from search_spaces import ArchSpec, SpecError

from .config import MAX_SEED
from .leaderboard import leaderboard, trials_frame
from .objective import finite_or_none, pareto_front
from .run_dir import (
    PROMOTED_METRICS,
    PROMOTED_SPEC,
    promoted_dir,
    ray_storage,
    saved_config,
    write_json,
    write_promoted,
)
from .runner import SearchError, connect_ray, make_trainable
from .status import FAILED, OK, row_status
from .trainable import MODEL_NAME


@dataclass
class PromotionSummary:
    rows: list[dict[str, Any]] = field(default_factory=list)
    kendall_tau: float = math.nan
    spearman_rho: float = math.nan

    def to_text(self) -> str:
        lines = [f"{'hash':<12} {'name':<24} {'proxy mIoU':>10} {'full mIoU':>10} {'status':<8}"]
        for r in self.rows:
            lines.append(
                f"{r['spec_hash'][:10]:<12} {(r['name'] or '-')[:24]:<24} {_fmt(r['proxy_miou']):>10} "
                f"{_fmt(r['full_miou']):>10} {r['status']:<8}"
            )
        lines.append(
            f"Kendall tau {_fmt(self.kendall_tau)}, Spearman rho {_fmt(self.spearman_rho)} "
            f"(proxy vs full mIoU over {sum(r['status'] == OK for r in self.rows)} models)"
        )
        return "\n".join(lines)


def select(trials: pd.DataFrame, top: int, pareto: bool, cost: str = "flops") -> pd.DataFrame:
    """The candidates to promote: the ``top`` best by objective, or the Pareto front (at most ``top``)."""
    board = leaderboard(trials)
    board = board[board["status"] == "ok"]
    if pareto:
        points = list(zip(board["miou"], board[cost]))
        board = board.iloc[pareto_front(points)]
    return board.head(top)


def promote(
    run_dir: str | Path,
    top: int = 3,
    fidelity: str = "full",
    pareto: bool = False,
    address: str | None = None,
    seed: int = 0,
    log=print,
) -> PromotionSummary:
    """Everything is checked before the first write (arguments, the run's config and table, each
    chosen spec at ``fidelity``, the Ray cluster); a refusal is one `SearchError` or `ConfigError`."""
    run_dir = Path(run_dir).resolve()
    if top < 1:
        raise SearchError(f"--top must be >= 1, got {top}")
    if not 0 <= seed <= MAX_SEED:
        raise SearchError(f"--seed must be in [0, {MAX_SEED}], got {seed}")
    config = saved_config(run_dir)
    task = load_task(config.task, config.data_root)
    fid = task.fidelity(fidelity)
    chosen = select(trials_frame(run_dir), top, pareto, config.objective.cost)
    if chosen.empty:
        raise SearchError(f"{run_dir}: no successful trial to promote")
    for _, row in chosen.iterrows():
        try:
            scale_spec(ArchSpec.from_json(row["spec_json"]), fid)
        except SpecError as exc:
            raise SearchError(
                f"trial {row['trial_id']}: its spec cannot be built at fidelity {fidelity!r}: {exc}"
            ) from None
    out = promoted_dir(run_dir)
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise SearchError(f"{run_dir}: not writable; the promoted models are written into it")
    todo = [row for _, row in chosen.iterrows() if not _done(out / row["spec_hash"], fidelity)]
    if todo:
        connect_ray(config, address, log)
    log(f"promoting {len(chosen)} candidates at {fidelity} fidelity ({len(chosen) - len(todo)} already done)")
    if todo:
        _train(todo, config, task, fidelity, seed, run_dir, out, log)
    return _summarise(chosen, out, run_dir, fidelity)


def _done(folder: Path, fidelity: str) -> bool:
    metrics = folder / PROMOTED_METRICS
    if not (metrics.is_file() and (folder / MODEL_NAME).is_file()):
        return False
    try:
        return json.loads(metrics.read_text()).get("fidelity") == fidelity
    except (OSError, ValueError):
        return False


def _train(todo, config, task, fidelity: str, seed: int, run_dir: Path, out: Path, log) -> None:
    from ray import tune

    resources = config.resources
    trainable = make_trainable(config, task.to_dict(), fidelity, seed)
    candidates = [{"id": int(r["trial_id"]), "spec": r["spec_json"]} for r in todo]
    tuner = tune.Tuner(
        trainable,
        param_space={"candidate": tune.grid_search(candidates), "save_weights": True},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=resources.max_concurrent,
            trial_dirname_creator=lambda trial: f"promote-{trial.config['candidate']['id']}",
        ),
        run_config=tune.RunConfig(
            name=f"promote-{fidelity}",
            storage_path=ray_storage(config, run_dir),
            failure_config=tune.FailureConfig(max_failures=config.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )
    by_id = {int(r["trial_id"]): r for r in todo}
    for result in tuner.fit():
        candidate = result.config["candidate"]
        row = by_id[int(candidate["id"])]
        metrics = json.loads(result.metrics["result_json"]) if result.metrics.get("result_json") else {}
        status = row_status(result.metrics.get("status")) if result.error is None else FAILED
        error = result.metrics.get("error") or (str(result.error).splitlines()[0] if result.error else None)
        folder = out / row["spec_hash"]
        if status == OK and result.checkpoint is not None:
            folder.mkdir(parents=True, exist_ok=True)
            with result.checkpoint.as_directory() as saved, atomic_path(folder / MODEL_NAME) as tmp:
                shutil.copy(Path(saved) / MODEL_NAME, tmp)
        folder.mkdir(parents=True, exist_ok=True)
        # spec.json is the network the weights belong to: the searched spec, scaled to the promotion
        # fidelity's width (the same spec at `full`), so spec.json + model.pt always load together.
        trained = ArchSpec.from_json(row["spec_json"])
        if (folder / MODEL_NAME).is_file():
            trained = ArchSpec.from_json(torch.load(folder / MODEL_NAME, weights_only=True)["spec"])
        with atomic_path(folder / PROMOTED_SPEC) as tmp:
            tmp.write_text(trained.to_json())
        record = {
            "spec_hash": row["spec_hash"],
            "name": row["name"],
            "trial_id": int(row["trial_id"]),
            "fidelity": fidelity,
            "status": status,
            "error": error or None,
            "full": metrics,
            "proxy": {
                k: json_ready(row[k]) for k in ("miou", "objective", "flops", "params", "latency_ms", "fidelity")
            },
        }
        write_json(folder / PROMOTED_METRICS, record)
        log(f"promoted {row['name']} ({row['spec_hash'][:10]}): {status}, full mIoU {_fmt(metrics.get('miou'))}")


def _summarise(chosen: pd.DataFrame, out: Path, run_dir: Path, fidelity: str) -> PromotionSummary:
    from scipy.stats import kendalltau, spearmanr

    rows = []
    for _, r in chosen.iterrows():
        path = out / r["spec_hash"] / PROMOTED_METRICS
        record = json.loads(path.read_text()) if path.is_file() else {"status": "missing", "full": {}}
        full = record.get("full") or {}
        rows.append(
            {
                "spec_hash": r["spec_hash"],
                "name": r["name"],
                "trial_id": int(r["trial_id"]),
                "status": record.get("status", "missing"),
                "fidelity": fidelity,
                "proxy_miou": json_ready(r["miou"]),
                "proxy_objective": json_ready(r["objective"]),
                "full_miou": finite_or_none(full.get("miou")),
                "full_pixel_accuracy": finite_or_none(full.get("pixel_accuracy")),
                "flops": json_ready(r["flops"]),
                "params": json_ready(r["params"]),
                "full_train_seconds": finite_or_none(full.get("train_seconds")),
                "path": str((out / r["spec_hash"]).relative_to(run_dir)),
            }
        )
    summary = PromotionSummary(rows)
    ok = [r for r in rows if r["status"] == OK and r["full_miou"] is not None]
    if len(ok) >= 2:
        proxy, full = [r["proxy_miou"] for r in ok], [r["full_miou"] for r in ok]
        summary.kendall_tau = float(kendalltau(proxy, full).statistic)
        summary.spearman_rho = float(spearmanr(proxy, full).statistic)
    written = {
        "fidelity": fidelity,
        "models": len(ok),
        "kendall_tau": summary.kendall_tau,
        "spearman_rho": summary.spearman_rho,
    }
    write_promoted(run_dir, rows, written)
    return summary


def _fmt(value: Any) -> str:
    value = finite_or_none(value)
    return "-" if value is None else f"{value:.4f}"
