"""Analysis for notebooks: every plot is a function returning a matplotlib Figure.

``load_run(RUN_DIR)`` reads a search run into DataFrames; the ``plot_*`` functions draw it;
``write_report(RUN_DIR)`` writes ``RUN_DIR/report/index.html``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .topology import draw_topology

# The names below are imported on first use (PEP 562): the `nas` command imports `analysis.report`
# to build its parser, and must not pay for pandas, pyarrow and matplotlib on every start.
_LAZY = {
    "Run": "run",
    "RunError": "run",
    "load_run": "run",
    "plot_best_so_far": "plots",
    "plot_lineage": "plots",
    "plot_pareto": "plots",
    "plot_per_class_iou": "plots",
    "plot_proxy_vs_full": "plots",
    "plot_topologies": "plots",
    "ReportError": "report",
    "write_report": "report",
}

__all__ = ["draw_topology", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
