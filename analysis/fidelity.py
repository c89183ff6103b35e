"""A fidelity measurement (``nas fidelity``) in a notebook: its tables and the figure that shows one
fidelity's ranking against the reference's.

``load_fidelity(DIR)`` reads a measurement directory (``fidelity.yaml``, ``trials.parquet``) or a
stored results file of the former ``proxy_bench.py signal``; every figure is recomputed from the
rows by `nas.search.fidelity`, the code that prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from nas.common.errors import UserError
from nas.search.correlation import AGREEMENT_KEYS
from nas.search.fidelity import format_summary, read_summary, summarise_file

AGREEMENT_COLUMNS = ["fidelity", "metric", "architectures", "seconds", "n", *AGREEMENT_KEYS]
AGREEMENT_COLUMNS += ["seed_to_seed_tau", "spread_over_noise"]


class FidelityLoadError(UserError):
    """A directory or file that is not a fidelity measurement; one line."""


@dataclass(frozen=True)
class Fidelity:
    """One measurement: ``summary`` as `nas.search.fidelity` makes it, and tables of it."""

    path: Path
    summary: dict[str, Any]

    @property
    def reference(self) -> str:
        return self.summary["reference"]

    @property
    def means(self) -> pd.DataFrame:
        """One row per architecture, one column per fidelity: the mean over seeds of its mIoU (or its
        training-free score), sorted by the reference, best first."""
        frame = pd.DataFrame.from_dict(self.summary["means"], orient="index", dtype="float64")
        frame.index.name = "architecture"
        return frame.sort_values(self.reference, ascending=False, na_position="last")

    @property
    def agreement(self) -> pd.DataFrame:
        """One row per fidelity: its cost per trial (median seconds), Kendall tau and Spearman rho
        against the reference with their bootstrap intervals, its seed-to-seed tau and spread/noise."""
        rows = []
        for fidelity, entry in self.summary["fidelities"].items():
            versus = entry.get("vs_reference") or {}
            seeds = entry.get("seed_to_seed") or {}
            rows.append(
                {
                    "fidelity": fidelity,
                    "metric": entry["metric"],
                    "architectures": entry["architectures"],
                    "seconds": entry.get("seconds"),
                    **{key: versus.get(key) for key in ("n", *AGREEMENT_KEYS)},
                    "seed_to_seed_tau": seeds.get("tau"),
                    "spread_over_noise": entry.get("spread_over_noise"),
                }
            )
        return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS).set_index("fidelity")

    @property
    def versus_baseline(self) -> pd.DataFrame:
        """One row per architecture against the baseline at the reference (empty without one): mean
        and std over seeds, the one-sided Welch p-value, the verdict alone and after Holm's
        correction, and the FLOPs ratio."""
        versus = self.summary.get("versus_baseline") or {}
        columns = ["name", "mean", "std", "seeds", "p_value", "beats", "beats_holm", "flops_ratio"]
        frame = pd.DataFrame(versus.get("architectures", []))
        return frame.reindex(columns=columns).set_index("name")

    def __repr__(self) -> str:
        return f"Fidelity({str(self.path)!r})\n{format_summary(self.summary)}"


def load_fidelity(path: str | Path) -> Fidelity:
    """A measurement directory of ``nas fidelity`` or a stored results JSON file."""
    path = Path(path)
    try:
        summary = read_summary(path) if path.is_dir() else summarise_file(path)
    except UserError as exc:
        raise FidelityLoadError(str(exc)) from None
    return Fidelity(path, summary)


def plot_fidelity(measurement: Fidelity | str | Path, fidelity: str) -> Figure:
    """``fidelity``'s value of each architecture against the reference's mean, labelled, with the
    agreement in the title: where a cheap ranking keeps the reference's order and where it breaks."""
    m = measurement if isinstance(measurement, Fidelity) else load_fidelity(measurement)
    if fidelity not in m.summary["fidelities"] or fidelity == m.reference:
        others = [f for f in m.summary["fidelities"] if f != m.reference]
        raise FidelityLoadError(f"{fidelity!r}: not a measured fidelity other than the reference (one of {others})")
    pairs = m.means[[fidelity, m.reference]].dropna()
    entry = m.summary["fidelities"][fidelity]
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.subplots()
    ax.scatter(pairs[fidelity], pairs[m.reference], s=24, color="tab:blue")
    for name, row in pairs.iterrows():
        ax.annotate(name, (row[fidelity], row[m.reference]), xytext=(3, 3), textcoords="offset points", fontsize=6)
    if (
        entry["metric"] == "score"
        and (pairs[fidelity] > 0).all()
        and pairs[fidelity].max() > 100 * pairs[fidelity].min()
    ):
        ax.set_xscale("log")  # scores such as synflow span tens of orders of magnitude
    versus = entry.get("vs_reference") or {}
    tau = (
        "n/a"
        if versus.get("tau") is None
        else f"{versus['tau']:+.2f} [{versus['tau_low']:+.2f}, {versus['tau_high']:+.2f}]"
    )
    ax.set_title(f"{fidelity} against {m.reference}: Kendall tau {tau}, n {versus.get('n', 0)}", fontsize=9)
    ax.set_xlabel(f"{fidelity} ({entry['metric'] or 'value'})")
    ax.set_ylabel(f"{m.reference} mIoU (mean over seeds)")
    return fig
