"""Promotion: retrain a run's best candidates and its baselines at one fidelity over seeds, and compare.

`promote(run_dir, top=K, seeds=S)` takes the K best trained candidates by objective (or the Pareto front
of mIoU against cost with ``pareto=True``) and the run's baselines (config ``baselines:``, else
DeepLabv3-ResNet-50), trains every one of them at ``fidelity`` (default ``full``) with the seeds
``seed, seed + 1, ..., seed + S - 1`` as Ray Tune trials (the same trainable as the search, which also
keeps the trained weights), or with ``workers=N`` one after the other, each data-parallel on N Ray Train
workers (`nas.search.distributed`), and writes

* ``RUN_DIR/promoted/<hash>/seeds/<fidelity>-seed<seed>/``: ``spec.json``, ``model.pt`` (weights + spec,
  `nas.model.checkpoint`) and ``metrics.json`` (the promoted metrics beside the proxy ones) of each seed;
* ``RUN_DIR/promoted/<hash>/``: the same three files of its first seed, at the fidelity promoted at last;
* ``RUN_DIR/promoted_seeds.parquet``: one row per model and seed, candidates and baselines;
* ``RUN_DIR/promoted.parquet``: one row per candidate, proxy and promoted metrics (mean over seeds) side by side;
* ``RUN_DIR/promoted/summary.json``: Kendall tau and Spearman rho between proxy and promoted mIoU, and
  ``comparison``: each candidate against each baseline (`compare_seeds`, the rule in `VERDICT_RULE`).

A (model, fidelity, seed) already trained is not trained again, so an interrupted promotion resumes
where it stopped, and more seeds add to the ones there. Neither is one the search trained (a ladder's
top rung, or a search at the promotion fidelity): its row's metrics are taken (`write_search_trained`),
and each model still gets one seed trained here, for the weights the search does not keep.
``nas train --arch RUN_DIR/promoted/<hash>/spec.json`` retrains one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nas.common.atomic import atomic_path
from nas.common.config import read_mapping
from nas.common.jsonutil import json_ready
from proxy_tasks.task import load_task, scale_spec
from search_spaces import ArchSpec, SpecError

from .config import DEFAULT_BASELINES, MAX_SEED
from .correlation import MIN_PAIRS
from .distributed import Workers, check_batch_split, connect_for_workers, train_data_parallel
from .leaderboard import leaderboard, trials_frame
from .objective import finite_or_none, pareto_front
from .run_dir import (
    CONFIG_NAME,
    PROMOTED_METRICS,
    PROMOTED_SPEC,
    promoted_dir,
    promoted_seed_dir,
    ray_storage,
    saved_config,
    write_json,
    write_promoted,
)
from .runner import Job, SearchError, config_spec, connect_ray, run_jobs
from .status import FAILED, MISSING, OK, row_status, tune_status
from .store import METRICS
from .trainable import MODEL_NAME

SEARCH_TRIAL = "search_trial_id"  # in a seed's metrics.json: the search trial it was taken from
# What a seed taken from the search keeps of its row: the table's metrics of a training's outcome.
SEARCH_METRICS = (*METRICS, "val_loss")
ALPHA = 0.05
MIN_SEEDS = 2  # on each side: below this a t-test has no variance to work with
VERDICT_RULE = (
    f"a candidate beats a baseline beyond seed noise when a one-sided Welch t-test of its mIoU over seeds "
    f"against the baseline's gives p < {ALPHA}, with at least {MIN_SEEDS} seeds on each side"
)


# ---------------------------------------------------------------------------------- statistics
def compare_seeds(candidate: Sequence[float], baseline: Sequence[float], alpha: float = ALPHA) -> dict[str, Any]:
    """Candidate against baseline mIoU over seeds: mean and sample standard deviation of each, the
    p-value of a one-sided Welch t-test (candidate greater) and ``beats``: True when p < ``alpha``,
    False when not, None with fewer than `MIN_SEEDS` finite values on either side (too few seeds).
    Non-finite values (failed seeds) are left out."""
    from scipy.stats import ttest_ind

    ours, theirs = _finite(candidate), _finite(baseline)
    result = {
        "mean": _mean(ours),
        "std": _std(ours),
        "seeds": len(ours),
        "baseline_mean": _mean(theirs),
        "baseline_std": _std(theirs),
        "baseline_seeds": len(theirs),
        "p_value": None,
        "beats": None,
    }
    if len(ours) < MIN_SEEDS or len(theirs) < MIN_SEEDS:
        return result
    if result["std"] == 0 and result["baseline_std"] == 0:
        # No spread on either side: Welch's standard error is 0, the t statistic undefined; no evidence.
        result.update(beats=False)
        return result
    p_value = finite_or_none(ttest_ind(ours, theirs, equal_var=False, alternative="greater").pvalue)
    result.update(p_value=p_value, beats=p_value is not None and p_value < alpha)
    return result


def verdict(baseline: str, beats: bool | None) -> str:
    if beats is None:
        return f"too few seeds to compare with {baseline} (need {MIN_SEEDS} on each side)"
    return f"beats {baseline} beyond seed noise" if beats else f"does not beat {baseline} beyond seed noise"


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if finite_or_none(v) is not None]


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


# ---------------------------------------------------------------------------------- summary
@dataclass
class PromotionSummary:
    rows: list[dict[str, Any]] = field(default_factory=list)
    kendall_tau: float = math.nan
    spearman_rho: float = math.nan
    fidelity: str = "full"
    comparison: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)  # how the promoted mIoU (and miou_ms) were measured

    def to_text(self) -> str:
        label = f"{self.fidelity} mIoU"
        # The multi-scale column only where a fidelity measured it: single-scale mIoU stays the ranking figure.
        multi = any(r.get("promoted_miou_ms") is not None for r in self.rows)
        ms_label = f"{self.fidelity} mIoU ms"
        header = f"{'hash':<12} {'name':<24} {'search mIoU':>11} {label:>16} " + (f"{ms_label:>19} " if multi else "")
        lines = [f"{header}{'status':<8}"]
        for r in self.rows:
            augmented = f"{_fmt(r.get('promoted_miou_ms')):>19} " if multi else ""
            lines.append(
                f"{r['spec_hash'][:10]:<12} {(r['name'] or '-')[:24]:<24} {_fmt(r['proxy_miou']):>11} "
                f"{_fmt(r['promoted_miou']):>16} {augmented}{r['status']:<8}"
            )
        for key, name in (("miou", label), ("miou_ms", ms_label)):
            if self.evaluation.get(key) and (key == "miou" or multi):
                lines.append(f"{name}: {self.evaluation[key]}")
        lines.append(
            f"Kendall tau {_fmt(self.kendall_tau)}, Spearman rho {_fmt(self.spearman_rho)} "
            f"(the search's mIoU vs {self.fidelity} mIoU over {sum(r['status'] == OK for r in self.rows)} models)"
        )
        return "\n".join([*lines, *format_comparison(self.comparison)])


def format_comparison(comparison: dict[str, Any]) -> list[str]:
    """The lines `nas promote` and `nas show` print for a ``comparison`` (summary.json); [] without one."""
    if not comparison:
        return []
    fidelity, seeds = comparison.get("fidelity"), comparison.get("seeds") or []
    lines = [f"comparison at {fidelity} fidelity over seeds {', '.join(map(str, seeds))} (mIoU mean ± std):"]
    for b in comparison.get("baselines", []):
        lines.append(f"  baseline {b['name']} ({b['spec_hash'][:10]}): {_pm(b)}, {_cost(b)}")
    for c in comparison.get("candidates", []):
        lines.append(f"  candidate {c['name']} ({c['spec_hash'][:10]}): {_pm(c)}, {_cost(c)}")
        for v in c.get("versus", []):
            lines.append(
                f"    vs {v['baseline']}: FLOPs x{_fmt(v['flops_ratio'], 3)}, params x{_fmt(v['params_ratio'], 3)}, "
                f"p {_fmt(v['p_value'])}: {v['verdict']}"
            )
    lines.append(f"rule: {comparison.get('rule', VERDICT_RULE)}")
    return lines


def _pm(model: dict[str, Any]) -> str:
    return f"{_fmt(model.get('mean'))} ± {_fmt(model.get('std'))} over {model.get('seeds', 0)} seeds"


def _cost(model: dict[str, Any]) -> str:
    flops, params = model.get("flops"), model.get("params")
    gflops = "-" if flops is None else f"{flops / 1e9:.3f}"
    mparams = "-" if params is None else f"{params / 1e6:.2f}"
    return f"{gflops} GFLOPs, {mparams} M params"


# ---------------------------------------------------------------------------------- promotion
@dataclass(frozen=True)
class Model:
    """A network to retrain: a candidate from the run's table or one of its baselines."""

    spec_hash: str
    name: str
    spec_json: str
    role: str  # candidate | baseline
    row: Any = None  # the candidate's trials.parquet row (a baseline the search trained has one too)


def select(
    trials: pd.DataFrame, top: int, pareto: bool, cost: str = "flops", baselines: frozenset[str] = frozenset()
) -> pd.DataFrame:
    """The candidates to promote: the ``top`` best by objective, or the Pareto front (at most ``top``),
    of the search's own finds: a network among the ``baselines`` (spec hashes; evolution may have
    been seeded with one) is retrained as the reference, not as a candidate."""
    board = leaderboard(trials)
    board = board[(board["status"] == OK) & ~board["spec_hash"].isin(baselines)]
    board = board.drop_duplicates("spec_hash")  # a network at several rungs: its top rung's row
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
    seeds: int = 2,
    init: str | Path | None = None,
    init_partial: bool = False,
    workers: int = 1,
    cpus_per_worker: int | None = None,
    gpus_per_worker: int | None = None,
    log=print,
) -> PromotionSummary:
    """Everything is checked before the first write (arguments, the run's config and table, each
    chosen spec and baseline at ``fidelity``, the ``init`` weights against each, the Ray cluster); a
    refusal is one `SearchError`, `ConfigError` or `InitError`. ``init``: every training starts from
    these weights (see `nas.model.pretrained`; ``init_partial`` loads the tensors that fit). Each
    worker reads the file, so on a cluster it must be on storage they share.

    With ``workers`` > 1 each training is data-parallel on Ray Train (`nas.search.distributed`), one
    after the other, each worker with ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs (default:
    the run's ``resources.cpus_per_trial``, and one GPU where its trials had a share of one)."""
    run_dir = Path(run_dir).resolve()
    if top < 1:
        raise SearchError(f"--top must be >= 1, got {top}")
    if seeds < 1:
        raise SearchError(f"--seeds must be >= 1, got {seeds}")
    if not 0 <= seed <= MAX_SEED - (seeds - 1):
        raise SearchError(f"--seed must be in [0, {MAX_SEED - (seeds - 1)}] with --seeds {seeds}, got {seed}")
    if not (run_dir / CONFIG_NAME).is_file():
        raise SearchError(f"{run_dir}: no search run here (no {CONFIG_NAME})")
    config = saved_config(run_dir)
    task = load_task(config.task, config.data_root)
    fid = task.fidelity(fidelity)
    group = _worker_group(config, task, fidelity, workers, cpus_per_worker, gpus_per_worker)
    baselines = config.baselines or DEFAULT_BASELINES
    reference = frozenset(config_spec(ref).hash for ref in baselines)
    trials = trials_frame(run_dir)
    chosen = select(trials, top, pareto, config.objective.cost, reference)
    if chosen.empty:
        raise SearchError(f"{run_dir}: no successful trial to promote (besides the baselines)")
    models = _models(chosen, baselines)
    scaled = {}
    for model in models:
        try:
            scaled[model.spec_hash] = scale_spec(ArchSpec.from_json(model.spec_json), fid)
        except SpecError as exc:
            raise SearchError(f"{model.name}: its spec cannot be built at fidelity {fidelity!r}: {exc}") from None
    init_config = _check_init(init, init_partial, task, [(m, scaled[m.spec_hash]) for m in models], log)
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise SearchError(f"{run_dir}: not writable; the promoted models are written into it")
    seed_list = list(range(seed, seed + seeds))
    found = {} if init_config is not None else _search_trained(trials, fidelity, fid.augmented_evaluation)
    todo, reused = _plan(models, seed_list, run_dir, fidelity, found)
    if not todo:
        connected = False
    elif group is None:
        connected = connect_ray(config, address, log)
    else:
        connected = connect_for_workers(group, address, log, config)
    try:
        runs = len(models) * len(seed_list)
        taken = f", {len(reused)} of them by the search" if reused else ""
        log(
            f"promoting {len(chosen)} candidates and {sum(m.role == 'baseline' for m in models)} baselines at "
            f"{fidelity} fidelity, seeds {seed_list} ({runs - len(todo)} of {runs} trainings already done{taken})"
        )
        for model, s, row in reused:
            write_search_trained(run_dir, model, fidelity, s, row, scaled[model.spec_hash], log)
        if todo and group is None:
            _train(todo, config, task, fidelity, run_dir, log, init_config)
        elif todo:
            _train_data_parallel(todo, config, task, fidelity, run_dir, group, log, init_config)
    finally:
        if connected:  # the Ray this call started (or joined); one it found running stays up
            import ray

            ray.shutdown()
    for model in models:
        _publish(run_dir, model.spec_hash, fidelity, seed_list)
    return _summarise(chosen, models, run_dir, fidelity, seed_list)


def _check_init(init, partial: bool, task, models: list[tuple[Model, ArchSpec]], log) -> dict[str, Any] | None:
    """The trials' ``init`` setting, once the weights are known to fit every model (strict), or
    with what a partial load leaves out reported one line each."""
    if init is None:
        if partial:
            raise SearchError("--init-partial: give the weights with --init FILE")
        return None
    from nas.model.pretrained import check_fits, read_weights
    from proxy_tasks.task import class_count

    path = Path(init).resolve()
    weights, classes = read_weights(path), class_count(task)
    for model, spec in models:
        report = check_fits(spec, classes, weights, f"{init} for {model.name}", strict=not partial)
        for problem in report.problems:
            log(f"init: {model.name}: skipped {problem}")
    return {"file": str(path), "partial": partial}


def _worker_group(config, task, fidelity: str, workers: int, cpus: int | None, gpus: int | None) -> Workers | None:
    """The data-parallel workers of each training (checked against the fidelity's batch), or None to
    train each in one process, as a Tune trial."""
    if workers < 1:
        raise SearchError(f"--workers must be >= 1, got {workers}")
    if workers == 1:
        return None
    resources = config.resources
    cpus = cpus if cpus is not None else max(1, math.floor(resources.cpus_per_trial))
    # DDP over NCCL takes whole GPUs: a worker per GPU, where the search packed trials onto shares of one.
    gpus = gpus if gpus is not None else int(resources.gpus_per_trial > 0)
    group = Workers(workers, cpus, gpus)
    check_batch_split(fidelity, task, group)
    return group


def _models(chosen: pd.DataFrame, baselines: Sequence[str]) -> list[Model]:
    """The chosen candidates, then the baselines (a baseline among the candidates is trained once)."""
    models = [Model(r["spec_hash"], r["name"], r["spec_json"], "candidate", r) for _, r in chosen.iterrows()]
    roles = {m.spec_hash: m for m in models}
    for ref in baselines:
        spec = config_spec(ref)
        if spec.hash in roles:
            found = roles[spec.hash]  # compared with no one: it is the reference
            roles[spec.hash] = Model(spec.hash, found.name, found.spec_json, "baseline", found.row)
            models = [roles[spec.hash] if m.spec_hash == spec.hash else m for m in models]
        else:
            roles[spec.hash] = Model(spec.hash, spec.name or Path(ref).stem, spec.to_json(indent=None), "baseline")
            models.append(roles[spec.hash])
    return models


def _done(folder: Path) -> bool:
    """A (model, fidelity, seed) trained to the end: its metrics say ok, and its weights are there or
    it is a search trial's (`write_search_trained`: the search keeps no weights)."""
    metrics = folder / PROMOTED_METRICS
    if not metrics.is_file():
        return False
    try:
        record = read_mapping(metrics, SearchError)
    except SearchError:
        return False
    return record.get("status") == OK and ((folder / MODEL_NAME).is_file() or record.get(SEARCH_TRIAL) is not None)


def _search_trained(trials: pd.DataFrame, fidelity: str, augmented: bool) -> dict[tuple[str, int], dict[str, Any]]:
    """The search's own trainings at ``fidelity`` that a promotion at it need not repeat, by (spec hash,
    seed): each the first row that ended ok (a pruned one stopped short). The same trainable ran them
    on the same task, so they are the trainings a promotion would run (bit for bit on a CPU). None
    where the fidelity evaluates with test-time augmentation, which the table does not keep."""
    if augmented:
        return {}
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for row in trials[(trials["fidelity"] == fidelity) & (trials["status"] == OK)].to_dict("records"):
        if finite_or_none(row.get("seed")) is not None:
            found.setdefault((row["spec_hash"], int(row["seed"])), row)
    return found


def _plan(
    models: list[Model], seeds: list[int], run_dir: Path, fidelity: str, found: dict[tuple[str, int], dict[str, Any]]
) -> tuple[list[tuple[Model, int]], list[tuple[Model, int, dict[str, Any]]]]:
    """What to train and what to take from the search's trials (``found``), each a (model, seed) not
    done yet. A model keeps one seed with weights (to export and retrain): where every seed it lacks
    is a search trial and none it has carries weights, its first such seed is trained all the same."""
    todo, reused = [], []
    for model in models:
        folders = {s: promoted_seed_dir(run_dir, model.spec_hash, fidelity, s) for s in seeds}
        missing = [s for s in seeds if not _done(folders[s])]
        weighted = any((folders[s] / MODEL_NAME).is_file() for s in seeds if s not in missing)
        searched = [s for s in missing if (model.spec_hash, s) in found]
        if searched and not weighted and len(searched) == len(missing):
            searched = searched[1:]
        todo += [(model, s) for s in missing if s not in searched]
        reused += [(model, s, found[model.spec_hash, s]) for s in searched]
    todo.sort(key=lambda job: seeds.index(job[1]))  # seed-major: every model's first seed before any second one
    return todo, reused


def _train(
    todo: list[tuple[Model, int]], config, task, fidelity: str, run_dir: Path, log, init: dict[str, Any] | None = None
) -> None:
    """Train each (model, seed) of ``todo`` (`run_jobs`: one Tune trial each, in one experiment). Each
    training's files are written as its trial ends, so a driver killed mid-promotion keeps what
    finished and a rerun trains only the rest."""
    by_id = {f"{m.spec_hash[:12]}-seed{s}": m for m, s in todo}
    jobs = [Job(f"{m.spec_hash[:12]}-seed{s}", m.spec_json, fidelity, s) for m, s in todo]

    def write(job: Job, result: dict[str, Any], error: bool, saved: Path | None) -> None:
        write_training(run_dir, by_id[job.id], fidelity, job.seed, result, error, saved, log)

    run_jobs(jobs, config, task.to_dict(), run_dir, write, save_weights=True, settings={"init": init})


def _train_data_parallel(
    todo: list[tuple[Model, int]],
    config,
    task,
    fidelity: str,
    run_dir: Path,
    group: Workers,
    log,
    init: dict[str, Any] | None = None,
) -> None:
    """Train each (model, seed) of ``todo`` in turn, data-parallel on Ray Train with ``group``; each
    training's files are written as it ends, as `_train` does."""
    storage = ray_storage(config, run_dir)
    for model, seed in todo:
        log(f"training {model.role} {model.name} ({model.spec_hash[:10]}) seed {seed} on {group.describe()}")
        spec = ArchSpec.from_json(model.spec_json)
        with train_data_parallel(
            spec, task, fidelity, seed, group, storage, retries=config.retries, init=init
        ) as trained:
            if trained.error is not None:
                failed = {"final": True, "status": FAILED, "error": trained.error}
                write_training(run_dir, model, fidelity, seed, failed, False, None, log)
                continue
            result = trained.result
            reported = {
                "final": True,
                "status": row_status(result["status"]),
                "error": result["error"] or "",
                "result_json": json.dumps(result),
            }
            write_training(run_dir, model, fidelity, seed, reported, False, trained.folder, log)


def write_training(
    run_dir: Path,
    model: Model,
    fidelity: str,
    seed: int,
    result: dict[str, Any],
    error: bool,
    saved: Path | None,
    log,
) -> None:
    """Write one training's ``seeds/<fidelity>-seed<seed>/`` folder from its trial's last reported
    ``result`` (``error``: Tune gave up on the trial) and its last checkpoint folder ``saved``, which
    holds the weights of a successful training. metrics.json goes last: it says the folder is complete."""
    metrics = json.loads(result["result_json"]) if result.get("result_json") else {}
    status, reason = tune_status(result, error)
    folder = promoted_seed_dir(run_dir, model.spec_hash, fidelity, seed)
    folder.mkdir(parents=True, exist_ok=True)
    if status == OK and saved is not None and (saved / MODEL_NAME).is_file():
        with atomic_path(folder / MODEL_NAME) as tmp:
            shutil.copy(saved / MODEL_NAME, tmp)
    # spec.json is the network the weights belong to: the spec scaled to the promotion fidelity's
    # width (the same spec at `full`), so spec.json + model.pt always load together.
    trained = ArchSpec.from_json(model.spec_json)
    if (folder / MODEL_NAME).is_file():
        trained = ArchSpec.from_json(torch.load(folder / MODEL_NAME, weights_only=True)["spec"])
    with atomic_path(folder / PROMOTED_SPEC) as tmp:
        tmp.write_text(trained.to_json())
    record = {
        **_identity(model, fidelity, seed),
        "status": status,
        "error": reason,
        "full": metrics,  # the promoted metrics, at `fidelity` (the key predates other fidelities)
        "proxy": _proxy(model),
    }
    write_json(folder / PROMOTED_METRICS, record)
    log(
        f"promoted {model.role} {model.name} ({model.spec_hash[:10]}) seed {seed}: {status}, "
        f"{fidelity} mIoU {_fmt(metrics.get('miou'))}"
    )


def write_search_trained(
    run_dir: Path, model: Model, fidelity: str, seed: int, row: dict[str, Any], trained: ArchSpec, log
) -> None:
    """Write the ``seeds/<fidelity>-seed<seed>/`` folder of a training the search already ran (its
    trials.parquet ``row``): ``trained`` (the spec at the fidelity's width) and the row's metrics, with
    the trial it came from under `SEARCH_TRIAL`; no weights (the search keeps none)."""
    folder = promoted_seed_dir(run_dir, model.spec_hash, fidelity, seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_NAME).unlink(missing_ok=True)  # a failed training's leftovers are not this one's
    with atomic_path(folder / PROMOTED_SPEC) as tmp:
        tmp.write_text(trained.to_json())
    metrics = {k: json_ready(row[k]) for k in SEARCH_METRICS if k in row and finite_or_none(row[k]) is not None}
    record = {
        **_identity(model, fidelity, seed),
        "status": OK,
        "error": None,
        "full": metrics,
        "proxy": _proxy(model),
        SEARCH_TRIAL: int(row["trial_id"]),
    }
    write_json(folder / PROMOTED_METRICS, record)
    log(
        f"promoted {model.role} {model.name} ({model.spec_hash[:10]}) seed {seed}: {OK}, {fidelity} mIoU "
        f"{_fmt(metrics.get('miou'))} (trained by the search: trial {record[SEARCH_TRIAL]})"
    )


def _identity(model: Model, fidelity: str, seed: int) -> dict[str, Any]:
    """What names one training of a promotion: the model, its role, the fidelity and the seed."""
    trial_id = None if model.row is None else int(model.row["trial_id"])
    return {
        "spec_hash": model.spec_hash,
        "name": model.name,
        "role": model.role,
        "trial_id": trial_id,
        "fidelity": fidelity,
        "seed": seed,
    }


def _proxy(model: Model) -> dict[str, Any]:
    keys = ("miou", "objective", "flops", "params", "latency_ms", "fidelity")
    return {} if model.row is None else {k: json_ready(model.row[k]) for k in keys}


def _publish(run_dir: Path, spec_hash: str, fidelity: str, seeds: list[int]) -> None:
    """The files of the first seed trained with its weights as the model's own (``promoted/<hash>/``):
    what `nas export`, `nas train --arch` and `analysis.load_run` read."""
    for seed in seeds:
        source = promoted_seed_dir(run_dir, spec_hash, fidelity, seed)
        if _done(source) and (source / MODEL_NAME).is_file():
            target = promoted_dir(run_dir, spec_hash)
            for name in (MODEL_NAME, PROMOTED_SPEC, PROMOTED_METRICS):  # metrics last: it says what is there
                with atomic_path(target / name) as tmp:
                    shutil.copy(source / name, tmp)
            return


def _seed_rows(models: list[Model], run_dir: Path, fidelity: str, seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for model in models:
        for seed in seeds:
            folder = promoted_seed_dir(run_dir, model.spec_hash, fidelity, seed)
            path = folder / PROMOTED_METRICS
            record = read_mapping(path, SearchError) if path.is_file() else {"status": MISSING}
            metrics = record.get("full") or {}
            rows.append(
                {
                    **_identity(model, fidelity, seed),
                    "status": record.get("status", MISSING),
                    "error": record.get("error"),
                    "miou": finite_or_none(metrics.get("miou")),
                    # test-time augmented (scales, flips), when the fidelity asks for it; how: evaluation_ms
                    "miou_ms": finite_or_none(metrics.get("miou_ms")),
                    "evaluation": (metrics.get("evaluation") or {}).get("miou"),
                    "evaluation_ms": (metrics.get("evaluation") or {}).get("miou_ms"),
                    "pixel_accuracy": finite_or_none(metrics.get("pixel_accuracy")),
                    "val_loss": finite_or_none(metrics.get("val_loss")),
                    "flops": metrics.get("flops"),
                    "params": metrics.get("params"),
                    "train_seconds": finite_or_none(metrics.get("train_seconds")),
                    "path": str(folder.relative_to(run_dir)),
                }
            )
    return rows


def _comparison(models: list[Model], seed_rows: list[dict[str, Any]], fidelity: str, seeds: list[int]) -> dict:
    """Each candidate against each baseline over the seeds (`compare_seeds`), costs at ``fidelity``."""

    def scores(model: Model) -> list[float]:
        return [r["miou"] for r in seed_rows if r["spec_hash"] == model.spec_hash and r["status"] == OK]

    def described(model: Model) -> dict[str, Any]:
        ok = [r for r in seed_rows if r["spec_hash"] == model.spec_hash and r["status"] == OK]
        alone = compare_seeds(scores(model), [])
        return {
            "name": model.name,
            "spec_hash": model.spec_hash,
            "mean": alone["mean"],
            "std": alone["std"],
            "seeds": alone["seeds"],
            "flops": ok[0]["flops"] if ok else None,
            "params": ok[0]["params"] if ok else None,
        }

    baselines = [m for m in models if m.role == "baseline"]
    base_info = [described(b) for b in baselines]
    candidates = []
    for model in (m for m in models if m.role == "candidate"):
        entry = described(model)
        entry["versus"] = []
        for baseline, info in zip(baselines, base_info):
            stats = compare_seeds(scores(model), scores(baseline))
            entry["versus"].append(
                {
                    "baseline": baseline.name,
                    "baseline_hash": baseline.spec_hash,
                    "p_value": stats["p_value"],
                    "beats": stats["beats"],
                    "verdict": verdict(baseline.name, stats["beats"]),
                    "flops_ratio": _ratio(entry["flops"], info["flops"]),
                    "params_ratio": _ratio(entry["params"], info["params"]),
                }
            )
        candidates.append(entry)
    return {
        "fidelity": fidelity,
        "seeds": seeds,
        "rule": VERDICT_RULE,
        "baselines": base_info,
        "candidates": candidates,
    }


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or not theirs else ours / theirs


def _summarise(chosen: pd.DataFrame, models: list[Model], run_dir: Path, fidelity: str, seeds: list[int]):
    from scipy.stats import kendalltau, spearmanr

    seed_rows = _seed_rows(models, run_dir, fidelity, seeds)
    rows = []
    for _, r in chosen.iterrows():
        mine = [s for s in seed_rows if s["spec_hash"] == r["spec_hash"]]
        ok = [s for s in mine if s["status"] == OK]
        rows.append(
            {
                "spec_hash": r["spec_hash"],
                "name": r["name"],
                "trial_id": int(r["trial_id"]),
                "status": OK if ok else next((s["status"] for s in mine if s["status"] != MISSING), MISSING),
                "fidelity": fidelity,
                "proxy_miou": json_ready(r["miou"]),
                "proxy_objective": json_ready(r["objective"]),
                # The promoted-fidelity metrics (mean over the seeds that trained), under their original names.
                "promoted_miou": _mean(_finite([s["miou"] for s in ok])),
                "promoted_miou_ms": _mean(_finite([s["miou_ms"] for s in ok if s["miou_ms"] is not None])),
                "promoted_pixel_accuracy": _mean(_finite([s["pixel_accuracy"] for s in ok])),
                "flops": json_ready(r["flops"]),
                "params": json_ready(r["params"]),
                "promoted_train_seconds": _mean(_finite([s["train_seconds"] for s in ok])),
                "seeds": len(ok),
                "path": str(promoted_dir(run_dir, r["spec_hash"]).relative_to(run_dir)),
            }
        )
    summary = PromotionSummary(
        rows,
        fidelity=fidelity,
        comparison=_comparison(models, seed_rows, fidelity, seeds),
        evaluation=_evaluation_labels(seed_rows),
    )
    ok = [r for r in rows if r["status"] == OK and r["promoted_miou"] is not None]
    if len(ok) >= MIN_PAIRS:  # two points always agree or disagree
        proxy, full = [r["proxy_miou"] for r in ok], [r["promoted_miou"] for r in ok]
        summary.kendall_tau = float(kendalltau(proxy, full).statistic)
        summary.spearman_rho = float(spearmanr(proxy, full).statistic)
    written = {
        "fidelity": fidelity,
        "models": len(ok),
        "kendall_tau": summary.kendall_tau,
        "spearman_rho": summary.spearman_rho,
        "evaluation": summary.evaluation,
        "comparison": summary.comparison,
    }
    write_promoted(run_dir, rows, written, seed_rows)
    return summary


def _evaluation_labels(seed_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How the promoted mIoU and multi-scale mIoU were measured (the same for every training at one fidelity)."""
    for row in seed_rows:
        if row["evaluation"]:
            return {"miou": row["evaluation"], "miou_ms": row["evaluation_ms"]}
    return {}


def _fmt(value: Any, digits: int = 4) -> str:
    value = finite_or_none(value)
    return "-" if value is None else f"{value:.{digits}f}"
