"""Analysis for notebooks: every plot is a function returning a matplotlib Figure.

``load_run(RUN_DIR)`` reads a search run into DataFrames; the ``plot_*`` functions draw it;
``write_report(RUN_DIR)`` writes ``RUN_DIR/report/index.html``. ``load_fidelity(DIR)`` reads a
fidelity measurement (``nas fidelity``); ``plot_fidelity`` draws one fidelity against its reference.
"""

from __future__ import annotations

from .fidelity import Fidelity, FidelityLoadError, load_fidelity, plot_fidelity
from .plots import (
    plot_best_so_far,
    plot_lineage,
    plot_pareto,
    plot_per_class_iou,
    plot_proxy_vs_full,
    plot_topologies,
)
from .report import ReportError, write_report
from .run import Run, RunError, load_run
from .topology import draw_topology

__all__ = [
    "Fidelity",
    "FidelityLoadError",
    "ReportError",
    "Run",
    "RunError",
    "draw_topology",
    "load_fidelity",
    "load_run",
    "plot_best_so_far",
    "plot_fidelity",
    "plot_lineage",
    "plot_pareto",
    "plot_per_class_iou",
    "plot_proxy_vs_full",
    "plot_topologies",
    "write_report",
]
