"""One search's bookkeeping, independent of how trials run: ask, deduplicate, record, resume.

`Search` stands between a controller and whatever trains the candidates (Ray Tune workers, or
a plain function in-process). It

* hands out candidates: candidates interrupted by a crash first (each runs again once), then
  the baselines, then the controller's;
* never trains a network twice: a candidate whose network (``ArchSpec.network_hash``: specs
  that differ only in dead blocks build the same network) is already recorded gets a
  ``duplicate`` row with the first result's metrics, and the controller is told that result; one
  whose twin is still running waits for it;
* records each result as a row of the run's Parquet table and tells the controller;
* saves its state (controller state, pending candidates) atomically after every ask and tell.

Crash safety: the table is written before the controller is told and the state saved, so after
a SIGKILL at any moment the table holds every finished trial once; on resume, a pending
candidate that already has a row is told to the controller (the tell the crash interrupted), the
others run again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nas.atomic import atomic_path
from nas.faults import failpoint
from search_spaces import ArchSpec, SearchSpace

from .base import Candidate, Controller
from .objective import Objective, finite_or_none
from .store import METRICS, TABLE_NAME, ResultsStore

STATE_NAME = "search_state.json"
STATE_VERSION = 1


class SearchStateError(ValueError):
    """A search state file that cannot be resumed; the message names the file."""


@dataclass
class Outcome:
    """What a trial produced: its metrics (TrialResult.to_dict() keys) and where it ran."""

    metrics: dict[str, Any]
    status: str = "ok"  # ok | failed | pruned
    error: str | None = None
    node: str | None = None
    device: str | None = None
    started_at: float | None = None
    tune_trial_id: str | None = None


class Search:
    def __init__(
        self,
        run_dir: str | Path,
        controller: Controller,
        objective: Objective,
        budget: int,
        baselines: tuple[ArchSpec, ...] = (),
        fidelity: str = "proxy",
        seed: int = 0,
        max_duplicates: int = 100,
        on_change: Callable[[Search], None] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.controller = controller
        self.objective = objective
        self.budget = budget
        self.fidelity = fidelity
        self.seed = seed
        self.max_duplicates = max_duplicates
        self.on_change = on_change
        self.store = ResultsStore(self.run_dir / TABLE_NAME)
        self.state_path = self.run_dir / STATE_NAME
        self.next_id = 0
        self.pending: dict[int, Candidate] = {}  # asked, not yet recorded
        self.rerun: list[Candidate] = []  # interrupted by a crash: run again first
        self.parked: list[Candidate] = []  # duplicates of a running candidate
        self.attempts: dict[int, int] = {}
        self.started: dict[int, float] = {}
        self.duplicates_in_a_row = 0
        self.exhausted = False  # the controller only proposes specs already seen
        self.stopped = False  # no new candidates (time limit, or the user stopped the search)
        seeded = {s.hash for s in controller.seed_specs}
        self.baselines = [b for b in baselines if b.hash not in seeded]  # evolution trains its seeds itself
        self.baselines_asked = 0
        if self.state_path.exists():
            self._resume()

    # ------------------------------------------------------------------------------ asking
    @property
    def trained(self) -> int:
        """Candidates trained or training (duplicates excluded): what the budget counts."""
        return sum(r["status"] != "duplicate" for r in self.store.rows) + len(self.pending)

    @property
    def finished(self) -> bool:
        return self.stopped or self.exhausted or (self.trained >= self.budget and not self.rerun)

    def next_candidate(self) -> Candidate | None:
        """The next candidate to train, or None when the budget is spent or the space exhausted."""
        while True:
            if self.stopped:
                return None
            if self.rerun:
                candidate = self.rerun.pop(0)
            elif self.trained >= self.budget or self.exhausted:
                return None
            elif self.baselines_asked < len(self.baselines):
                spec = self.baselines[self.baselines_asked]
                self.baselines_asked += 1
                candidate = Candidate(self.next_id, spec, origin="baseline")
                self.next_id += 1
            else:
                candidate = self.controller.ask(self.next_id)
                self.next_id += 1
            if self._is_duplicate(candidate):
                continue
            self.pending[candidate.id] = candidate
            self.attempts[candidate.id] = self.attempts.get(candidate.id, 0) + 1
            self.started[candidate.id] = time.time()
            self.duplicates_in_a_row = 0
            failpoint("search.ask")
            self.save_state()
            return candidate

    def _is_duplicate(self, candidate: Candidate) -> bool:
        if candidate.origin == "baseline" or candidate.id in self.attempts:
            return False  # baselines and reruns are never deduplicated away
        network = candidate.spec.network_hash
        first = self.store.first_by_network().get(network)
        running = next((c for c in self.pending.values() if c.spec.network_hash == network), None)
        if first is None and running is None:
            return False
        self.duplicates_in_a_row += 1
        if self.duplicates_in_a_row >= self.max_duplicates:
            self.exhausted = True
        if first is not None:
            self._record_duplicate(candidate, first)
        else:
            self.parked.append(candidate)
            self.save_state()
        return True

    def _record_duplicate(self, candidate: Candidate, first: dict[str, Any]) -> None:
        now = _now()
        row = {k: first[k] for k in (*METRICS, "per_class_iou", "history", "objective", "node", "device", "seed")}
        row.update(self._identity(candidate), status="duplicate", duplicate_of=first["trial_id"], attempts=0)
        row.update(started_at=now, finished_at=now)
        if first["status"] != "ok":
            row["error"] = f"duplicate of trial {first['trial_id']} ({first['status']})"
        self.store.append(row)
        self.controller.tell(candidate, self._values(first))
        self.save_state()

    # ------------------------------------------------------------------------------ recording
    def record(self, candidate: Candidate, outcome: Outcome) -> dict[str, Any]:
        """Write the candidate's row, tell the controller, release its waiting duplicates."""
        m = outcome.metrics
        row = {k: m.get(k) for k in METRICS}
        for k in ("miou", "pixel_accuracy", "loss_final", "latency_ms", "peak_memory_mb"):
            row[k] = finite_or_none(row[k])
        row.update(self._identity(candidate))
        values = self.objective.values(m) if outcome.status in ("ok", "pruned") else None
        row.update(
            status=outcome.status,
            error=outcome.error,
            objective=self.objective.score(m) if values is not None else None,
            per_class_iou=json.dumps(m.get("per_class_iou") or {}),
            history=json.dumps(m.get("history") or []),
            seed=self.seed,
            node=outcome.node,
            device=outcome.device or m.get("device"),
            attempts=self.attempts.get(candidate.id, 1),
            tune_trial_id=outcome.tune_trial_id,
            started_at=_utc(outcome.started_at or self.started.get(candidate.id) or time.time()),
            finished_at=_now(),
        )
        if outcome.status == "ok" and values is None:
            row.update(status="failed", error=row["error"] or "no finite mIoU or cost")
        self.store.append(row)  # first: the table is the ground truth after a crash
        failpoint("search.tell")
        self.pending.pop(candidate.id, None)
        if candidate.origin != "baseline":  # baselines are reference points, outside the strategy's view
            self.controller.tell(candidate, values)
        network = candidate.spec.network_hash
        waiting = [c for c in self.parked if c.spec.network_hash == network]
        self.parked = [c for c in self.parked if c.spec.network_hash != network]
        for twin in waiting:
            self._record_duplicate(twin, row)
        self.save_state()
        if self.on_change:
            self.on_change(self)
        return row

    def _identity(self, candidate: Candidate) -> dict[str, Any]:
        return {
            "trial_id": candidate.id,
            "spec_hash": candidate.spec.hash,
            "name": candidate.spec.name,
            "spec_json": candidate.spec.to_json(indent=None),
            "strategy": self.controller.name,
            "origin": candidate.origin,
            "parent_hashes": list(candidate.parents),
            "mutation": json.dumps(candidate.mutation) if candidate.mutation else None,
            "fidelity": self.fidelity,
        }

    def _values(self, row: dict[str, Any]):
        return self.objective.values(row) if row["status"] in ("ok", "pruned") else None

    # ------------------------------------------------------------------------------ state
    def save_state(self) -> None:
        state = {
            "version": STATE_VERSION,
            "strategy": self.controller.name,
            "next_id": self.next_id,
            "baselines_asked": self.baselines_asked,
            "pending": [c.to_dict() for c in [*self.rerun, *self.pending.values()]],
            "parked": [c.to_dict() for c in self.parked],
            "attempts": {str(k): v for k, v in self.attempts.items()},
            "controller": self.controller.state_dict(),
        }
        with atomic_path(self.state_path) as tmp:
            tmp.write_text(json.dumps(state))

    def _resume(self) -> None:
        try:
            state = json.loads(self.state_path.read_text())
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"version {state.get('version')}, expected {STATE_VERSION}")
            if state["strategy"] != self.controller.name:
                raise SearchStateError(
                    f"{self.state_path}: this run was searched with {state['strategy']!r}, "
                    f"not {self.controller.name!r}; resume it with --strategy {state['strategy']}"
                )
            self.controller.load_state_dict(state["controller"])
            self.next_id = int(state["next_id"])
            self.baselines_asked = int(state["baselines_asked"])
            self.attempts = {int(k): int(v) for k, v in state["attempts"].items()}
            pending = [Candidate.from_dict(c) for c in state["pending"]]
            parked = [Candidate.from_dict(c) for c in state["parked"]]
        except SearchStateError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SearchStateError(f"{self.state_path}: unreadable search state ({exc})") from None
        recorded = self.store.by_trial()
        for candidate in pending:
            row = recorded.get(candidate.id)
            if row is None:
                self.rerun.append(candidate)  # it was running when the driver died: once more
            elif candidate.origin != "baseline":
                self.controller.tell(candidate, self._values(row))  # the tell the crash interrupted
        self.controller.recover(self.rerun)
        first = self.store.first_by_network()
        for twin in parked:
            if twin.id in recorded:
                continue
            if twin.spec.network_hash in first:
                self._record_duplicate(twin, first[twin.spec.network_hash])
            else:
                self.rerun.append(twin)  # its original never finished: train it instead
        self.rerun.sort(key=lambda c: c.id)
        self.save_state()

    # ------------------------------------------------------------------------------ views
    def summary(self) -> dict[str, Any]:
        rows = self.store.rows
        counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "pruned", "duplicate")}
        scored = [r for r in rows if r["objective"] is not None]
        best = max(scored, key=lambda r: r["objective"]) if scored else None
        return {**counts, "running": len(self.pending), "budget": self.budget, "best": best}


def evaluate_in_process(search: Search, evaluate: Callable[[Candidate], Outcome]) -> Search:
    """Run ``search`` to its end with ``evaluate`` called on each candidate in turn (no Ray)."""
    while (candidate := search.next_candidate()) is not None:
        search.record(candidate, evaluate(candidate))
    return search


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


__all__ = ["STATE_NAME", "Outcome", "Search", "SearchSpace", "SearchStateError", "evaluate_in_process"]
