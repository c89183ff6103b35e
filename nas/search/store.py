"""The results store: one Parquet table per run, one row per candidate, written atomically.

The table is the run's ground truth: a resumed search trusts it over any other state, `nas show`
and `analysis.load_run` read it, and pandas can read it while the search runs (every write
replaces the file in one rename, so a reader sees the previous table or the new one).

Each row's ``status`` is one of `nas.search.status.STATUSES`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nas.common.atomic import atomic_path
from nas.common.errors import UserError, first_line
from nas.common.faults import failpoint
from search_spaces import ArchSpec

from .status import DUPLICATE, STATUSES

METRICS = (
    "miou",
    "pixel_accuracy",
    "loss_final",
    "params",
    "flops",
    "latency_ms",
    "train_seconds",
    "eval_seconds",
    "images_per_second",
    "peak_memory_mb",
    "steps",
)
# Metrics added after the first tables were written: a table without them still loads (as nulls).
ADDED_METRICS = (
    "val_loss",
    "data_wait_fraction",
    "resumed_from_step",
    "num_classes",
    "input_height",
    "input_width",
    "score",
)

SCHEMA = pa.schema(
    [
        ("trial_id", pa.int64()),  # ask order within the search, from 0
        ("spec_hash", pa.string()),
        ("name", pa.string()),
        ("spec_json", pa.string()),
        ("strategy", pa.string()),  # random | evolution | tpe | nsga2
        ("origin", pa.string()),  # baseline | seed | random | mutation | tpe | nsga2
        ("parent_hashes", pa.list_(pa.string())),
        ("mutation", pa.string()),  # JSON of the Mutation applied to the parent, or null
        ("status", pa.string()),
        ("error", pa.string()),
        ("duplicate_of", pa.int64()),
        ("objective", pa.float64()),  # the ranking score (see Objective.score); null when failed
        ("miou", pa.float64()),
        ("pixel_accuracy", pa.float64()),
        ("loss_final", pa.float64()),
        ("params", pa.int64()),
        ("flops", pa.int64()),
        ("latency_ms", pa.float64()),
        ("train_seconds", pa.float64()),
        ("eval_seconds", pa.float64()),
        ("images_per_second", pa.float64()),
        ("peak_memory_mb", pa.float64()),
        ("steps", pa.int64()),
        ("per_class_iou", pa.string()),  # JSON {class name: IoU}
        ("history", pa.string()),  # JSON [{step, miou, loss}] per evaluation
        ("fidelity", pa.string()),
        ("seed", pa.int64()),
        ("node", pa.string()),
        ("device", pa.string()),
        ("attempts", pa.int64()),  # times the candidate was started (driver resumes and worker retries)
        ("tune_trial_id", pa.string()),
        ("started_at", pa.timestamp("ms", tz="UTC")),
        ("finished_at", pa.timestamp("ms", tz="UTC")),
        ("val_loss", pa.float64()),  # mean cross-entropy over the labelled validation pixels
        ("data_wait_fraction", pa.float64()),  # share of training time spent waiting for batches
        ("resumed_from_step", pa.int64()),  # the step a restarted trial continued from (0: from scratch)
        ("num_classes", pa.int64()),
        ("input_height", pa.int64()),  # the evaluation input size its FLOPs were counted at
        ("input_width", pa.int64()),
        ("score", pa.float64()),  # a training-free fidelity's zero-cost score (proxy_tasks.zero_cost)
        ("rung", pa.int64()),  # the place of its fidelity on the search's ladder (0: the cheapest)
    ]
)
ADDED_COLUMNS = (*ADDED_METRICS, "rung")  # a table written before them loads with nulls
COLUMNS = tuple(SCHEMA.names)
CORE_COLUMNS = tuple(c for c in COLUMNS if c not in ADDED_COLUMNS)  # every table has them


def metric_values(metrics: dict[str, Any]) -> dict[str, Any]:
    """The table's metric columns from a trial's metrics (`proxy_tasks.trial.TrialResult.to_dict`)."""
    row = {k: metrics.get(k) for k in (*METRICS, *ADDED_METRICS)}
    size = metrics.get("input_size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        row["input_height"], row["input_width"] = (int(v) for v in size)
    return row


class StoreError(UserError):
    """A results table that cannot be read or a row that does not fit it."""


class ResultsStore:
    """Rows in memory, mirrored to ``RUN_DIR/trials.parquet`` after every change."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self._network_of: dict[str, str] = {}  # spec hash -> network hash, parsed once per spec
        if self.path.exists():
            self.rows = read_rows(self.path)

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, row: dict[str, Any]) -> None:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise StoreError(f"unknown result columns: {', '.join(sorted(unknown))}")
        if row.get("status") not in STATUSES:
            raise StoreError(f"trial {row.get('trial_id')}: status {row.get('status')!r} not in {STATUSES}")
        if any(r["trial_id"] == row["trial_id"] for r in self.rows):
            raise StoreError(f"trial {row['trial_id']} is already recorded")
        self.rows.append({c: row.get(c) for c in COLUMNS})
        self.write()

    def write(self) -> None:
        write_rows(self.path, self.rows)

    def by_trial(self) -> dict[int, dict[str, Any]]:
        return {r["trial_id"]: r for r in self.rows}

    def first_by_network(self, rung: int = 0) -> dict[str, dict[str, Any]]:
        """The first trained (non-duplicate) row of every network (`ArchSpec.network_hash`) at ``rung``
        of the search's fidelity ladder (a table without rungs has only rung 0)."""
        found: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            if r["status"] != DUPLICATE and (r.get("rung") or 0) == rung:
                network = self._network_of.get(r["spec_hash"])
                if network is None:
                    network = self._network_of[r["spec_hash"]] = ArchSpec.from_json(r["spec_json"]).network_hash
                found.setdefault(network, r)
        return found


def write_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    try:
        table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        raise StoreError(f"a result row does not fit the table: {exc}") from None
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
        failpoint("store.write")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    return read_table(path).to_pylist()


def read_table(path: str | Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise StoreError(f"{path}: no results table") from None
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(f"{path}: unreadable results table ({first_line(exc)})") from None
    missing = set(CORE_COLUMNS) - set(table.column_names)
    if missing:
        raise StoreError(f"{path}: not a results table (missing columns {', '.join(sorted(missing))})")
    return with_added_columns(table)


def with_added_columns(table: pa.Table) -> pa.Table:
    """``table`` with the columns added since it was written, all null (an older run's table)."""
    for name in ADDED_COLUMNS:
        if name not in table.column_names:
            table = table.append_column(SCHEMA.field(name), pa.nulls(len(table), SCHEMA.field(name).type))
    return table
