"""The leaderboard of a run: the trials table ranked by objective, as a DataFrame or as text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .run_dir import TABLE_NAME
from .status import DUPLICATE, STATUSES
from .store import read_table

COLUMNS = [
    "trial_id",
    "name",
    "spec_hash",
    "origin",
    "fidelity",
    "status",
    "objective",
    "miou",
    "flops",
    "params",
    "train_seconds",
    "attempts",
]


def trials_frame(run_dir: str | Path) -> pd.DataFrame:
    """Every row of the run's table (pandas), in trial order."""
    return read_table(Path(run_dir) / TABLE_NAME).to_pandas().sort_values("trial_id", ignore_index=True)


def leaderboard(trials: pd.DataFrame, top: int | None = None) -> pd.DataFrame:
    """Trained candidates (duplicates left out) by objective, best first; failed ones last. With a
    fidelity ladder, the top rung's first (the search's ranking), then each lower rung's."""
    trained = trials[trials["status"] != DUPLICATE].copy()
    trained["_rung"] = trained["rung"].fillna(0) if "rung" in trained else 0
    ranked = trained.sort_values(
        ["_rung", "objective", "trial_id"], ascending=[False, False, True], na_position="last"
    ).drop(columns="_rung")
    return ranked.head(top) if top else ranked


def format_leaderboard(trials: pd.DataFrame, top: int = 10) -> str:
    board = leaderboard(trials, top)[COLUMNS].copy()
    board["spec_hash"] = board["spec_hash"].str[:10]
    board["gflops"] = board.pop("flops") / 1e9
    board["params_m"] = board.pop("params") / 1e6
    return board.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")


def status_counts(trials: pd.DataFrame) -> dict[str, int]:
    return {s: int((trials["status"] == s).sum()) for s in STATUSES}
