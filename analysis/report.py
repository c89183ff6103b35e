"""``nas report RUN_DIR``: a self-contained HTML report of a search run.

`write_report` writes ``RUN_DIR/report/index.html`` (or ``--out DIR/index.html``) with the tables
as HTML and the figures as PNG files beside it, linked by relative paths: the folder can be copied
or served as it is, and it needs nothing from the network (no external CSS or JavaScript).

Heavy imports (pandas, matplotlib) happen inside the functions: the ``nas`` command imports this
module to build its parser.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from nas.common.errors import UserError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from .run import Run

INDEX_NAME = "index.html"
TOP_ROWS = 20
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f3f3f3; } td:nth-child(2), th:nth-child(2) { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #666; font-size: 0.9em; } dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: 600; } dd { margin: 0; }
"""


class ReportError(UserError):
    """A report that cannot be written; one line naming the path."""


def write_report(run_dir: str | Path, out: str | Path | None = None, top: int = 3) -> Path:
    """Write the report of the run in ``run_dir`` to ``out`` (default ``RUN_DIR/report``);
    returns the path of ``index.html``. A run still in progress is reported as it stands."""
    from nas.common.atomic import atomic_path
    from nas.search.run_dir import REPORT_DIR

    from .run import load_run

    run = load_run(run_dir)
    folder = Path(out) if out is not None else run.path / REPORT_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{folder}: cannot create the report folder ({exc.strerror or exc})") from None
    body = "\n".join(_sections(run, folder, top))
    page = (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(run.name)}: search report</title>"
        f"<style>{STYLE}</style></head>\n<body>\n<h1>Search report: {_e(run.name)}</h1>\n{body}\n</body></html>\n"
    )
    index = folder / INDEX_NAME
    try:
        with atomic_path(index) as tmp:
            tmp.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"{index}: cannot write ({exc.strerror or exc})") from None
    return index


def _sections(run: Run, folder: Path, top: int) -> list[str]:
    from . import plots

    parts = [_overview(run)]
    if run.trials.empty:
        return [*parts, "<p class='note'>No trial has finished yet.</p>"]
    parts.append(_section("Leaderboard", _table(_board(run.leaderboard(TOP_ROWS)))))
    if run.rungs:
        parts.append(_ladder_section(run))
    parts.append(
        _section(
            "Pareto front",
            _pareto_tables(run),
            _image(folder, "pareto_flops.png", lambda: plots.plot_pareto(run, "flops")),
        )
    )
    if (run.ok()["latency_ms"] > 0).any():
        parts.append(
            _section(
                "Pareto front (latency)",
                _image(folder, "pareto_latency.png", lambda: plots.plot_pareto(run, "latency_ms")),
            )
        )
    parts.append(_section("Best so far", _image(folder, "best_so_far.png", lambda: plots.plot_best_so_far(run))))
    parts.append(
        _section(
            f"Topologies of the top {top}", _image(folder, "topologies.png", lambda: plots.plot_topologies(run, top))
        )
    )
    parts.append(_lineage_section(run, folder))
    parts.append(
        _section(
            f"Per-class IoU of the top {top}",
            _image(folder, "per_class_iou.png", lambda: plots.plot_per_class_iou(run, top)),
        )
    )
    parts.append(_promotion_section(run, folder))
    return parts


# ---------------------------------------------------------------------------------- sections
def _overview(run: Run) -> str:
    config = run.config
    counts = run.trials["status"].value_counts().to_dict()
    items = {
        "run directory": str(run.path),
        "config": config.get("name", "-"),
        "task / fidelity": f"{config.get('task', '-')} / "
        + " -> ".join([*(r.fidelity for r in run.rungs), run.fidelity or "-"]),
        "strategy": (config.get("strategy") or {}).get("name", "-"),
        "objective": ", ".join(f"{k} {v}" for k, v in (config.get("objective") or {}).items() if v is not None),
        "budget": f"{(config.get('budget') or {}).get('trials', '-')} trials",
        "trials": f"{len(run.trials)} (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")",
        "promoted": str(len(run.promoted)),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items.items())
    return f"<dl>{rows}</dl>"


def _ladder_section(run: Run) -> str:
    """Each rung's rank agreement with the next; a rung whose tau interval includes 0 is flagged."""
    ladder = run.ladder
    flagged = ladder[ladder["includes_zero"].fillna(False).astype(bool)]
    note = (
        f"<p class='note'>The tau interval includes 0 for {', '.join(flagged['fidelity'])}: at these sizes its "
        "ranking cannot be told from chance.</p>"
        if len(flagged)
        else ""
    )
    text = (
        "<p>Every candidate is evaluated at the cheapest rung; the best share of each rung goes up to the next. "
        "Kendall tau and Spearman rho between a rung and the next, over the candidates (and baselines) that "
        "reached both, with 90% bootstrap intervals.</p>"
    )
    return _section("Fidelity ladder", text + _table(ladder) + note)


def _pareto_tables(run: Run) -> str:
    front = run.pareto("flops")
    refs = run.references("flops")
    return (
        "<p>Candidates on the front of mIoU (up) against FLOPs (down):</p>"
        + _table(_board(front[[c for c in run.leaderboard().columns if c in front.columns]]))
        + "<p>Reference networks (FLOPs at the run's fidelity and input size; no mIoU unless trained here):</p>"
        + _table(_board(refs.rename(columns={"cost": "flops"})))
    )


def _lineage_section(run: Run, folder: Path) -> str:
    from . import plots

    target = _lineage_target(run)
    if target is None:
        return _section("Lineage", "<p class='note'>No successful trial.</p>")
    chain = run.lineage(target)
    title = f"Lineage of {chain.iloc[-1]['name']} (the best candidate with ancestors, else the best)"
    return _section(title, _table(chain), _image(folder, "lineage.png", lambda: plots.plot_lineage(run, target)))


def _lineage_target(run: Run) -> int | None:
    """The best successful candidate that has a parent (its lineage says something), else the best."""
    board = run.leaderboard(all_columns=True)
    board = board[board["status"] == "ok"]
    if board.empty:
        return None
    with_parents = board[board["parent_hashes"].map(lambda p: p is not None and len(p) > 0)]
    return int((with_parents if len(with_parents) else board).iloc[0]["trial_id"])


def _promotion_section(run: Run, folder: Path) -> str:
    from . import plots

    if run.promoted.empty:
        return _section("Promotion", "<p class='note'>Not promoted yet (<code>nas promote RUN_DIR</code>).</p>")
    tau, rho, n = run.rank_correlation()
    fidelity = str(run.promoted["fidelity"].dropna().iloc[0]) if run.promoted["fidelity"].notna().any() else "full"
    text = (
        f"<p>Kendall τ = {_num(tau)}, Spearman ρ = {_num(rho)} between proxy and {_e(fidelity)} mIoU "
        f"over {n} models (the promoted_* columns hold the {_e(fidelity)}-fidelity metrics).</p>"
    )
    table = run.promoted.assign(spec_hash=run.promoted["spec_hash"].str[:10])
    image = _image(folder, "proxy_vs_full.png", lambda: plots.plot_proxy_vs_full(run))
    return _section(f"Promotion: proxy against {fidelity} fidelity", text, _table(table), _comparison(run), image)


def _comparison(run: Run) -> str:
    """The candidates against the baselines over seeds, with the rule the verdicts follow."""
    comparison = run.comparison
    if comparison.empty:
        return "<p class='note'>No comparison with the baselines (promoted before promotions compared).</p>"
    rule = (run.summary.get("comparison") or {}).get("rule", "")
    table = comparison.assign(spec_hash=comparison["spec_hash"].str[:10])
    verdicts = "".join(f"<p class='verdict'>{_e(line)}</p>\n" for line in winner_verdicts(comparison))
    return f"<h3>Against the baselines</h3>\n{verdicts}<p>Rule: {_e(rule)}.</p>\n" + _table(table)


def winner_verdicts(comparison: pd.DataFrame) -> list[str]:
    """One plain sentence per baseline: does the promoted candidate with the best mean mIoU beat it
    beyond seed noise, by how much, and at what share of its FLOPs."""
    import pandas as pd

    lines = []
    for baseline, rows in comparison.groupby("baseline", sort=False):
        rows = rows.dropna(subset=["mean"])
        if rows.empty:
            continue
        best = rows.sort_values("mean", ascending=False).iloc[0].map(lambda v: math.nan if v is None else v)
        flops = "-" if pd.isna(best["flops_ratio"]) else f"{best['flops_ratio']:.2f}x"
        lines.append(
            f"The winner, {best['name']}, {best['verdict']}: mIoU {_num(best['mean'])} ± {_num(best['std'])} "
            f"against {_num(best['baseline_mean'])} ± {_num(best['baseline_std'])} over "
            f"{best['seeds']} and {best['baseline_seeds']} seeds at {best['fidelity']} fidelity "
            f"(one-sided Welch p {_num(best['p_value'])}), at {flops} the FLOPs of {baseline}."
        )
    return lines


# ---------------------------------------------------------------------------------- helpers
def _section(title: str, *parts: str) -> str:
    return f"<h2>{_e(title)}</h2>\n" + "\n".join(parts)


def _image(folder: Path, name: str, make: Callable[[], Figure]) -> str:
    """Save the figure ``make()`` draws as ``folder/name`` and link it; a figure the run cannot
    draw yet (say, no successful trial) becomes a note instead."""
    from .run import RunError

    try:
        fig = make()
    except RunError as exc:
        return f"<p class='note'>No figure: {_e(str(exc))}</p>"
    path = folder / name
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise ReportError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return f"<img src='{_e(name)}' alt='{_e(name)}'>"


def _board(frame: pd.DataFrame) -> pd.DataFrame:
    """Short hashes, GFLOPs and millions of parameters, for reading."""
    frame = frame.copy()
    if "spec_hash" in frame:
        frame["spec_hash"] = frame["spec_hash"].str[:10]
    if "flops" in frame:
        frame["gflops"] = frame.pop("flops") / 1e9
    if "params" in frame:
        frame["params_m"] = frame.pop("params") / 1e6
    return frame


def _table(frame: pd.DataFrame) -> str:
    import pandas as pd

    frame = frame.copy()
    for column in frame.columns:  # nullable integers print missing values as <NA>: say "-" as elsewhere
        if isinstance(frame[column].dtype, pd.Int64Dtype):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), "-")
    return frame.to_html(index=False, escape=True, na_rep="-", border=0, float_format=_num)


def _num(value: float) -> str:
    return "-" if value != value else f"{value:.4g}"  # NaN is not equal to itself


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
