"""Failpoints: named places where a test can make the process die, to check what survives a crash.

A testing facility; it does nothing in normal use. ``failpoint(name)`` returns at once unless the
environment variable ``NAS_FAILPOINTS`` lists ``name``. Its comma-separated entries are ``name``
(fire the first time the point is reached) or ``name@N`` (fire the N-th time it is reached in this
process). Firing kills the process with SIGKILL, as the kernel's OOM killer or a lost node would: no
``finally`` block, no atexit handler, no flush runs.

A restarted worker or a resumed driver inherits the environment, so it would die at the same
point again. With ``NAS_FAILPOINT_DIR`` set, a point fires at most once across all processes: only
while the marker file ``<dir>/<name>`` does not exist, and it creates the marker just before
the kill.

    NAS_FAILPOINTS=search.tell@2 NAS_FAILPOINT_DIR=/tmp/markers nas search --config search.yaml --out run

The points: ``trial.after_final_checkpoint`` (a worker, its final evaluation checkpointed and
reported), ``trial.measure_cost`` (a worker, measuring the trained model's cost), ``search.ask``
(the driver, a candidate handed out but not yet in the saved state), ``search.tell`` (the driver,
a row written but the controller not told nor the state saved) and ``store.write`` (the driver,
the new table written beside the old one, not yet renamed over it).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

FAILPOINTS_VAR = "NAS_FAILPOINTS"
MARKER_DIR_VAR = "NAS_FAILPOINT_DIR"

_reached: Counter[str] = Counter()  # times each listed point was reached in this process


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL if ``NAS_FAILPOINTS`` asks for it here (see the module docstring)."""
    listed = os.environ.get(FAILPOINTS_VAR)
    if not listed:
        return
    wanted = _wanted_reach(listed, name)
    if wanted is None:
        return
    _reached[name] += 1
    if _reached[name] != wanted:
        return
    markers = os.environ.get(MARKER_DIR_VAR)
    if markers and not _claim(Path(markers) / name):
        return  # fired before, in this or another process
    os.kill(os.getpid(), signal.SIGKILL)


def _wanted_reach(listed: str, name: str) -> int | None:
    """Which reach of ``name`` fires (1 for the first), or None when ``listed`` does not name it."""
    for entry in listed.split(","):
        point, _, reach = entry.strip().partition("@")
        if point != name:
            continue
        if not reach:
            return 1
        if not reach.isdigit() or int(reach) < 1:
            raise ValueError(f"{FAILPOINTS_VAR}: {entry.strip()!r}: the count after @ must be a whole number >= 1")
        return int(reach)
    return None


def _claim(marker: Path) -> bool:
    """Create ``marker``; False if it exists already (exclusive creation: only one process wins)."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
