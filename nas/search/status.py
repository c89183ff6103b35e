"""The statuses of a results row, and the one translation of a trial's outcome into them.

A row is ``ok`` (trained and evaluated), ``failed`` (raised, diverged, ran out of memory, or its
worker was lost more often than the retries allow; ``error`` says which), ``pruned`` (stopped early
by the scheduler; its metrics are the last evaluation's) or ``duplicate`` (not trained again: see
`nas.search.search`). A trial (`proxy_tasks.trial.TrialResult.status`) ends ok, diverged, oom or
pruned; whatever else it says, or when it says nothing, the row is ``failed``.

A promotion's rows (`nas.search.promote`) may also be ``missing``: a (model, seed) not trained (yet),
never a search row's status.
"""

from __future__ import annotations

from typing import Any

OK, FAILED, PRUNED, DUPLICATE = "ok", "failed", "pruned", "duplicate"
STATUSES = (OK, FAILED, PRUNED, DUPLICATE)
MISSING = "missing"  # promotion only: a (model, seed) with no metrics.json (not trained yet, or interrupted)
SCORED = (OK, PRUNED)  # rows whose metrics the objective scores and the controller is told
TRIAL_TO_ROW = {"ok": OK, "pruned": PRUNED, "diverged": FAILED, "oom": FAILED}
LOST = "its worker or node was lost more often than the retries allow"
STOPPED_EARLY = "stopped early by ASHA"


def row_status(trial_status: Any) -> str:
    """The row status of a trial that ended with ``trial_status`` (a `TrialResult` status, or the
    row status a worker already reported)."""
    return TRIAL_TO_ROW.get(trial_status, FAILED)


def tune_status(result: dict[str, Any], error: bool) -> tuple[str, str | None]:
    """The row status and error of a Tune trial from its last reported ``result``: ``error`` when Tune
    gave up on it (lost workers), pruned when its last report was not the final one (the scheduler
    stopped it), else the status the trial reported."""
    if error:
        return FAILED, LOST
    if not result.get("final"):
        return PRUNED, STOPPED_EARLY
    return row_status(result.get("status")), result.get("error") or None
