"""Running a search on Ray Tune: the embedded local Ray, or a cluster with ``address``.

`run_search` builds the `Search` (strategy, results table, state) for a run directory and hands
its candidates to a Ray Tune `Tuner` through `ControllerSearcher`, a thin `Searcher` adapter
(suggest = ask, on_trial_complete = record and tell). Tune schedules the trials on the workers
(resources per trial, fractional GPUs, a concurrency cap, optional ASHA) and restarts a trial whose
worker or node died (`FailureConfig`), from its last reported checkpoint.

Resuming after the driver is killed does not rely on Tune's periodic experiment snapshot, which
can lag the last finished trial: the run directory's table and state are written as each trial
ends, and a resumed search starts a new Tune experiment fed by the restored `Search` (finished
trials are not rerun; interrupted ones run again once). Nothing Tune wrote under ``RUN_DIR/ray``
is read back (Tune pickles its experiment state): each session is a new experiment in a folder
of its own, named by `tune_session_name`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nas.common.config import ConfigError, to_dict
from nas.common.errors import UserError, one_line
from nas.common.jsonutil import write_json
from proxy_tasks.task import Fidelity, TaskConfig, load_task, scale_spec
from search_spaces import ArchSpec, SpecError, resolve_spec

from .base import Candidate, Controller
from .config import ResourcesConfig, SearchConfig
from .evolution import RegularizedEvolution
from .ladder import format_ladder, ladder_agreement
from .nsga2 import NSGA2Search
from .random_search import RandomSearch
from .run_dir import (
    JOURNAL_NAME,
    LADDER_NAME,
    STATE_NAME,
    holds_search,
    optuna_storage,
    ray_storage,
    saved_config,
    write_config,
)
from .search import Outcome, SavedState, Search, check_run_dir
from .status import tune_status
from .tpe import TPESearch
from .trainable import train_candidate

Log = Callable[[str], None]


class SearchError(UserError):
    """A search that cannot start or go on (bad run directory, unreachable cluster); one line."""


# ---------------------------------------------------------------------------------- building
def config_spec(ref: str) -> ArchSpec:
    """The spec a config names (a published name or a spec file); its errors are config errors."""
    try:
        return resolve_spec(ref)
    except SpecError as exc:
        raise ConfigError(str(exc)) from None


def make_controller(config: SearchConfig, run_dir: Path, in_memory: bool = False) -> Controller:
    """The config's strategy; an Optuna one opens (creates) its study unless ``in_memory``, which
    writes nothing anywhere (for checking a saved controller state)."""
    return CONTROLLER_MAKERS[config.strategy.name](config, run_dir, in_memory)


def _random(config: SearchConfig, run_dir: Path, in_memory: bool) -> Controller:
    return RandomSearch(config.space.build(), config.seed, config.objective.directions)


def _evolution(config: SearchConfig, run_dir: Path, in_memory: bool) -> Controller:
    strategy = config.strategy
    seeds = tuple(config_spec(r) for r in (*config.baselines, *strategy.seeds))
    try:
        return RegularizedEvolution(
            config.space.build(),
            config.seed,
            config.objective.directions,
            strategy.population,
            strategy.sample_size,
            seeds,
            strategy.init,
        )
    except (SpecError, ValueError) as exc:
        raise ConfigError(f"strategy: {exc}") from None


def _optuna(config: SearchConfig, run_dir: Path, in_memory: bool) -> Controller:
    storage = None if in_memory else optuna_storage(config, run_dir)
    kwargs = {"storage": storage, "study_name": config.name}
    if config.strategy.name == "nsga2":
        kwargs["population"] = config.strategy.population
    from sqlalchemy.exc import SQLAlchemyError

    cls = TPESearch if config.strategy.name == "tpe" else NSGA2Search
    try:
        return cls(config.space.build(), config.seed, config.objective.directions, **kwargs)
    except (SQLAlchemyError, OSError) as exc:  # a database that refuses the connection, a full disk
        reason = one_line(str(exc))[:300]
        raise SearchError(f"cannot open the Optuna storage {storage}: {reason}") from None


# How each strategy of `STRATEGY_NAMES` is made from a config (a test checks that they match).
CONTROLLER_MAKERS: dict[str, Callable[[SearchConfig, Path, bool], Controller]] = {
    "random": _random,
    "evolution": _evolution,
    "tpe": _optuna,
    "nsga2": _optuna,
}
OPTUNA_STRATEGIES = tuple(name for name, make in CONTROLLER_MAKERS.items() if make is _optuna)


def open_search(config: SearchConfig, run_dir: Path, on_change: Callable[[Search], None] | None = None) -> Search:
    """The `Search` of ``run_dir`` (restored from its state when there is one)."""
    baselines = tuple(config_spec(b) for b in config.baselines)
    return Search(
        run_dir,
        make_controller(config, run_dir),
        config.objective,
        budget=config.budget.trials,
        baselines=baselines,
        fidelity=config.fidelity,
        seed=config.seed,
        max_duplicates=config.budget.max_duplicates,
        time_limit_s=config.budget.time_limit_s,
        on_change=on_change,
        ladder=config.ladder,
    )


def prepare_run_dir(config: SearchConfig | None, run_dir: Path, resume: bool) -> SearchConfig:
    """Check the run directory and return the config to run; writes ``config.yaml`` for a new run."""
    config = run_config(config, run_dir, resume)
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(config, run_dir)
    return config


def run_config(config: SearchConfig | None, run_dir: Path, resume: bool) -> SearchConfig:
    """The config to run in ``run_dir``: the saved one on resume (only the budget may differ from
    ``config``); for a new run ``config``, once the directory can hold it. Writes nothing."""
    if resume:
        saved = saved_config(run_dir)
        if config is not None:
            difference = _first_difference(to_dict(saved), to_dict(config), ignore={"budget"})
            if difference:
                raise SearchError(
                    f"{run_dir}: the config differs from the run's own at {difference}; "
                    "only the budget may change on resume"
                )
            saved = replace(saved, budget=config.budget)
        _check_writable(run_dir)
        return saved
    if config is None:
        raise SearchError("a new search needs --config")
    if run_dir.exists() and not run_dir.is_dir():
        raise SearchError(f"{run_dir}: not a directory; choose another --out")
    if holds_search(run_dir):
        raise SearchError(f"{run_dir} already holds a search; use --resume to continue it or choose another --out")
    _check_writable(run_dir)
    return config


def _check_writable(run_dir: Path) -> None:
    """The directory, or the folder it will be created in, takes new files."""
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists())
    if not existing.is_dir():
        raise SearchError(f"{run_dir}: cannot be created ({existing} is not a directory); choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        problem = "not writable" if existing == run_dir else f"cannot be created ({existing} is not writable)"
        raise SearchError(f"{run_dir}: {problem}; the search writes its results there")


def check_config(config: SearchConfig) -> tuple[TaskConfig, Fidelity]:
    """Everything in ``config`` that can be checked without writing or connecting: the task and
    fidelity, the scheduler against the fidelity, the Optuna storage URL, the baselines and seeds,
    the search space. Returns the task and the fidelity (a task sized from its data has read it to
    size the fidelity: once is enough); `ConfigError` naming the key otherwise."""
    task = load_task(config.task, config.data_root)
    fidelity = task.fidelity(config.fidelity)
    rungs = {config.fidelity: fidelity}
    for i, rung in enumerate(config.ladder):
        try:
            rungs[rung.fidelity] = task.fidelity(rung.fidelity)
        except ConfigError as exc:
            raise ConfigError(f"ladder[{i}]: {exc}") from None
    _check_scheduler(config, fidelity)
    if config.storage.optuna:  # also where this strategy does not use it: a bad URL is a bad config
        check_optuna_url(config.storage.optuna)
    config.space.build()
    specs = {"baselines": config.baselines, "strategy.seeds": config.strategy.seeds}
    for key, refs in specs.items():
        for i, ref in enumerate(refs):
            for name, rung in rungs.items():
                try:
                    scale_spec(config_spec(ref), rung)
                except ConfigError as exc:
                    raise ConfigError(f"{key}[{i}]: {exc}") from None
                except SpecError as exc:  # too narrow once scaled to the fidelity's width
                    raise ConfigError(f"{key}[{i}]: {ref} at fidelity {name!r}: {exc}") from None
    if config.strategy.name == "evolution":
        make_controller(config, Path("."))  # its seeds must lie in the space; nothing is opened
    return task, fidelity


def _check_scheduler(config: SearchConfig, fidelity: Fidelity) -> None:
    scheduler = config.scheduler
    if not scheduler.asha:
        return
    where = f"fidelity {config.fidelity!r} of task {config.task!r}"
    if fidelity.eval_every == 0:
        raise ConfigError(f"scheduler.asha: needs intermediate evaluations, but {where} has eval_every 0")
    if scheduler.grace_steps > fidelity.steps:
        raise ConfigError(
            f"scheduler.grace_steps: {scheduler.grace_steps} exceeds the {fidelity.steps} steps of {where}"
        )


def check_optuna_url(url: str) -> None:
    """An Optuna storage: an RDB URL whose database SQLAlchemy knows and whose driver is installed
    (checked without connecting), or a journal file path."""
    if "://" not in url:  # Optuna's journal file, the form `open_storage` gives a path
        path = Path(url)
        if path.exists() and not path.is_file():
            raise ConfigError(f"storage.optuna: {url} is not a file (a journal path or a database URL)")
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"storage.optuna: unknown database {url.split('://')[0]!r} (sqlite:///FILE, postgresql://..., "
            "mysql://...; or a journal file path)"
        ) from None
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"storage.optuna: not a database URL ({one_line(str(exc))[:200]})") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ConfigError(f"storage.optuna: the {parsed.drivername} driver is not installed ({exc})") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigError("storage.optuna: an in-memory SQLite study does not outlive the search; name a file")
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise ConfigError(f"storage.optuna: the folder of the SQLite file, {folder}, does not exist")


def check_resumable(config: SearchConfig, run_dir: Path) -> SavedState | None:
    """Refuse a run directory that cannot be resumed as it is (state and table disagree, the
    Optuna journal is gone); writes nothing. Returns the saved state, if any."""
    saved = check_run_dir(run_dir, make_controller(config, run_dir, in_memory=True))
    if saved is None or config.strategy.name not in OPTUNA_STRATEGIES or config.storage.optuna:
        return saved
    journal = run_dir / JOURNAL_NAME
    # The study is created before the first state is saved: a state without its study cannot go on.
    if not journal.is_file() or config.name not in _journal_studies(journal):
        problem = "missing" if not journal.is_file() else f"holds no study {config.name!r}"
        raise SearchError(
            f"{journal}: {problem}, but {STATE_NAME} records a {config.strategy.name} search; restore "
            f"{JOURNAL_NAME} from a backup, or start a new run with another --out"
        )
    return saved


def _journal_studies(journal: Path) -> list[str]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:  # the backend opens the file for appending, which leaves an existing one as it is
        return optuna.study.get_all_study_names(JournalStorage(JournalFileBackend(str(journal))))
    except (OSError, ValueError) as exc:
        raise SearchError(f"{journal}: unreadable Optuna journal ({exc})") from None


def _first_difference(a: Any, b: Any, ignore: set[str], where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in ignore and not where:
                continue
            found = _first_difference(a.get(key), b.get(key), ignore, f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    return None if a == b else where


# ---------------------------------------------------------------------------------- Ray Tune
def _searcher_class():
    """`ControllerSearcher`, defined on first use so that importing this module does not import Ray."""
    from ray.tune.search import Searcher

    class ControllerSearcher(Searcher):
        """Tune's ask/tell hooks onto a `Search`: suggest = ask, on_trial_complete = record + tell."""

        def __init__(self, search: Search):
            super().__init__()
            self.search = search
            self.trials: dict[str, Candidate] = {}
            self.retries: dict[str, int] = {}  # Tune trial id -> restarts after a lost worker or node

        def suggest(self, trial_id: str):
            candidate = self.search.next_candidate()
            if candidate is None:
                # A running candidate may still go up the ladder: ask again when a trial ends.
                return None if self.search.may_go_up else Searcher.FINISHED
            self.trials[trial_id] = candidate
            spec, fidelity = candidate.spec.to_json(indent=None), self.search.rungs[candidate.rung]
            return {"candidate": {"id": candidate.id, "spec": spec, "fidelity": fidelity}}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            candidate = self.trials.pop(trial_id, None)
            if candidate is not None:
                outcome = outcome_from_result(result, error, trial_id)
                self.search.record(candidate, outcome, retries=self.retries.pop(trial_id, 0))

        def save(self, checkpoint_path: str) -> None:
            self.search.save_state()  # the run directory holds the state; nothing else to keep

        def restore(self, checkpoint_path: str) -> None:
            pass

    return ControllerSearcher


def _retry_counter(searcher):
    """A Tune callback counting each trial's restarts into ``searcher.retries`` (the `attempts` column)."""
    from ray.tune import Callback

    class RetryCounter(Callback):
        def on_trial_recover(self, iteration, trials, trial, **info) -> None:
            searcher.retries[trial.trial_id] = searcher.retries.get(trial.trial_id, 0) + 1

    return RetryCounter()


def outcome_from_result(result: dict | None, error: bool, trial_id: str) -> Outcome:
    result = result or {}
    metrics = json.loads(result["result_json"]) if result.get("result_json") else dict(result)
    status, reason = tune_status(result, error)
    where = {"node": result.get("node"), "device": result.get("device"), "started_at": result.get("started_at")}
    return Outcome(metrics, status, reason, tune_trial_id=trial_id, **where)


def connect_ray(config: SearchConfig, address: str | None, log: Log) -> bool:
    """Join the cluster at ``address`` (or $RAY_ADDRESS), or start a private local Ray; then check
    that a trial fits on some node (`check_fits`). Returns whether this call connected (a caller
    that fails later shuts Ray down again); on a refusal nothing of Ray is left running."""
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # failed trials report no mIoU
    # Each reported checkpoint forces an experiment snapshot (num_to_keep=1); cheap at our trial rates.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our progress lines replace Tune's tables
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _probe(address)
    import ray

    if ray.is_initialized():
        check_fits(config.resources, log, may_grow=cluster_may_grow())
        return False
    if address:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        except Exception as exc:  # ConnectionError, TimeoutError, RuntimeError depending on the failure
            reason = one_line(str(exc))[:200]
            raise SearchError(f"cannot reach the Ray cluster at {address}: {reason}{_auth_hint(reason)}") from None
        _check_fits_or_shut_down(config.resources, log, may_grow=cluster_may_grow())
        log(f"joined the Ray cluster at {address}: {ray.cluster_resources()}")
        return True
    _check_local_ray(config.resources)
    # The embedded default: a private local Ray for this search, without the dashboard. Ray 2.60
    # binds its servers to the node's address (it maps 127.0.0.1 to it) and guards them with its
    # token authentication, on by default; a loopback-only binding cannot be asked of ray.init.
    # Ray logs that it turned token authentication on, a warning line on stderr that would precede
    # a refusal below; that is the setting this search wants.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    ray.init(
        address="local",  # a new instance, never one a `ray start` on this machine left running
        num_cpus=config.resources.ray_cpus,
        num_gpus=config.resources.ray_gpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
    )
    _check_fits_or_shut_down(config.resources, log, may_grow=False)
    log(f"started a local Ray: {ray.cluster_resources()}")
    return True


def _check_local_ray(resources: ResourcesConfig) -> None:
    """A trial larger than the local Ray the config asks for, refused before starting it."""
    limits = (
        ("cpus", resources.cpus_per_trial, resources.ray_cpus),
        ("gpus", resources.gpus_per_trial, resources.ray_gpus),
    )
    for kind, per_trial, total in limits:
        if total is not None and per_trial > total:
            raise SearchError(
                f"resources.{kind}_per_trial {per_trial:g} fits on no node of the local Ray "
                f"(resources.ray_{kind} {total})"
            )


def _check_fits_or_shut_down(resources: ResourcesConfig, log: Log, may_grow: bool) -> None:
    import ray

    try:
        check_fits(resources, log, may_grow)
    except SearchError:
        ray.shutdown()
        raise


def check_fits(resources: ResourcesConfig, log: Log, may_grow: bool) -> None:
    """Refuse trials that no alive node of the connected Ray can run, as Tune would wait for them
    forever; where an autoscaler may add a node that fits (``may_grow``), say so and go on."""
    import ray

    nodes = [(n["Resources"].get("CPU", 0), n["Resources"].get("GPU", 0)) for n in ray.nodes() if n.get("Alive")]
    cpus, gpus = resources.cpus_per_trial, resources.gpus_per_trial
    if any(c >= cpus and g >= gpus for c, g in nodes):
        return
    largest = max(nodes, default=(0, 0))  # (CPUs, GPUs): the node with the most CPUs
    if not any(c >= cpus for c, _ in nodes):
        what = f"resources.cpus_per_trial {cpus:g}"
    elif not any(g >= gpus for _, g in nodes):
        what = f"resources.gpus_per_trial {gpus:g}"
        largest = max(nodes, key=lambda n: (n[1], n[0]))
    else:
        what = f"resources.cpus_per_trial {cpus:g} with gpus_per_trial {gpus:g}"
    problem = f"{what} fits on no node of the Ray cluster (largest node: {largest[0]:g} CPUs, {largest[1]:g} GPUs)"
    if not may_grow:
        raise SearchError(problem)
    log(f"{problem} yet; the trials wait for the autoscaler to add one")


def cluster_may_grow() -> bool:
    """Whether an autoscaler may add nodes to the cluster this driver joined: Ray's cluster launcher
    leaves its config on the head, where the driver runs (Ray Tune tells clusters apart the same
    way), and KubeRay's autoscaler works inside Kubernetes. Elsewhere (`ray start` by hand, SLURM)
    the nodes there are all there will be."""
    return Path("~/ray_bootstrap_config.yaml").expanduser().exists() or "KUBERNETES_SERVICE_HOST" in os.environ


def _auth_hint(reason: str) -> str:
    """What a joining driver lacks, where Ray's token authentication is the likeliest cause."""
    if "token" in reason.lower():
        return (
            "; a joining driver needs the cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN or "
            "RAY_AUTH_TOKEN_PATH (see launch/README.md, Authentication)"
        )
    if not os.environ.get("RAY_AUTH_MODE"):
        # Ray never turns token authentication on by itself for a driver joining an explicit address.
        return "; if the cluster uses token authentication, set RAY_AUTH_MODE=token"
    return ""


def _probe(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on: ray.init keeps retrying such an address for minutes."""
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # "auto", ray:// client addresses: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise SearchError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def run_search(
    config: SearchConfig | None,
    run_dir: str | Path,
    *,
    address: str | None = None,
    resume: bool = False,
    log: Log = print,
) -> Search:
    """Run (or resume) the search of ``run_dir`` to its budget; returns the finished `Search`.

    Everything is checked before anything is written: the config, the run directory (on resume,
    that its state and table belong together), then the Ray cluster (a trial must fit on a node).
    A refusal is one `ConfigError` or `SearchError` and leaves no new directory or file behind.
    """
    run_dir = Path(run_dir).resolve()
    config = run_config(config, run_dir, resume)
    task, fidelity = check_config(config)
    saved = check_resumable(config, run_dir) if resume else None
    if saved is not None and saved.unfinished == 0 and saved.recorded >= config.budget.trials:
        log(f"{run_dir}: the budget of {config.budget.trials} trials is spent; nothing to do")
        return open_search(config, run_dir)  # without Ray
    connected = connect_ray(config, address, log)
    progress = Progress(log)
    try:
        if not resume:
            run_dir.mkdir(parents=True, exist_ok=True)
        search = open_search(config, run_dir, on_change=progress.update)
        if not resume:
            write_config(config, run_dir)  # last: a directory without it takes a new search again
    except BaseException:
        _disconnect(connected)
        raise
    if search.finished:
        _disconnect(connected)
        log(f"{run_dir}: the budget of {config.budget.trials} trials is spent; nothing to do")
        return search
    log(
        f"search {config.name!r}: strategy {config.strategy.name}, budget {config.budget.trials} trials, "
        f"task {task.name} at {' -> '.join(config.rungs)} fidelity, run directory {run_dir}"
        + (f" (resumed: {len(search.store)} rows, {len(search.rerun)} to run again)" if resume else "")
    )
    tune_search(search, config, task.to_dict(), fidelity, run_dir)
    progress.update(search, final=True)
    if config.ladder:
        agreement = ladder_agreement(search.store.rows, config.ladder, config.fidelity)
        write_json(run_dir / LADDER_NAME, {"ladder": agreement})
        for line in format_ladder(agreement):
            log(line)
    return search


def _disconnect(connected: bool) -> None:
    """Shut down (or leave) the Ray that `connect_ray` started (or joined)."""
    if connected:
        import ray

        ray.shutdown()


def make_trainable(config: SearchConfig, task: dict[str, Any], fidelity: str, seed: int):
    """`train_candidate` bound to the task and fidelity, with the config's resources per trial."""
    from ray import tune

    resources = config.resources
    return tune.with_resources(
        tune.with_parameters(
            train_candidate,
            task=task,
            fidelity=fidelity,
            seed=seed,
            threads=max(1, int(resources.cpus_per_trial)),
            gpus=resources.gpus_per_trial,
        ),
        {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial},
    )


def tune_search(search: Search, config: SearchConfig, task: dict[str, Any], fidelity: Fidelity, run_dir: Path) -> None:
    from ray import tune

    resources = config.resources
    trainable = make_trainable(config, task, config.fidelity, config.seed)
    scheduler = None
    if config.scheduler.asha:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="step",
            max_t=fidelity.steps,
            grace_period=config.scheduler.grace_steps,
            reduction_factor=config.scheduler.reduction_factor,
        )
    storage = ray_storage(config, run_dir)
    session = tune_session_name()
    searcher = _searcher_class()(search)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            metric="miou" if scheduler else None,
            mode="max" if scheduler else None,
            num_samples=config.budget.trials * 100 + 1000,  # the searcher ends the search, not this
            max_concurrent_trials=resources.max_concurrent,
            trial_dirname_creator=lambda trial: f"candidate-{trial.config['candidate']['id']}",
            trial_name_creator=lambda trial: f"candidate-{trial.config['candidate']['id']}",
            reuse_actors=True,  # a new worker process per trial costs seconds of imports
        ),
        run_config=tune.RunConfig(
            name=session,
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=config.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[_retry_counter(searcher)],
            verbose=0,
        ),
    )
    tuner.fit()


@dataclass(frozen=True)
class Job:
    """One training of a fixed set (a promotion, a fidelity measurement): a spec at a fidelity with a seed."""

    id: str  # unique in its set; names the Tune trial's folder
    spec_json: str
    fidelity: str
    seed: int


def run_jobs(
    jobs: list[Job],
    config: SearchConfig,
    task: dict[str, Any],
    run_dir: Path,
    on_done: Callable[[Job, dict[str, Any], bool, Path | None], None],
    save_weights: bool = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Train each of ``jobs`` as a trial of one Tune experiment, with the search's trainable and the
    config's resources and retries. ``on_done(job, last_result, error, checkpoint_dir)`` is called as
    each trial ends (``error``: Tune gave up on it; ``checkpoint_dir``: its last checkpoint, which holds
    the weights with ``save_weights``), so a driver killed midway keeps every finished job. ``settings``:
    more keys of every trial's config (`train_candidate` reads ``init``)."""
    from ray import tune
    from ray.tune import Callback

    by_id = {job.id: job for job in jobs}
    trainable = make_trainable(config, task, config.fidelity, config.seed)  # each job names its own

    class JobWriter(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._done(trial, error=False)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._done(trial, error=True)

        def _done(self, trial, error: bool) -> None:
            job, result, checkpoint = by_id[trial.config["candidate"]["id"]], trial.last_result or {}, trial.checkpoint
            if checkpoint is None or error:
                on_done(job, result, error, None)
                return
            with checkpoint.as_directory() as saved:
                on_done(job, result, error, Path(saved))

    candidates = [{"id": j.id, "spec": j.spec_json, "fidelity": j.fidelity, "seed": j.seed} for j in jobs]
    tuner = tune.Tuner(
        trainable,
        param_space={"candidate": tune.grid_search(candidates), "save_weights": save_weights, **(settings or {})},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=config.resources.max_concurrent,
            trial_dirname_creator=lambda trial: f"job-{trial.config['candidate']['id']}",
            reuse_actors=True,  # a new worker process per trial costs seconds of imports
        ),
        run_config=tune.RunConfig(
            name=tune_session_name(),  # unguessable: a trial-less Tune run unpickles the state it finds
            storage_path=ray_storage(config, run_dir),
            failure_config=tune.FailureConfig(max_failures=config.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[JobWriter()],
            verbose=0,
        ),
    )
    tuner.fit()


def tune_session_name() -> str:
    """A new Tune experiment's name, which nobody can create in advance: a Tune run that ends with
    no trial reads back the newest experiment state in its folder, with Ray's cloudpickle fallback,
    so a crafted state planted in a predictable folder of the run directory would run its code."""
    return f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------------------------- progress
class Progress:
    """One line per finished trial: done / running / failed, best so far, elapsed, time left."""

    def __init__(self, log: Log):
        self.log = log
        self.start = time.monotonic()
        self.done_at_start: int | None = None

    def update(self, search: Search, final: bool = False) -> None:
        s = search.summary()
        done = s["first_rung"]  # what the budget counts
        if self.done_at_start is None:
            self.done_at_start = done - (0 if final else 1)
        elapsed = time.monotonic() - self.start
        finished_here = done - self.done_at_start
        left = max(0, s["budget"] - done)
        eta = elapsed / finished_here * left if finished_here and left else 0.0
        best = s["best"]
        best_text = f"best {best['objective']:.4f} ({best['name'] or best['spec_hash'][:10]})" if best else "best -"
        ladder = f" (+{s['higher_rungs']} up the ladder)" if search.ladder else ""
        self.log(
            f"[{_clock(elapsed)}] {'finished: ' if final else ''}{done}/{s['budget']} trials done{ladder} "
            f"(ok {s['ok']}, failed {s['failed']}, pruned {s['pruned']}, duplicates {s['duplicate']}), "
            f"running {s['running']}, {best_text}" + ("" if final or not left else f", about {_clock(eta)} left")
        )


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
