"""A search run as pandas DataFrames: ``load_run(RUN_DIR)`` for notebooks and reports.

A run directory (`nas.search.run_dir`) holds ``config.yaml``, ``trials.parquet`` (one row per
candidate, see `nas.search.store`) and, after ``nas promote``, ``promoted.parquet``,
``promoted/<hash>/`` and ``promoted/summary.json``. Every path is taken relative to the directory,
so a run that was moved or renamed loads the same; a run still in progress loads too (see `load_run`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nas.common.errors import UserError, first_line
from nas.search.config import RungConfig
from nas.search.correlation import AGREEMENT_KEYS, MIN_PAIRS
from nas.search.ladder import ladder_agreement
from nas.search.leaderboard import leaderboard as rank_trials
from nas.search.objective import COSTS, pareto_front
from nas.search.run_dir import (
    PROMOTED_METRICS,
    PROMOTED_SEEDS_TABLE,
    PROMOTED_TABLE,
    SUMMARY_NAME,
    TABLE_NAME,
    RunDirError,
    promoted_dir,
    read_config,
    read_json,
)
from nas.search.status import DUPLICATE, OK, STATUSES
from nas.search.store import CORE_COLUMNS, with_added_columns
from search_spaces import ArchSpec, SpecError

PROMOTED_COLUMNS = {
    "spec_hash": "object",
    "name": "object",
    "trial_id": "Int64",
    "status": "object",
    "fidelity": "object",
    "proxy_miou": "float64",
    "proxy_objective": "float64",
    "promoted_miou": "float64",
    "promoted_pixel_accuracy": "float64",
    "flops": "Int64",
    "params": "Int64",
    "promoted_train_seconds": "float64",
    "path": "object",
}
# Tables written before the promoted-fidelity metrics were named for what they are.
EARLIER_PROMOTED_NAMES = {
    "full_miou": "promoted_miou",
    "full_miou_ms": "promoted_miou_ms",
    "full_pixel_accuracy": "promoted_pixel_accuracy",
    "full_train_seconds": "promoted_train_seconds",
}
# Reference points on the Pareto axes besides the run's own baselines: the two families the search
# space contains (DeepLabv3 with a dilated ResNet, and SpineNet).
REFERENCE_NAMES = ("deeplabv3-resnet50", "spinenet-49")
LEADERBOARD_COLUMNS = [
    "trial_id",
    "name",
    "spec_hash",
    "strategy",
    "origin",
    "fidelity",
    "status",
    "objective",
    "miou",
    "flops",
    "latency_ms",
    "params",
    "train_seconds",
    "attempts",
]
BEST_COLUMNS = ["run", "strategy", "trial", "trial_id", "name", "status", "objective", "best"]
LINEAGE_COLUMNS = [
    "step",
    "trial_id",
    "name",
    "spec_hash",
    "origin",
    "mutation",
    "mutation_block",
    "mutation_args",
    "objective",
    "miou",
    "status",
]
LADDER_COLUMNS = ["fidelity", "next_fidelity", "evaluated", "went_up", "n", *AGREEMENT_KEYS]
REFERENCE_COLUMNS = ["name", "spec_hash", "trained", "trial_id", "miou", "cost", "note"]
PROMOTED_SEED_COLUMNS = {
    "spec_hash": "object",
    "name": "object",
    "role": "object",  # candidate | baseline
    "trial_id": "Int64",
    "fidelity": "object",
    "seed": "Int64",
    "status": "object",
    "error": "object",
    "miou": "float64",
    "pixel_accuracy": "float64",
    "val_loss": "float64",
    "flops": "Int64",
    "params": "Int64",
    "train_seconds": "float64",
    "path": "object",
}
COMPARISON_COLUMNS = [
    "name",
    "spec_hash",
    "fidelity",
    "seeds",
    "mean",
    "std",
    "baseline",
    "baseline_seeds",
    "baseline_mean",
    "baseline_std",
    "flops_ratio",
    "params_ratio",
    "p_value",
    "beats",
    "verdict",
]


class RunError(UserError):
    """A run directory that cannot be read, or a question it cannot answer; one line naming the file."""


@dataclass(eq=False)  # field-wise == on DataFrames has no single truth value: runs compare by identity
class Run:
    """One search run: its tables as DataFrames, read once (a snapshot; `reload` reads again)."""

    path: Path
    trials: pd.DataFrame
    promoted: pd.DataFrame
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    promoted_seeds: pd.DataFrame = field(default_factory=lambda: _empty(PROMOTED_SEED_COLUMNS))

    # ------------------------------------------------------------------------------ basics
    @property
    def name(self) -> str:
        """The directory's name: two runs of one config (say evolution and random) stay apart."""
        return self.path.name

    @property
    def fidelity(self) -> str | None:
        """The fidelity the candidates are ranked at: the config's (with a ladder, its top rung), else the table's."""
        if self.config.get("fidelity"):
            return str(self.config["fidelity"])
        known = self.trials["fidelity"].dropna()
        return str(known.iloc[0]) if len(known) else None

    @property
    def rungs(self) -> list[RungConfig]:
        """The cheaper rungs of the search's fidelity ladder, cheapest first ([] without a ladder)."""
        try:
            return [RungConfig(**rung) for rung in self.config.get("ladder") or []]
        except (TypeError, ValueError) as exc:
            raise RunError(f"{self.path}: damaged ladder in the run's config ({first_line(exc)})") from None

    @property
    def top_rung(self) -> pd.DataFrame:
        """The rows at the fidelity the search ranks by (every row without a ladder)."""
        rung = self.trials["rung"].fillna(0) if "rung" in self.trials else 0
        return self.trials[rung == len(self.rungs)]

    @property
    def ladder(self) -> pd.DataFrame:
        """One row per rung and the next: candidates evaluated and gone up, Kendall tau and Spearman
        rho with their 90% bootstrap intervals, and ``includes_zero`` (`nas.search.ladder`); empty
        without a ladder."""
        if not self.rungs:
            return pd.DataFrame(columns=LADDER_COLUMNS)
        entries = ladder_agreement(self.trials.to_dict("records"), self.rungs, str(self.fidelity))
        return pd.DataFrame(entries)[LADDER_COLUMNS]

    @property
    def objective_kind(self) -> str:
        return str((self.config.get("objective") or {}).get("kind", "miou"))

    def reload(self) -> Run:
        return load_run(self.path)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s} {int((self.trials['status'] == s).sum())}" for s in STATUSES)
        strategies = "/".join(sorted(self.trials["strategy"].dropna().unique())) or "-"
        return (
            f"Run({str(self.path)!r}: {self.config.get('name', '-')}, {strategies}, {len(self.trials)} trials "
            f"({counts}), {len(self.promoted)} promoted)"
        )

    def ok(self) -> pd.DataFrame:
        """Trained candidates with a usable mIoU at the ranking fidelity (duplicates, failures, pruned ones
        and the lower rungs of a ladder left out)."""
        top = self.top_rung
        ok = top[(top["status"] == OK) & top["miou"].notna()]
        return ok.reset_index(drop=True)

    # ------------------------------------------------------------------------------ rankings
    def leaderboard(self, top: int | None = None, all_columns: bool = False) -> pd.DataFrame:
        """Trained candidates by objective, best first, failed ones last (as `nas show`)."""
        board = rank_trials(self.trials, top).reset_index(drop=True)
        if all_columns:
            return board
        return board[LEADERBOARD_COLUMNS]

    def pareto(self, cost: str = "flops") -> pd.DataFrame:
        """The candidates on the front of mIoU (up) against ``cost`` (down), cheapest first."""
        candidates = self.candidates(cost)
        front = pareto_front(list(zip(candidates["miou"], candidates[cost])))
        return candidates.iloc[front].sort_values([cost, "trial_id"], ignore_index=True)

    def candidates(self, cost: str = "flops") -> pd.DataFrame:
        """`ok` candidates with a positive ``cost`` (the points of a Pareto plot)."""
        if cost not in COSTS:
            raise RunError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
        ok = self.ok()
        return ok[pd.to_numeric(ok[cost], errors="coerce") > 0].reset_index(drop=True)

    def best_so_far(self) -> pd.DataFrame:
        """Per strategy: the best objective after each trained trial (``trial`` counts from 1).

        Trials count in the order they finished (``finished_at``, then trial id), which is what the
        search knew at each point; duplicates are left out (they cost nothing), failed and pruned
        ones count (they used budget) and keep the best so far.
        """
        trained = self.top_rung[self.top_rung["status"] != DUPLICATE]
        trained = trained.sort_values(["finished_at", "trial_id"], na_position="last", kind="stable")
        parts = []
        for strategy, group in trained.groupby("strategy", sort=True, dropna=False):
            part = group[["trial_id", "name", "status", "objective"]].reset_index(drop=True)
            part.insert(0, "trial", range(1, len(part) + 1))
            part.insert(0, "strategy", strategy)
            part.insert(0, "run", self.name)
            part["best"] = part["objective"].cummax().ffill()  # a failed trial keeps the best so far
            parts.append(part)
        if not parts:
            return pd.DataFrame(columns=BEST_COLUMNS)
        return pd.concat(parts, ignore_index=True)[BEST_COLUMNS]

    # ------------------------------------------------------------------------------ candidates
    def row(self, ref: int | str) -> pd.Series:
        """One trial by id (int), spec hash, unique hash prefix, or name.

        A hash names the trial that trained it (not a later duplicate of it).
        """
        trials = self.trials
        if isinstance(ref, bool) or not (isinstance(ref, str) or hasattr(ref, "__index__")):  # ints, numpy ints
            raise RunError(f"{self.path}: a trial is named by its id, spec hash or name, got {ref!r}")
        if not isinstance(ref, str):
            match = trials[trials["trial_id"] == int(ref)]
        else:
            match = trials[trials["spec_hash"] == ref]
            if match.empty and len(ref) >= 4:
                prefixed = trials[trials["spec_hash"].str.startswith(ref, na=False)]
                if prefixed["spec_hash"].nunique() > 1:
                    raise RunError(f"{self.path}: hash prefix {ref!r} is ambiguous; give more characters")
                match = prefixed
            if match.empty:
                match = trials[trials["name"] == ref]
        if match.empty:
            raise RunError(f"{self.path / TABLE_NAME}: no trial {ref!r} (give a trial id, a spec hash or a name)")
        trained = match[match["status"] != DUPLICATE]
        return (trained if len(trained) else match).iloc[0]

    def spec(self, ref: int | str) -> ArchSpec:
        """The architecture of a trial (as searched, before the fidelity's width scaling)."""
        row = self.row(ref)
        try:
            return ArchSpec.from_json(row["spec_json"])
        except SpecError as exc:
            raise RunError(f"{self.path / TABLE_NAME}: trial {row['trial_id']} has a bad spec ({exc})") from None

    def lineage(self, ref: int | str) -> pd.DataFrame:
        """The chain of ancestors of a trial, oldest first (step 0 is a seed, baseline or random draw).

        Each row is one candidate and ``mutation`` (kind, block, args) is the edit that made it
        from the row above. Only the first parent is followed; `lineage_graph` has them all. A
        parent missing from the table (a run started from another's specs) ends the chain with a
        row whose origin is ``not in this run``.
        """
        row = self.row(ref)
        chain, seen = [_lineage_record(row)], {row["spec_hash"]}
        # The asked-for row's own parents first (a duplicate was asked from its own parent).
        while (parents := _hashes(row)) and parents[0] not in seen:
            seen.add(parents[0])
            row = self._trained(parents[0])
            chain.append(_lineage_record(row) if row is not None else _missing_record(parents[0]))
        chain.reverse()
        for step, record in enumerate(chain):
            record["step"] = step
        return pd.DataFrame(chain, columns=LINEAGE_COLUMNS).astype({"trial_id": "Int64", "mutation_block": "Int64"})

    def lineage_graph(self, ref: int | str) -> nx.DiGraph:
        """Every ancestor of a trial: nodes are spec hashes (with the trial's fields), edges run
        parent -> child and carry the mutation (``kind`` "crossover" when none was recorded)."""
        target = self.row(ref)
        graph = nx.DiGraph()
        todo = [target]
        graph.add_node(target["spec_hash"], **_lineage_record(target), target=True)
        while todo:
            child = todo.pop()
            mutation = _mutation(child.get("mutation"))
            for parent_hash in _hashes(child):
                if parent_hash not in graph:
                    parent = self._trained(parent_hash)
                    record = _lineage_record(parent) if parent is not None else _missing_record(parent_hash)
                    graph.add_node(parent_hash, **record, target=False)
                    if parent is not None:
                        todo.append(parent)
                edge = {**mutation, "kind": mutation.get("kind") or "crossover"}
                graph.add_edge(parent_hash, child["spec_hash"], **edge)
        return graph

    def _trained(self, spec_hash: str) -> pd.Series | None:
        """The row that trained ``spec_hash`` (the first non-duplicate), or None if not in the table."""
        rows = self.trials[self.trials["spec_hash"] == spec_hash]
        trained = rows[rows["status"] != DUPLICATE]
        rows = trained if len(trained) else rows
        return rows.iloc[0] if len(rows) else None

    # ------------------------------------------------------------------------------ promoted
    def promoted_dir(self, spec_hash: str) -> Path:
        return promoted_dir(self.path, spec_hash)

    def promoted_metrics(self, spec_hash: str) -> dict[str, Any]:
        """``promoted/<hash>/metrics.json`` ({} when the model was not promoted or it is unreadable)."""
        path = self.promoted_dir(spec_hash) / PROMOTED_METRICS
        try:
            return read_json(path)
        except RunDirError:
            return {}

    def rank_correlation(self) -> tuple[float, float, int]:
        """Kendall tau and Spearman rho between proxy and full mIoU of the promoted models (NaN
        below three models) and how many models they cover."""
        from scipy.stats import kendalltau, spearmanr

        pairs = self.promoted_pairs()
        if len(pairs) < MIN_PAIRS:  # two points always agree or disagree
            return math.nan, math.nan, len(pairs)
        tau = kendalltau(pairs["proxy_miou"], pairs["promoted_miou"]).statistic
        rho = spearmanr(pairs["proxy_miou"], pairs["promoted_miou"]).statistic
        return float(tau), float(rho), len(pairs)

    @property
    def comparison(self) -> pd.DataFrame:
        """The last promotion's verdicts: one row per candidate and baseline, mIoU mean and standard
        deviation over the seeds at the promoted fidelity, cost ratios and the Welch t-test
        (`nas.search.promote.VERDICT_RULE`, also in ``summary["comparison"]["rule"]``)."""
        comparison = self.summary.get("comparison") or {}
        baselines = {b.get("spec_hash"): b for b in comparison.get("baselines", [])}
        rows = []
        for c in comparison.get("candidates", []):
            for v in c.get("versus", []):
                b = baselines.get(v.get("baseline_hash"), {})
                rows.append(
                    {
                        **{k: c.get(k) for k in ("name", "spec_hash", "seeds", "mean", "std")},
                        "fidelity": comparison.get("fidelity"),
                        **{k: v.get(k) for k in ("baseline", "flops_ratio", "params_ratio", "p_value", "beats")},
                        **{f"baseline_{k}": b.get(k) for k in ("seeds", "mean", "std")},
                        "verdict": v.get("verdict"),
                    }
                )
        frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
        numbers = ["mean", "std", "baseline_mean", "baseline_std", "flops_ratio", "params_ratio", "p_value"]
        return frame.astype({**dict.fromkeys(numbers, "float64"), "seeds": "Int64", "baseline_seeds": "Int64"})

    def promoted_pairs(self) -> pd.DataFrame:
        """Promoted models trained successfully at both fidelities."""
        p = self.promoted
        return p[(p["status"] == OK) & p["proxy_miou"].notna() & p["promoted_miou"].notna()].reset_index(drop=True)

    # ------------------------------------------------------------------------------ references
    def input_size(self) -> tuple[int, int] | None:
        """The evaluation input size (H, W) of the run's fidelity: the size its FLOPs were counted at.

        From a model promoted at the run's own fidelity when there is one, else from the synthetic
        task's settings (the same rule as `proxy_tasks.task.build_datasets`); None when neither
        tells (a file dataset's images are not read here).
        """
        for spec_hash in self.promoted["spec_hash"]:
            metrics = self.promoted_metrics(spec_hash)
            size = (metrics.get("full") or {}).get("input_size")
            if metrics.get("fidelity") == self.fidelity and size:
                return int(size[0]), int(size[1])
        task, fidelity = self._task_fidelity()
        if task is None or task.dataset.kind != "synthetic":
            return None
        side = max(16, round(task.dataset.synthetic.image_size * fidelity.resolution))
        return side, side

    def num_classes(self) -> int | None:
        for text in self.ok()["per_class_iou"].dropna():
            try:
                return len(json.loads(text))
            except ValueError:
                continue
        return None

    def _task_fidelity(self):
        from proxy_tasks.task import load_task

        try:  # the task's data may live elsewhere than the run (a colleague's run, another machine)
            task = load_task(self.config.get("task", "synthetic"), self.config.get("data_root"))
            return task, task.fidelity(self.fidelity or "proxy")
        except (UserError, OSError):
            return None, None

    def references(self, cost: str = "flops", names: list[str] | None = None) -> pd.DataFrame:
        """Reference networks for the Pareto axes: the run's baselines, DeepLabv3-ResNet-50 and SpineNet-49.

        A reference the run trained brings its own mIoU and cost. One it did not has no mIoU: its
        FLOPs (or parameters) are those of the published spec at the run's fidelity (width scaled)
        and input size, counted as the trials count theirs; its latency is left out (it would be
        measured on this machine, not where the trials ran). ``note`` says which.
        """
        if cost not in COSTS:
            raise RunError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
        refs = names if names is not None else [*self.config.get("baselines", []), *REFERENCE_NAMES]
        rows, seen = [], set()
        for ref in refs:
            spec = _reference_spec(ref)
            if spec is None:
                rows.append(_reference_row(Path(ref).stem, None, note="spec not found"))
            elif spec.hash not in seen:
                seen.add(spec.hash)
                rows.append(self._reference(ref, spec, cost))
        return pd.DataFrame(rows, columns=REFERENCE_COLUMNS).astype({"trial_id": "Int64"})

    def _reference(self, ref: str, spec: ArchSpec, cost: str) -> dict[str, Any]:
        label = ref if "/" not in ref else spec.name or Path(ref).stem
        ok = self.ok()
        trained = ok[ok["spec_hash"] == spec.hash]
        if len(trained):
            row = trained.iloc[0]
            note = "trained in this run"
            return _reference_row(label, spec.hash, True, row["trial_id"], row["miou"], row[cost], note)
        if cost == "latency_ms":
            return _reference_row(label, spec.hash, note="not trained in this run (latency is hardware-specific)")
        _, fidelity = self._task_fidelity()
        size, classes = self.input_size(), self.num_classes()
        if fidelity is None or size is None or classes is None:
            return _reference_row(label, spec.hash, note="not trained in this run; input size or classes unknown")
        from proxy_tasks.task import scale_spec

        counted = _published_cost(scale_spec(spec, fidelity).to_json(), size, classes)
        return _reference_row(label, spec.hash, cost=counted[cost], note=f"{cost} only (not trained in this run)")


# ---------------------------------------------------------------------------------- loading
def load_run(path: str | Path) -> Run:
    """Read a run directory; works while the search still writes to it (a consistent snapshot)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory")
    trials = _read_trials(path / TABLE_NAME)
    promoted = _read_promoted(path / PROMOTED_TABLE)
    seeds = _read_typed(path / PROMOTED_SEEDS_TABLE, PROMOTED_SEED_COLUMNS, "per-seed promotion table")
    try:
        config = read_config(path) or {}
        summary = read_json(promoted_dir(path) / SUMMARY_NAME)
    except RunDirError as exc:
        raise RunError(str(exc)) from None
    return Run(path=path, trials=trials, promoted=promoted, config=config, summary=summary, promoted_seeds=seeds)


def _read_table(path: Path) -> pa.Table:
    # One read of the whole file: the search replaces it by a rename, so the bytes read belong to
    # one version of the table even if it is replaced while we read.
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path}: no such file (not a run directory, or no trial finished yet)") from None
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RunError(f"{path}: damaged Parquet table ({first_line(exc)})") from None


def _read_trials(path: Path) -> pd.DataFrame:
    table = _read_table(path)
    missing = sorted(set(CORE_COLUMNS) - set(table.column_names))
    if missing:
        raise RunError(f"{path}: not a trials table (missing columns {', '.join(missing)})")
    return with_added_columns(table).to_pandas().sort_values("trial_id", ignore_index=True)


def _read_promoted(path: Path) -> pd.DataFrame:
    return _read_typed(path, PROMOTED_COLUMNS, "promotion table", renamed=EARLIER_PROMOTED_NAMES)


def _read_typed(path: Path, columns: dict[str, str], what: str, renamed: dict[str, str] | None = None) -> pd.DataFrame:
    if not path.exists():
        return _empty(columns)
    frame = _read_table(path).to_pandas()
    frame = frame.rename(columns={old: new for old, new in (renamed or {}).items() if new not in frame.columns})
    missing = sorted(set(columns) - set(frame.columns))
    if missing:
        raise RunError(f"{path}: not a {what} (missing columns {', '.join(missing)})")
    # A column with no value at all is stored as nulls of no type: give the numbers their type.
    return frame.astype({c: t for c, t in columns.items() if t != "object"})


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})


# ---------------------------------------------------------------------------------- rows
def _hashes(row: pd.Series | dict | None) -> list[str]:
    if row is None:
        return []
    value = row.get("parent_hashes")
    if value is None or isinstance(value, float):  # null
        return []
    return [str(h) for h in value]


def _mutation(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _lineage_record(row: pd.Series) -> dict[str, Any]:
    mutation = _mutation(row.get("mutation"))
    return {
        "trial_id": int(row["trial_id"]),
        "name": row["name"],
        "spec_hash": row["spec_hash"],
        "origin": row["origin"],
        "mutation": mutation.get("kind"),
        "mutation_block": mutation.get("block"),
        "mutation_args": mutation.get("args"),
        "objective": _float(row["objective"]),
        "miou": _float(row["miou"]),
        "status": row["status"],
    }


def _missing_record(spec_hash: str) -> dict[str, Any]:
    record = dict.fromkeys(LINEAGE_COLUMNS)
    return {**record, "spec_hash": spec_hash, "origin": "not in this run", "objective": math.nan, "miou": math.nan}


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------------------- references
def _reference_spec(ref: str) -> ArchSpec | None:
    """A baseline as the search resolves it, or None where it cannot be read."""
    from search_spaces import resolve_spec

    try:
        return resolve_spec(ref)
    except SpecError:
        return None


def _reference_row(name, spec_hash, trained=False, trial_id=None, miou=math.nan, cost=math.nan, note=""):
    return {
        "name": name,
        "spec_hash": spec_hash,
        "trained": trained,
        "trial_id": trial_id,
        "miou": _float(miou),
        "cost": _float(cost),
        "note": note,
    }


@lru_cache(maxsize=64)
def _published_cost(spec_json: str, size: tuple[int, int], num_classes: int) -> dict[str, float]:
    """FLOPs and parameters of a (scaled) spec, counted as the trial counts them. Cached: building
    a DeepLabv3-ResNet-50 and tracing its forward takes seconds on a small CPU."""
    from nas.model.builder import build_model
    from nas.model.cost import count_flops, count_params

    model = build_model(ArchSpec.from_json(spec_json), num_classes)
    return {"flops": float(count_flops(model, size)), "params": float(count_params(model))}
