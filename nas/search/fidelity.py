"""Fidelity measurement: how far a cheap way of ranking architectures predicts a dear one.

`measure(config, out)` trains a fixed set of architectures (published networks, seeded samples of the
search space, mutants of a published network) at each of the config's fidelities over seeds, as trials
of the search's Ray runner (`run_jobs`, the search's trainable) into a results table like a search's
(``trials.parquet``; one row per architecture, fidelity and seed). A rerun trains only the jobs
without a successful row. `summarise` then ranks the architectures at every fidelity by the mean
over seeds of the fidelity's metric (a training-free fidelity's zero-cost ``score``, else ``miou``) and
gives, against the ``reference`` fidelity, Kendall tau and Spearman rho with bootstrap intervals
(`nas.search.correlation`), each fidelity's seed-to-seed tau, and the spread between architectures
against the seed noise. A results file of ``benchmarks/proxy_bench.py signal`` is scored the same way
(`summarise_file`).

A fidelity directory holds ``fidelity.yaml`` (its config), ``trials.parquet`` and ``summary.json``.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from nas.common.atomic import atomic_path
from nas.common.config import MAX_SEED, ConfigError, from_dict, load_file, read_mapping, to_dict
from nas.common.errors import UserError, first_line
from nas.common.jsonutil import json_ready, write_json
from proxy_tasks.task import Fidelity, load_task, scale_spec
from search_spaces import ArchSpec, SpecError, sample
from search_spaces.mutations import mutate

from .config import ResourcesConfig, SearchConfig, SpaceConfig, StorageConfig, resolve_ref
from .correlation import MIN_PAIRS, format_agreement, rank_agreement, spread_over_noise
from .promote import ALPHA, VERDICT_RULE, compare_seeds
from .run_dir import FIDELITY_CONFIG_NAME, FIDELITY_SUMMARY_NAME, TABLE_NAME
from .runner import Job, config_spec, connect_ray, run_jobs
from .status import OK, tune_status
from .store import ResultsStore, StoreError, metric_values

MAX_ARCHITECTURES = 1000
MAX_SEEDS = 100
STRATEGY = "fidelity"  # the table's strategy column: these rows come from no search


class FidelityError(UserError):
    """A fidelity measurement that cannot start or a results file that cannot be scored; one line."""


@dataclass(frozen=True)
class ArchitecturesConfig:
    published: tuple[str, ...] = ("deeplabv3-resnet50", "deeplabv3plus-resnet50", "spinenet-49")
    random: int = 8  # samples of the search space (``space:``), seeds seed+1, seed+2, ...
    mutants: int = 0  # single mutations of ``mutant_of``, a seeded chain of draws
    mutant_of: str = "deeplabv3-resnet50"
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("random", "mutants"):
            if not 0 <= getattr(self, key) <= MAX_ARCHITECTURES:
                raise ConfigError(f"{key}: must be in [0, {MAX_ARCHITECTURES}], got {getattr(self, key)}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed: must be in [0, {MAX_SEED}], got {self.seed}")


@dataclass(frozen=True)
class FidelityConfig:
    name: str = "fidelity"
    task: str = "synthetic"
    data_root: str | None = None
    fidelities: tuple[str, ...] = ("proxy", "full-1k")  # every architecture is trained at each
    reference: str = "full-1k"  # the fidelity the others are compared with (one of ``fidelities``)
    # The network every other one is judged against at the reference (default: the first published one).
    baseline: str | None = None
    seeds: int = 2  # seeds 0 .. seeds-1 of every (architecture, fidelity)
    fidelity_seeds: dict[str, int] = field(default_factory=dict)  # another count for some fidelities
    architectures: ArchitecturesConfig = field(default_factory=ArchitecturesConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    retries: int = 2

    def __post_init__(self) -> None:
        if not self.fidelities:
            raise ConfigError("fidelities: name at least one fidelity of the task")
        if len(set(self.fidelities)) != len(self.fidelities):
            raise ConfigError(f"fidelities: a fidelity is named twice in {list(self.fidelities)}")
        if self.reference not in self.fidelities:
            raise ConfigError(f"reference: {self.reference!r} is not among fidelities {list(self.fidelities)}")
        counts = [("seeds", self.seeds), *((f"fidelity_seeds.{k}", v) for k, v in self.fidelity_seeds.items())]
        for key, count in counts:
            if not 1 <= count <= MAX_SEEDS:
                raise ConfigError(f"{key}: must be in [1, {MAX_SEEDS}], got {count}")
        unknown = sorted(set(self.fidelity_seeds) - set(self.fidelities))
        if unknown:
            raise ConfigError(f"fidelity_seeds: {', '.join(unknown)} not among fidelities {list(self.fidelities)}")

    def seeds_of(self, fidelity: str) -> int:
        return self.fidelity_seeds.get(fidelity, self.seeds)

    def runner_config(self) -> SearchConfig:
        """The search config the runner takes: this measurement's task, resources, storage and retries."""
        return SearchConfig(
            name=self.name,
            task=self.task,
            fidelity=self.reference,
            data_root=self.data_root,
            resources=self.resources,
            storage=self.storage,
            retries=self.retries,
        )


def load_fidelity_config(path: str | Path) -> FidelityConfig:
    path = Path(path)
    try:
        config = from_dict(FidelityConfig, load_file(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    base, archs = path.parent, config.architectures
    published = tuple(resolve_ref(r, base) for r in archs.published)
    archs = replace(archs, published=published, mutant_of=resolve_ref(archs.mutant_of, base))
    return replace(config, task=resolve_ref(config.task, base), architectures=archs)


# ---------------------------------------------------------------------------------- the architectures
@dataclass(frozen=True)
class Architecture:
    label: str  # what the tables and the summary call it
    origin: str  # published | random | mutant
    spec: ArchSpec


def architectures(config: FidelityConfig) -> list[Architecture]:
    """The measured set, in a fixed order: published, random samples, mutants (each network once)."""
    a = config.architectures
    found: list[Architecture] = []
    for ref in a.published:
        spec = config_spec(ref)
        found.append(Architecture(spec.name or Path(ref).stem, "published", spec))
    space = config.space.build()
    for i in range(1, a.random + 1):
        label = f"random-{a.seed + i}"
        found.append(Architecture(label, "random", sample(space, a.seed + i, name=label)))
    if a.mutants:
        parent = config_spec(a.mutant_of)
        try:
            space.validate(parent)
        except SpecError as exc:
            raise ConfigError(f"architectures.mutant_of: {a.mutant_of} is outside the search space ({exc})") from None
        seen, draw = {parent.network_hash}, 0
        while sum(arch.origin == "mutant" for arch in found) < a.mutants and draw < 100 * a.mutants:
            child, _ = mutate(parent, space, a.seed * 1_000_003 + draw)
            draw += 1
            if child.network_hash not in seen:
                seen.add(child.network_hash)
                label = f"{parent.name or 'mutant'}-m{draw}"
                found.append(Architecture(label, "mutant", replace(child, name=label)))
    unique: dict[str, Architecture] = {}
    for arch in found:
        unique.setdefault(arch.spec.network_hash, arch)
    labels = [arch.label for arch in unique.values()]
    twins = sorted({label for label in labels if labels.count(label) > 1})
    if twins:
        raise ConfigError(f"architectures: different networks share the name {', '.join(twins)}")
    return list(unique.values())


def jobs_of(config: FidelityConfig, archs: list[Architecture]) -> list[tuple[Architecture, Job]]:
    """Every (architecture, fidelity, seed), architecture by architecture (a partial measurement has
    whole architectures). A job's id is what it measures, so rows outlive a change of the config."""
    return [
        (arch, Job(f"{arch.spec.hash}-{fidelity}-seed{seed}", arch.spec.to_json(indent=None), fidelity, seed))
        for arch in archs
        for fidelity in config.fidelities
        for seed in range(config.seeds_of(fidelity))
    ]


def job_key(row: dict[str, Any]) -> str:
    return f"{row['spec_hash']}-{row['fidelity']}-seed{row['seed']}"


# ---------------------------------------------------------------------------------- measuring
def baseline_of(config: FidelityConfig, archs: list[Architecture]) -> str | None:
    """The label of the network the others are judged against at the reference fidelity."""
    published = [arch.label for arch in archs if arch.origin == "published"]
    if config.baseline is None:
        return published[0] if published else None
    if config.baseline not in published:
        raise ConfigError(f"baseline: {config.baseline!r} is not among the published architectures {published}")
    return config.baseline


def check(config: FidelityConfig) -> list[Architecture]:
    """Everything that can be checked before a write: the task, each fidelity, every spec at each."""
    task = load_task(config.task, config.data_root)
    archs = architectures(config)
    if len(archs) < MIN_PAIRS:
        raise ConfigError(f"architectures: {len(archs)} distinct networks; a ranking needs at least {MIN_PAIRS}")
    baseline_of(config, archs)
    for fidelity in config.fidelities:
        fid = task.fidelity(fidelity)
        for arch in archs:
            try:
                scale_spec(arch.spec, fid)
            except SpecError as exc:
                raise ConfigError(f"{arch.label} at fidelity {fidelity!r}: {exc}") from None
    return archs


def measure(config: FidelityConfig | None, out: str | Path, address: str | None = None, log=print) -> dict[str, Any]:
    """Train every job of ``config`` that ``out`` has no successful row of, and summarise (see the module
    docstring). Without a config (``--resume``) the one saved in ``out`` is used; a new config may add
    architectures, fidelities and seeds to a directory, as long as every preset it shares with the
    rows there is unchanged (rows are kept by what they measured: spec, fidelity and seed)."""
    out = Path(out).resolve()
    saved_path = out / FIDELITY_CONFIG_NAME
    if config is None:
        config = _saved_config(out)
    elif not saved_path.is_file() and out.exists() and any(out.iterdir()):
        raise FidelityError(f"{out}: holds other files than a fidelity measurement; give a new or empty folder")
    archs = check(config)
    task = load_task(config.task, config.data_root)
    presets = {f: to_dict(task.preset(f)) for f in config.fidelities}
    settings = training_settings(task)
    if saved_path.is_file():
        _check_presets(out, presets)
        _check_settings(out, settings)
    store = _open_store(out)
    jobs = jobs_of(config, archs)
    done = {job_key(r) for r in store.rows if r["status"] == OK}
    todo = [(arch, job) for arch, job in jobs if job.id not in done]
    runner = config.runner_config()
    connected = connect_ray(runner, address, log) if todo else False  # an unreachable cluster: one line
    try:
        log(
            f"fidelity measurement {config.name!r}: {len(archs)} architectures, fidelities "
            f"{', '.join(f'{f} x{config.seeds_of(f)}' for f in config.fidelities)}: {len(jobs)} trials "
            f"({len(jobs) - len(todo)} done), task {config.task}"
        )
        out.mkdir(parents=True, exist_ok=True)
        # The config that made the directory's summary, also when it only regrouped what is there.
        with atomic_path(saved_path) as tmp:
            record = {**to_dict(config), "presets": {**_saved_presets(out), **presets}, "task_settings": settings}
            tmp.write_text(yaml.safe_dump(json_ready(record), sort_keys=False))
        if todo:
            _train(todo, runner, task.to_dict(), out, store, log)
    finally:
        if connected:
            import ray

            ray.shutdown()
    rows = _rows_of(store.rows, jobs)
    summary = summarise_rows(rows, config.fidelities, config.reference, baseline_of(config, archs))
    write_json(out / FIDELITY_SUMMARY_NAME, summary)
    return summary


def _rows_of(rows: list[dict[str, Any]], jobs: list[tuple[Architecture, Job]]) -> list[dict[str, Any]]:
    """The first successful row of each job (rows of jobs the config no longer makes are left out)."""
    wanted, found = {job.id for _, job in jobs}, {}
    for row in rows:
        if row["status"] == OK and job_key(row) in wanted:
            found.setdefault(job_key(row), row)
    return list(found.values())


def _saved_presets(out: Path) -> dict[str, Any]:
    path = out / FIDELITY_CONFIG_NAME
    if not path.is_file():
        return {}
    presets = read_mapping(path, FidelityError, "damaged fidelity config").get("presets") or {}
    if not isinstance(presets, dict):
        raise FidelityError(f"{path}: damaged fidelity config (presets is not a mapping)")
    return presets


def _check_presets(out: Path, presets: dict[str, Any]) -> None:
    """Refuse to add to rows measured with other settings of the same preset name."""
    saved = _saved_presets(out)
    changed = sorted(f for f, settings in presets.items() if f in saved and not same_preset(saved[f], settings))
    if changed:
        raise FidelityError(
            f"{out}: its {', '.join(changed)} trials were run with other settings of that preset than the "
            f"task has now; measure into a new folder"
        )


# The task's settings that change what a trial measures besides its preset (where the data lives,
# how many loader processes and the evaluation batch do not).
TRAINING_SETTINGS = ("dataset", "optimizer", "augment", "precision", "ignore_index", "seed")


def training_settings(task) -> dict[str, Any]:
    settings = {key: value for key, value in task.to_dict().items() if key in TRAINING_SETTINGS}
    settings["dataset"] = {key: value for key, value in settings["dataset"].items() if key != "root"}
    return json_ready(settings)


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to add to rows measured on another task, data or optimiser (a directory written before
    these were recorded is taken as it is)."""
    path = out / FIDELITY_CONFIG_NAME
    saved = read_mapping(path, FidelityError, "damaged fidelity config").get("task_settings")
    if saved is None:
        return
    changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    if changed:
        raise FidelityError(
            f"{out}: its rows were measured with other task settings ({', '.join(changed)}) than the task "
            f"has now; measure into a new folder"
        )


def same_preset(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether preset settings recorded with rows are the preset's ``current`` ones. A setting added to
    `Fidelity` since they were recorded counts as the same while it holds its default: the rows were
    trained as that default trains."""
    saved, current = json_ready(saved), json_ready(current)
    defaults = json_ready(to_dict(Fidelity()))
    if set(saved) - set(current):
        return False
    return all(saved.get(key, defaults.get(key)) == value for key, value in current.items())


def _train(todo, runner: SearchConfig, task: dict[str, Any], out: Path, store: ResultsStore, log) -> None:
    arch_of = {job.id: arch for arch, job in todo}
    started, total, finished = time.time(), len(todo), set()

    def record(job: Job, result: dict[str, Any], error: bool, saved: Path | None) -> None:
        trial_id, arch = 1 + max((r["trial_id"] for r in store.rows), default=-1), arch_of[job.id]
        metrics = json.loads(result["result_json"]) if result.get("result_json") else {}
        status, reason = tune_status(result, error)
        row = metric_values(metrics)
        row.update(
            trial_id=trial_id,
            spec_hash=arch.spec.hash,
            name=arch.label,
            spec_json=job.spec_json,
            strategy=STRATEGY,
            origin=arch.origin,
            parent_hashes=[],
            status=status,
            error=reason,
            per_class_iou=json.dumps(metrics.get("per_class_iou") or {}),
            history=json.dumps(metrics.get("history") or []),
            fidelity=job.fidelity,
            seed=job.seed,
            node=result.get("node"),
            device=result.get("device"),
            attempts=1,
            started_at=datetime.fromtimestamp(result.get("started_at") or started, timezone.utc),
            finished_at=datetime.now(timezone.utc),
        )
        store.append(row)
        finished.add(job.id)
        log(
            f"  {arch.label:<28} {job.fidelity:<14} seed {job.seed}  {metric_of(job.fidelity, row)} "
            f"{_fmt(value_of(row))}  {status}  ({len(finished)}/{total})"
        )

    run_jobs([job for _, job in todo], runner, task, out, record)


def _saved_config(out: Path) -> FidelityConfig:
    path = out / FIDELITY_CONFIG_NAME
    if not path.is_file():
        raise FidelityError(f"{out}: not a fidelity measurement (no {FIDELITY_CONFIG_NAME}); start one with --config")
    data = read_mapping(path, FidelityError, "damaged fidelity config")
    data.pop("presets", None)
    data.pop("task_settings", None)
    try:
        return from_dict(FidelityConfig, data)
    except ConfigError as exc:
        raise FidelityError(f"{path}: damaged fidelity config ({first_line(exc)})") from None


def _open_store(out: Path) -> ResultsStore:
    try:
        return ResultsStore(out / TABLE_NAME)
    except StoreError as exc:
        raise FidelityError(str(exc)) from None


# ---------------------------------------------------------------------------------- summarising
def metric_of(fidelity: str, row: dict[str, Any]) -> str:
    """What ranks architectures at a fidelity: the zero-cost score of a training-free one, else mIoU."""
    return "score" if _number(row.get("score")) else "miou"


def value_of(row: dict[str, Any]) -> float | None:
    """The row's ranking value: its score (an infinite one included: a singular NASWOT kernel's -inf
    is the lowest score, not a missing one), else its finite mIoU."""
    if _number(row.get("score")):
        return float(row["score"])
    return float(row["miou"]) if _finite(row.get("miou")) else None


def _number(value: Any) -> bool:
    try:
        return value is not None and not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def summarise_rows(
    rows: list[dict[str, Any]], fidelities: tuple[str, ...] | list[str], reference: str, baseline: str | None = None
) -> dict:
    """The summary of a measurement's rows (see the module docstring); JSON-ready. With a ``baseline``
    (an architecture's name) it also judges every architecture against it at the reference."""
    by: dict[str, dict[str, dict[int, float]]] = {f: {} for f in fidelities}  # fidelity -> hash -> seed -> value
    names: dict[str, str] = {}
    metric: dict[str, str] = {}
    seconds: dict[str, list[float]] = {f: [] for f in fidelities}
    for row in rows:
        if row["status"] != OK or row["fidelity"] not in by:
            continue
        spent = [row.get(key) for key in ("train_seconds", "eval_seconds") if _finite(row.get(key))]
        if spent:
            seconds[row["fidelity"]].append(sum(map(float, spent)))
        value = value_of(row)
        if value is None:
            continue
        names.setdefault(row["spec_hash"], row["name"])
        metric.setdefault(row["fidelity"], metric_of(row["fidelity"], row))
        by[row["fidelity"]].setdefault(row["spec_hash"], {})[int(row["seed"])] = value
    order = list(names)
    ref = by.get(reference, {})
    ref_means = [_mean_of(ref.get(h)) for h in order]
    per_fidelity = {}
    for fidelity in fidelities:
        values = by[fidelity]
        means = [_mean_of(values.get(h)) for h in order]
        entry: dict[str, Any] = {
            "metric": metric.get(fidelity),
            "architectures": sum(m is not None for m in means),
            "seed_to_seed": _seed_to_seed(values, order),
            "spread_over_noise": spread_over_noise([list(values.get(h, {}).values()) for h in order]),
            # What a trial at this fidelity costs: the median seconds of training and evaluation.
            "seconds": statistics.median(seconds[fidelity]) if seconds[fidelity] else None,
        }
        if fidelity != reference:
            entry["vs_reference"] = rank_agreement(means, ref_means)
        per_fidelity[fidelity] = entry
    return {
        "reference": reference,
        "fidelities": per_fidelity,
        "means": {_label(names, h): {f: _mean_of(by[f].get(h)) for f in fidelities} for h in order},
        "versus_baseline": versus_baseline(rows, reference, baseline) if baseline else None,
    }


def versus_baseline(rows: list[dict[str, Any]], reference: str, baseline: str) -> dict[str, Any] | None:
    """Each architecture's reference mIoU over seeds against the baseline's, by the rule promotion
    judges with, and its FLOPs as a ratio of the baseline's: whether the measured set holds a network
    that beats the baseline, and at what cost. None when the baseline has no reference rows."""
    mious: dict[str, list[float]] = {}
    flops: dict[str, float] = {}
    names: dict[str, str] = {}
    for row in rows:
        if row["status"] == OK and row["fidelity"] == reference and _finite(row.get("miou")):
            mious.setdefault(row["spec_hash"], []).append(float(row["miou"]))
            names.setdefault(row["spec_hash"], row["name"])
            if _finite(row.get("flops")):
                flops.setdefault(row["spec_hash"], float(row["flops"]))
    base = next((h for h, name in names.items() if name == baseline), None)
    if base is None:
        return None
    theirs, their_flops = mious[base], flops.get(base)
    others = []
    for h, ours in mious.items():
        if h == base:
            continue
        result = compare_seeds(ours, theirs)
        ratio = flops[h] / their_flops if h in flops and their_flops else None
        others.append({"name": _label(names, h), **result, "flops_ratio": ratio})
    others.sort(key=lambda r: -(r["mean"] if r["mean"] is not None else -math.inf))
    _holm(others)
    return {
        "baseline": baseline,
        "fidelity": reference,
        "mean": _mean(theirs),
        "std": statistics.stdev(theirs) if len(theirs) >= 2 else None,
        "seeds": len(theirs),
        "rule": VERDICT_RULE,
        "architectures": others,
    }


def _holm(results: list[dict[str, Any]], alpha: float = ALPHA) -> None:
    """Set ``beats_holm`` on each result: whether it beats the baseline once Holm's step-down
    correction accounts for testing all of them (the chance of any false "beats" in the set kept
    under ``alpha``); None where a test could not be made."""
    tested = sorted((r for r in results if r["p_value"] is not None), key=lambda r: r["p_value"])
    still = True
    for rank, r in enumerate(tested):
        still = still and r["p_value"] < alpha / (len(tested) - rank)
        r["beats_holm"] = still
    for r in results:
        r.setdefault("beats_holm", None)


def _seed_to_seed(values: dict[str, dict[int, float]], order: list[str]) -> dict[str, Any] | None:
    """Kendall tau between the ranking of one seed and that of another, over the architectures that
    have both seeds, for every pair of seeds (``pairs``) and their mean (``tau``); ``n`` the most
    architectures a pair covered. How far the fidelity's own noise reorders it: a reference for the
    agreement of single-seed rankings (a ranking by the mean over seeds is less noisy than either)."""
    seeds = sorted({seed for h in order for seed in values.get(h, {})})
    taus, n = [], 0
    for a, b in itertools.combinations(seeds, 2):
        both = [h for h in order if a in values.get(h, {}) and b in values.get(h, {})]
        tau = rank_agreement([values[h][a] for h in both], [values[h][b] for h in both], resamples=0)["tau"]
        if tau is not None:
            taus.append(tau)
            n = max(n, len(both))
    return {"tau": statistics.fmean(taus), "pairs": taus, "n": n} if taus else None


def _label(names: dict[str, str], spec_hash: str) -> str:
    """An architecture's name, with its hash where another architecture has the same name."""
    name = names[spec_hash]
    twins = sum(other == name for other in names.values())
    return name if twins == 1 else f"{name} ({spec_hash[:10]})"


def format_summary(summary: dict[str, Any], cost_ratio: float = 0.5) -> str:
    """The summary as printed; the baseline lines name the best network at or under ``cost_ratio``
    times the baseline's FLOPs."""
    reference = summary["reference"]
    lines = [f"against {reference} (mean over seeds per architecture; 90% bootstrap intervals):"]
    for fidelity, entry in summary["fidelities"].items():
        noise = entry["spread_over_noise"]
        seeds = entry["seed_to_seed"]
        extra = f"seed-to-seed tau {seeds['tau']:+.2f}" if seeds else ""
        if noise is not None:
            extra += f"{', ' if extra else ''}spread/noise {noise:.1f}"
        cost = f"{entry['seconds']:>6.1f} s" if entry.get("seconds") is not None else f"{'-':>8}"
        head = f"  {fidelity:<14} {entry['metric'] or '-':<6} {entry['architectures']:>3} archs {cost}  "
        if fidelity == reference:
            lines.append(head + f"(reference) {extra}")
        else:
            lines.append(head + format_agreement(entry["vs_reference"]) + (f"; {extra}" if extra else ""))
    versus = summary.get("versus_baseline")
    if versus:
        lines += _format_versus(versus, cost_ratio)
    return "\n".join(lines)


def _format_versus(versus: dict[str, Any], cost_ratio: float) -> list[str]:
    def one(r: dict[str, Any]) -> str:
        spread = f" ± {r['std']:.3f}" if r["std"] is not None else ""
        p_value = f"p {r['p_value']:.2g}, " if r["p_value"] is not None else ""
        ratio = f"{r['flops_ratio']:.2f}x FLOPs" if r["flops_ratio"] is not None else "FLOPs unknown"
        return f"{r['name']} {r['mean']:.4f}{spread} ({p_value}{ratio})"

    others = versus["architectures"]
    compared = [r for r in others if r["beats"] is not None]
    beating = [r for r in compared if r["beats"]]
    spread = f" ± {versus['std']:.3f}" if versus["std"] is not None else ""
    lines = [
        f"beside {versus['baseline']} at {versus['fidelity']} (mIoU {versus['mean']:.4f}{spread} over "
        f"{versus['seeds']} seeds); {VERDICT_RULE}:"
    ]
    if compared:
        holm = sum(bool(r.get("beats_holm")) for r in compared)
        lines.append(
            f"  {len(beating)} of {len(compared)} beat it, {holm} with Holm's correction for the {len(compared)} tests"
            + (": " + "; ".join(map(one, beating)) if beating else "")
        )
    if len(compared) < len(others):
        lines.append(f"  {len(others) - len(compared)} with too few seeds on one side to compare")
    cheap = [r for r in others if r["flops_ratio"] is not None and r["flops_ratio"] <= cost_ratio]
    if cheap:
        lines.append(f"  the best at <= {cost_ratio:g}x its FLOPs ({len(cheap)} networks): {one(cheap[0])}")
    return lines


def summarise_file(path: str | Path) -> dict[str, Any]:
    """Score a results file of ``benchmarks/proxy_bench.py signal`` (the stored GPU measurements)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        results, reference = data["results"], data.get("reference")
        if not isinstance(results, dict) or not isinstance(reference, str):
            raise TypeError("results must be a mapping and reference a fidelity name")
        rows = [
            {
                "spec_hash": r.get("spec_hash") or name,
                "name": name,
                "fidelity": r["fidelity"],
                "seed": r["seed"],
                "status": r.get("status", OK),
                "miou": r.get("miou"),
                "score": r.get("score"),
                "flops": r.get("flops"),
            }
            for name, runs in results.items()
            for r in runs
        ]
        for r in rows:
            if not all(isinstance(r[k], str) for k in ("spec_hash", "fidelity", "status")):
                raise TypeError("spec_hash, fidelity and status must be strings")
            if not isinstance(r["seed"], int) or isinstance(r["seed"], bool):
                raise TypeError("seed must be an integer")
        fidelities = sorted({r["fidelity"] for r in rows}, key=lambda f: (f == reference, f))
        if reference not in fidelities:
            raise ValueError(f"no result at its reference fidelity {reference!r}")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise FidelityError(f"{path}: not a fidelity results file ({type(exc).__name__}: {first_line(exc)})") from None
    baseline = next((name for name in results if name.startswith("deeplabv3-")), None)
    return summarise_rows(rows, fidelities, reference, baseline)


def read_summary(out: str | Path) -> dict[str, Any]:
    """A fidelity directory's summary, recomputed from its table (the table is the ground truth)."""
    out = Path(out)
    config = _saved_config(out)
    archs = architectures(config)
    rows = _rows_of(_open_store(out).rows, jobs_of(config, archs))
    return summarise_rows(rows, config.fidelities, config.reference, baseline_of(config, archs))


def _mean(values: list[float] | None) -> float | None:
    return statistics.fmean(values) if values else None


def _mean_of(by_seed: dict[int, float] | None) -> float | None:
    return _mean(list(by_seed.values())) if by_seed else None


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if _finite(value) else "-"
