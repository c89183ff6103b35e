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
others run again. A duplicate's row may be the one row beyond the saved state (killed before the
state save that follows it); resuming moves past it.

Anything else the two files disagree on cannot come from a crash (a table that lacks trials the
state records as finished, or holds trials the state never started; a table without its state):
opening such a run directory is refused before anything is written, so no result is overwritten.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nas.common.atomic import atomic_path
from nas.common.errors import UserError
from nas.common.faults import failpoint
from search_spaces import ArchSpec, SearchSpace

from .base import Candidate, Controller
from .config import RungConfig
from .ladder import goes_up, rung_of, rung_quotas
from .objective import Objective, finite_or_none
from .run_dir import STATE_NAME, TABLE_NAME
from .status import DUPLICATE, FAILED, OK, SCORED, STATUSES
from .store import ADDED_METRICS, METRICS, ResultsStore, StoreError, metric_values

STATE_VERSION = 1


class SearchStateError(UserError):
    """A search state file that cannot be resumed; the message names the file."""


@dataclass
class Outcome:
    """What a trial produced: its metrics (TrialResult.to_dict() keys) and where it ran."""

    metrics: dict[str, Any]
    status: str = OK  # a row status (`nas.search.status`) other than duplicate
    error: str | None = None
    node: str | None = None
    device: str | None = None
    started_at: float | None = None
    tune_trial_id: str | None = None


class Search:
    """The search of one run directory. With ``time_limit_s``, no new candidate is handed out once that
    many seconds (of ``clock``) have passed since it was opened; the candidates running then finish."""

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
        time_limit_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        ladder: tuple[RungConfig, ...] = (),
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.controller = controller
        self.objective = objective
        self.budget = budget
        self.fidelity = fidelity
        self.ladder = tuple(ladder)
        self.rungs = (*(r.fidelity for r in self.ladder), fidelity)  # cheapest first; the last ranks
        self.seed = seed
        self.max_duplicates = max_duplicates
        self.on_change = on_change
        self.time_limit_s = time_limit_s
        self.clock = clock
        self.opened_at = clock()
        self.store = open_store(self.run_dir)
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
        # A baseline is one on the ladder (it goes up every rung, outside the cap) also where it is
        # evolution's seed, asked by the strategy rather than by the search.
        self.baseline_hashes = frozenset(b.hash for b in baselines)
        self.baselines_asked = 0
        if self.state_path.exists():
            self._resume()
        else:
            check_stateless(self.run_dir, self.store)

    # ------------------------------------------------------------------------------ asking
    @property
    def trained(self) -> int:
        """Candidates trained or training at the cheapest rung (duplicates excluded): what the budget counts."""
        rows = sum(r["status"] != DUPLICATE and rung_of(r) == 0 for r in self.store.rows)
        return rows + sum(c.rung == 0 for c in self.pending.values())

    @property
    def finished(self) -> bool:
        return self.stopped or ((self.exhausted or self.trained >= self.budget) and not self.rerun)

    @property
    def may_go_up(self) -> bool:
        """Whether a running candidate's result may still send it up the ladder (more work may come)."""
        return not self.stopped and any(c.rung < len(self.ladder) for c in self.pending.values())

    def next_candidate(self) -> Candidate | None:
        """The next candidate to train, or None when the budget is spent or the space exhausted."""
        if self.time_limit_s is not None and self.clock() - self.opened_at > self.time_limit_s:
            self.stopped = True
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
        if candidate.origin == "baseline" or candidate.id in self.attempts or candidate.rung > 0:
            return False  # baselines, reruns and candidates going up the ladder are never deduplicated away
        network = candidate.spec.network_hash
        first = self.store.first_by_network().get(network)
        running = next((c for c in self.pending.values() if c.spec.network_hash == network and c.rung == 0), None)
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
        copied = (*METRICS, *ADDED_METRICS, "per_class_iou", "history", "objective", "node", "device", "seed")
        row = {k: first[k] for k in copied}
        row.update(self._identity(candidate), status=DUPLICATE, duplicate_of=first["trial_id"], attempts=0)
        row.update(started_at=now, finished_at=now)
        if first["status"] != OK:
            row["error"] = f"duplicate of trial {first['trial_id']} ({first['status']})"
        self.store.append(row)
        self.controller.tell(candidate, self._values(first))
        self.save_state()

    # ------------------------------------------------------------------------------ recording
    def record(self, candidate: Candidate, outcome: Outcome, retries: int = 0) -> dict[str, Any]:
        """Write the candidate's row, tell the controller, release its waiting duplicates. ``retries``:
        the times it was restarted after a lost worker or node, counted into its ``attempts``."""
        if retries:
            self.attempts[candidate.id] = self.attempts.get(candidate.id, 1) + retries
        m = outcome.metrics
        row = metric_values(m)
        for k in ("miou", "pixel_accuracy", "loss_final", "latency_ms", "peak_memory_mb", "val_loss", "score"):
            row[k] = finite_or_none(row[k])
        row.update(self._identity(candidate))
        values = self.objective.values(m) if outcome.status in SCORED else None
        training_free = finite_or_none(m.get("score")) is not None  # a zero-cost fidelity: no mIoU to expect
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
        if outcome.status == OK and values is None and not training_free:
            row.update(status=FAILED, error=row["error"] or "no finite mIoU or cost")
        self.store.append(row)  # first: the table is the ground truth after a crash
        failpoint("search.tell")
        self.pending.pop(candidate.id, None)
        self._settle(candidate, row)
        network = candidate.spec.network_hash
        waiting = [c for c in self.parked if c.spec.network_hash == network]
        self.parked = [c for c in self.parked if c.spec.network_hash != network]
        for twin in waiting:
            self._record_duplicate(twin, row)
        self.save_state()
        if self.on_change:
            self.on_change(self)
        return row

    def _settle(self, candidate: Candidate, row: dict[str, Any]) -> None:
        """Send the candidate up the ladder (as a new trial, run before new candidates), or tell the
        controller its final result: once per candidate, at the highest rung it reached. A result
        without an objective (a training-free rung's score) is told as no result."""
        if candidate.rung < len(self.ladder):
            upto = next(i for i, r in enumerate(self.store.rows) if r["trial_id"] == row["trial_id"])
            rung, quota = self.ladder[candidate.rung], rung_quotas(self.ladder, self.budget)[candidate.rung]
            baseline = candidate.origin == "baseline" or candidate.spec.hash in self.baseline_hashes
            if goes_up(row, self.store.rows[: upto + 1], rung, baseline, quota, self.baseline_hashes):
                self.rerun.append(replace(candidate, id=self.next_id, rung=candidate.rung + 1))
                self.next_id += 1
                return
        if candidate.origin != "baseline":  # baselines are reference points, outside the strategy's view
            self.controller.tell(candidate, self._values(row))

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
            "fidelity": self.rungs[candidate.rung],
            "rung": candidate.rung,
        }

    def _values(self, row: dict[str, Any]):
        return self.objective.values(row) if row["status"] in SCORED else None

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
        saved = read_state(self.state_path, self.controller, self.store)
        self.next_id = saved.next_id
        self.baselines_asked = saved.baselines_asked
        self.attempts = saved.attempts
        recorded = self.store.by_trial()
        for candidate in saved.pending:
            row = recorded.get(candidate.id)
            if row is None:
                self.rerun.append(candidate)  # it was running when the driver died: once more
            else:
                self._settle(candidate, row)  # the decision or the tell the crash interrupted
        self.controller.recover(self.rerun)
        first = self.store.first_by_network()
        for twin in saved.parked:
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
        counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
        top = len(self.ladder)
        scored = [r for r in rows if r["objective"] is not None and rung_of(r) == top]
        best = max(scored, key=lambda r: r["objective"]) if scored else None
        # What the budget counts: candidates evaluated at the cheapest rung; the ladder's later rungs apart.
        first = sum(r["status"] != DUPLICATE and rung_of(r) == 0 for r in rows)
        higher = sum(rung_of(r) > 0 for r in rows)
        return {
            **counts,
            "running": len(self.pending),
            "budget": self.budget,
            "best": best,
            "first_rung": first,
            "higher_rungs": higher,
        }


# ---------------------------------------------------------------------------------- checking a run directory
RECOVER = "restore {name} from a backup, or start a new run with another --out"


@dataclass
class SavedState:
    """A run's ``search_state.json``, checked against its results table."""

    next_id: int
    baselines_asked: int
    attempts: dict[int, int]
    pending: list[Candidate]  # asked and not recorded when the state was saved (reruns included)
    parked: list[Candidate]
    recorded: int = 0  # trained (non-duplicate) rows of the table: what the budget counts
    unfinished: int = 0  # pending and parked candidates without a row: to run again on resume


def check_run_dir(run_dir: str | Path, controller: Controller) -> SavedState | None:
    """Refuse a run directory whose state and results table do not belong together; writes nothing.

    Returns the saved state (None before the first ask). ``controller`` (of the run's strategy)
    takes the saved controller state, in memory only: pass a throwaway one. The same checks run
    when a `Search` opens the directory.
    """
    run_dir = Path(run_dir)
    store = open_store(run_dir)
    if (run_dir / STATE_NAME).exists():
        return read_state(run_dir / STATE_NAME, controller, store)
    check_stateless(run_dir, store)
    return None


def open_store(run_dir: Path) -> ResultsStore:
    try:
        return ResultsStore(run_dir / TABLE_NAME)
    except StoreError as exc:
        raise SearchStateError(f"{exc}; {RECOVER.format(name=TABLE_NAME)}") from None


def check_stateless(run_dir: Path, store: ResultsStore) -> None:
    """Rows without a state: the state is saved at the first ask, before any row is written."""
    if store.rows:
        raise SearchStateError(
            f"{run_dir / STATE_NAME}: missing, but {store.path} holds {len(store.rows)} trials; "
            + RECOVER.format(name=STATE_NAME)
        )


def read_state(path: Path, controller: Controller, store: ResultsStore) -> SavedState:
    """The saved state at ``path``, checked against ``store``; ``controller`` takes its saved state.

    Writes nothing. `SearchStateError` (one line naming the file) for a state that cannot be read or
    that the table contradicts.
    """
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            raise ValueError("expected a JSON object")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"version {state.get('version')}, expected {STATE_VERSION}")
        if state["strategy"] != controller.name:
            raise SearchStateError(
                f"{path}: this run was searched with {state['strategy']!r}, "
                f"not {controller.name!r}; resume it with --strategy {state['strategy']}"
            )
        controller.load_state_dict(state["controller"])
        saved = SavedState(
            next_id=_count(state["next_id"], "next_id"),
            baselines_asked=_count(state["baselines_asked"], "baselines_asked"),
            attempts={int(k): _count(v, f"attempts[{k}]") for k, v in state["attempts"].items()},
            pending=[Candidate.from_dict(c) for c in state["pending"]],
            parked=[Candidate.from_dict(c) for c in state["parked"]],
        )
        _check_ids(saved)
    except SearchStateError:
        raise
    except RecursionError:
        raise SearchStateError(f"{path}: unreadable search state (nested too deeply)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SearchStateError(f"{path}: unreadable search state ({exc})") from None
    saved.next_id = _check_table(saved, store, path)
    saved.recorded = sum(r["status"] != DUPLICATE for r in store.rows)
    recorded_ids = store.by_trial()
    saved.unfinished = sum(c.id not in recorded_ids for c in (*saved.pending, *saved.parked))
    return saved


def _count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key}: expected a count, got {value!r}")
    return value


def _check_ids(saved: SavedState) -> None:
    """Every id the state names was handed out (below next_id), each candidate once."""
    ids = [c.id for c in (*saved.pending, *saved.parked)]
    if len(set(ids)) != len(ids):
        raise ValueError("a candidate is listed twice among pending and parked")
    beyond = sorted(i for i in (*ids, *saved.attempts) if not 0 <= i < saved.next_id)
    if beyond:
        raise ValueError(f"candidates {_ranges(beyond)} lie outside next_id {saved.next_id}")


def _check_table(saved: SavedState, store: ResultsStore, path: Path) -> int:
    """The state's next_id once the table agrees with the state; SearchStateError where it does not.

    Legitimate crash states: a pending candidate that already has a row (killed between the row and
    the state save), and one duplicate row with id next_id (killed between a duplicate's row, which
    takes the id just asked, and the state save): next_id moves past it.
    """
    table, recover = store.path, RECOVER.format(name=TABLE_NAME)
    ids = [r["trial_id"] for r in store.rows]
    if any(i is None for i in ids):
        raise SearchStateError(f"{table}: a row has no trial id; {recover}")
    twice = sorted(i for i, n in Counter(ids).items() if n > 1)
    if twice:
        raise SearchStateError(f"{table}: trials {_ranges(twice)} have more than one row; {recover}")
    rows = store.by_trial()
    next_id = saved.next_id
    beyond = sorted(i for i in rows if i >= next_id)
    if beyond == [next_id] and rows[next_id]["status"] == DUPLICATE:
        next_id += 1
    never_started = sorted(i for i, r in rows.items() if r["status"] != DUPLICATE and i not in saved.attempts)
    foreign = sorted({i for i in rows if not 0 <= i < next_id} | set(never_started))
    if foreign:
        raise SearchStateError(
            f"{table}: holds trials {_ranges(foreign)} that {path.name} never started (it handed out "
            f"{saved.next_id} trial ids): the two files are not of the same run; restore the matching "
            f"{path.name} or {TABLE_NAME} from a backup, or start a new run with another --out"
        )
    for candidate in saved.pending:
        row = rows.get(candidate.id)
        if row is not None and row["spec_hash"] != candidate.spec.hash:
            raise SearchStateError(
                f"{table}: trial {candidate.id} holds spec {row['spec_hash'][:10]}, but {path.name} asked "
                f"{candidate.spec.hash[:10]} as that trial: the two files are not of the same run; {recover}"
            )
    unaccounted = sorted(set(range(saved.next_id)) - set(rows) - {c.id for c in (*saved.pending, *saved.parked)})
    if unaccounted and not table.exists():
        raise SearchStateError(
            f"{table}: missing, but {path.name} records {len(unaccounted)} finished trials "
            f"({_ranges(unaccounted)}); {recover}"
        )
    if unaccounted:
        raise SearchStateError(
            f"{table}: lacks trials {_ranges(unaccounted)}, which {path.name} records as finished; {recover}"
        )
    return next_id


def _ranges(ids: list[int], most: int = 6) -> str:
    """Sorted ids as ranges: [0, 1, 2, 5] -> "0-2, 5" (the first ``most`` ranges)."""
    spans: list[list[int]] = []
    for i in ids:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans[:most])
    return text + (", ..." if len(spans) > most else "")


def evaluate_in_process(search: Search, evaluate: Callable[[Candidate], Outcome]) -> Search:
    """Run ``search`` to its end with ``evaluate`` called on each candidate in turn (no Ray)."""
    while (candidate := search.next_candidate()) is not None:
        search.record(candidate, evaluate(candidate))
    return search


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


__all__ = ["Outcome", "Search", "SearchSpace", "SearchStateError", "check_run_dir", "evaluate_in_process"]
