"""Plots of a search run: every function takes a `Run` (or a run directory) and returns a Figure.

Figures are made with `matplotlib.figure.Figure`, not pyplot: nothing is registered globally, so a
notebook shows each figure once (as the cell's value) and a report can make many without leaking
them. Saving needs no backend set up (``fig.savefig`` renders with Agg).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import networkx as nx
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from .run import Run, RunError, load_run
from .topology import draw_topology

COST_LABELS = {"flops": "FLOPs", "latency_ms": "latency (ms)", "params": "parameters"}
RunLike = Run | str | Path


def plot_pareto(run: RunLike, cost: str = "flops", references: bool = True) -> Figure:
    """mIoU against ``cost`` (flops, latency_ms or params): every successful trial, the Pareto
    front as a staircase, and the reference networks (`Run.references`): a star where the run
    trained one, a dashed vertical line where only its cost is known (no mIoU)."""
    run = _run(run)
    points = run.candidates(cost)
    if points.empty:
        raise RunError(f"{run.path}: no successful trial with a {cost} value to plot")
    fig, ax = _figure(7.5, 4.8)
    ax.scatter(points[cost], points["miou"], s=26, color="0.6", zorder=2, label=f"trials ({len(points)})")
    front = run.pareto(cost)
    # steps-post: between two front points the best mIoU reachable is the cheaper point's.
    ax.plot(
        front[cost],
        front["miou"],
        drawstyle="steps-post",
        marker="o",
        color="tab:red",
        zorder=3,
        label=f"Pareto front ({len(front)})",
    )
    for _, row in front.iterrows():
        ax.annotate(row["name"], (row[cost], row["miou"]), xytext=(4, 4), textcoords="offset points", fontsize=7)
    xs = list(points[cost])
    if references:
        xs += _draw_references(fig, ax, run.references(cost), cost)
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    if cost != "latency_ms":
        ax.xaxis.set_major_formatter(EngFormatter())
    ax.set_xlabel(COST_LABELS[cost] + ("" if cost == "latency_ms" else f" (at {run.fidelity} fidelity)"))
    ax.set_ylabel("mIoU")
    ax.set_title(f"{run.name}: mIoU against {COST_LABELS[cost]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _draw_references(fig: Figure, ax, refs: pd.DataFrame, cost: str) -> list[float]:
    """Draw the reference rows; returns their x values (for the axis scale)."""
    trained = refs[refs["trained"]]
    if len(trained):
        ax.scatter(
            trained["cost"],
            trained["miou"],
            marker="*",
            s=180,
            color="gold",
            edgecolors="black",
            zorder=4,
            label="reference (trained in this run)",
        )
        for _, r in trained.iterrows():
            ax.annotate(r["name"], (r["cost"], r["miou"]), xytext=(6, -10), textcoords="offset points", fontsize=7)
    cost_only = refs[~refs["trained"] & refs["cost"].notna()]
    for _, r in cost_only.iterrows():
        ax.axvline(
            r["cost"],
            color="tab:purple",
            linestyle="--",
            linewidth=1.1,
            zorder=1,
            label=f"{r['name']}: {COST_LABELS[cost]} only, not trained (no mIoU)",
        )
        ax.text(
            r["cost"],
            0.02,
            f" {r['name']}",
            transform=ax.get_xaxis_transform(),
            rotation=90,
            fontsize=7,
            color="tab:purple",
            va="bottom",
        )
    missing = refs[~refs["trained"] & refs["cost"].isna()]
    if len(missing):
        fig.text(
            0.01,
            0.005,
            "not shown: " + "; ".join(f"{r['name']} ({r['note']})" for _, r in missing.iterrows()),
            fontsize=6,
            color="0.35",
            va="bottom",
        )
    return [*trained["cost"], *cost_only["cost"]]


def plot_best_so_far(runs: RunLike | Iterable[RunLike]) -> Figure:
    """Best objective against the number of trained trials, one staircase per strategy (and run);
    the faint dots are each trial's own objective. Pass several runs to compare strategies."""
    loaded = [_run(r) for r in ([runs] if isinstance(runs, (Run, str, Path)) else runs)]
    frames = [r.best_so_far() for r in loaded]
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if curves.empty:
        raise RunError("no trained trial to plot: " + ", ".join(str(r.path) for r in loaded))
    fig, ax = _figure(7.0, 4.3)
    several_runs = curves["run"].nunique() > 1
    for (run_name, strategy), curve in curves.groupby(["run", "strategy"], sort=False):
        label = f"{strategy} ({run_name})" if several_runs else str(strategy)
        (line,) = ax.plot(curve["trial"], curve["best"], drawstyle="steps-post", linewidth=2, label=label)
        ax.scatter(curve["trial"], curve["objective"], s=14, alpha=0.35, color=line.get_color())
    kinds = {r.objective_kind for r in loaded}
    ax.set_xlabel("trained trials (in finishing order)")
    ax.set_ylabel(f"best objective ({', '.join(sorted(kinds))})")
    ax.set_title("best so far" + ("" if several_runs else f": {loaded[0].name}"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_proxy_vs_full(run: RunLike) -> Figure:
    """Proxy against full-fidelity mIoU of the promoted models, with Kendall tau and Spearman rho
    (scipy.stats) in the title: how far the proxy's ranking can be trusted."""
    run = _run(run)
    pairs = run.promoted_pairs()
    if pairs.empty:
        raise RunError(f"{run.path}: no promoted model with proxy and full mIoU (run `nas promote` first)")
    tau, rho, n = run.rank_correlation()
    fidelity = str(pairs["fidelity"].iloc[0])
    fig, ax = _figure(5.8, 5.0)
    ax.scatter(pairs["proxy_miou"], pairs["promoted_miou"], s=40, color="tab:blue", zorder=3)
    for _, row in pairs.iterrows():
        ax.annotate(
            row["name"],
            (row["proxy_miou"], row["promoted_miou"]),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=7,
        )
    low = min(pairs["proxy_miou"].min(), pairs["promoted_miou"].min())
    high = max(pairs["proxy_miou"].max(), pairs["promoted_miou"].max())
    ax.plot([low, high], [low, high], linestyle=":", color="0.5", label="equal mIoU")
    ax.set_xlabel(f"proxy mIoU ({run.fidelity} fidelity)")
    ax.set_ylabel(f"mIoU at {fidelity} fidelity")
    ax.set_title(f"proxy vs {fidelity}: Kendall τ = {_fmt(tau)}, Spearman ρ = {_fmt(rho)} (n = {n})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_per_class_iou(run: RunLike, top: int = 3) -> Figure:
    """IoU per class of the ``top`` models: one panel at the search fidelity (best by objective)
    and, after promotion, one at the promoted fidelity (best by full mIoU)."""
    run = _run(run)
    panels = [(f"{run.fidelity} fidelity (search)", _proxy_ious(run, top))]
    promoted = _full_ious(run, top)
    if promoted:
        panels.append((f"{run.promoted['fidelity'].iloc[0]} fidelity (promoted)", promoted))
    if not panels[0][1]:
        raise RunError(f"{run.path}: no successful trial with per-class IoU to plot")
    classes = list(dict.fromkeys(c for _, models in panels for _, ious in models for c in ious))
    fig, axes = _figure(max(6.5, 0.9 * len(classes) + 2.5), 3.4 * len(panels), rows=len(panels))
    for ax, (title, models) in zip(axes, panels):
        width = 0.8 / len(models)
        for k, (label, ious) in enumerate(models):
            xs = [i - 0.4 + width * (k + 0.5) for i in range(len(classes))]
            ax.bar(xs, [ious.get(c, math.nan) for c in classes], width=width, label=label)
        ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("IoU")
        ax.set_ylim(0, 1)
        ax.set_title(f"per-class IoU, {title}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _proxy_ious(run: Run, top: int) -> list[tuple[str, dict[str, float]]]:
    board = run.leaderboard(all_columns=True)
    board = board[(board["status"] == "ok") & board["per_class_iou"].notna()].head(top)
    return [(f"{r['name']} (mIoU {r['miou']:.3f})", json.loads(r["per_class_iou"])) for _, r in board.iterrows()]


def _full_ious(run: Run, top: int) -> list[tuple[str, dict[str, float]]]:
    models = []
    for _, r in run.promoted_pairs().sort_values("promoted_miou", ascending=False).iterrows():
        # promoted/<hash>/ holds one seed's training: label its IoUs with that seed's mIoU, not the mean over seeds.
        record = run.promoted_metrics(r["spec_hash"])
        full = record.get("full") or {}
        if full.get("per_class_iou") and full.get("miou") is not None:
            seed = "" if record.get("seed") is None else f"seed {record['seed']}, "
            models.append((f"{r['name']} ({seed}mIoU {full['miou']:.3f})", full["per_class_iou"]))
    return models[:top]


def plot_topologies(run: RunLike, top: int = 3) -> Figure:
    """The ``top`` successful candidates drawn as `nas arch draw` draws them (x = block order,
    y = level, colour = dilation, edges = connections), one panel each, best first."""
    run = _run(run)
    board = run.leaderboard(all_columns=True)
    board = board[board["status"] == "ok"].head(top)
    if board.empty:
        raise RunError(f"{run.path}: no successful trial to draw")
    specs = [run.spec(int(t)) for t in board["trial_id"]]
    longest = max(len(s.blocks) for s in specs)
    fig, axes = _figure(max(6.0, 0.45 * longest + 2) + 2.2, 3.8 * len(specs), rows=len(specs))
    for rank, (ax, spec, (_, row)) in enumerate(zip(axes, specs, board.iterrows()), start=1):
        title = (
            f"#{rank} {row['name']} ({row['spec_hash'][:10]}): objective {row['objective']:.4f}, "
            f"{_eng(row['flops'])}FLOPs"
        )
        draw_topology(spec, ax=ax, title=title)
    return fig


def plot_lineage(run: RunLike, trial: int | str) -> Figure:
    """The ancestry of a candidate: each box a candidate (name, trial id, objective), each arrow
    parent -> child labelled with the mutation applied (kind and block); the candidate asked
    for is red. Drawn left to right, oldest first."""
    run = _run(run)
    graph = run.lineage_graph(trial)
    pos = _layered_layout(graph)
    depth = int(max(x for x, _ in pos.values())) + 1
    breadth = max(sum(1 for x, _ in pos.values() if x == d) for d in range(depth))
    fig, ax = _figure(max(4.5, 2.6 * depth), max(2.6, 1.5 * breadth + 1))
    colours = ["tab:red" if graph.nodes[n]["target"] else "tab:blue" for n in graph]
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=colours, node_size=500, alpha=0.85)
    nx.draw_networkx_edges(graph, pos, ax=ax, arrows=True, arrowsize=14, node_size=500)
    labels = {n: _node_label(graph.nodes[n]) for n in graph}
    nx.draw_networkx_labels(graph, pos, labels, ax=ax, font_size=7, verticalalignment="top")
    edge_labels = {(u, v): _edge_label(d) for u, v, d in graph.edges(data=True)}
    nx.draw_networkx_edge_labels(graph, pos, edge_labels, ax=ax, font_size=7, rotate=False)
    target = next(n for n in graph if graph.nodes[n]["target"])
    ax.set_title(f"lineage of {graph.nodes[target]['name']} ({target[:10]})")
    ax.margins(0.25, 0.35)
    ax.set_axis_off()
    fig.tight_layout()
    return fig


def _layered_layout(graph: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """x = generation (longest path from a root), y = spread within the generation."""
    generation: dict[str, int] = {}
    for node in nx.topological_sort(graph):
        generation[node] = max((generation[p] + 1 for p in graph.predecessors(node)), default=0)
    pos = {}
    for g in set(generation.values()):
        members = sorted((n for n in graph if generation[n] == g), key=lambda n: graph.nodes[n]["trial_id"] or -1)
        for k, node in enumerate(members):
            pos[node] = (float(g), (len(members) - 1) / 2 - k)
    return pos


def _node_label(data: dict) -> str:
    if data["trial_id"] is None:
        return f"\n\n{data['spec_hash'][:10]}\n(not in this run)"
    return f"\n\n{data['name']}\n#{data['trial_id']} {data['origin']}\nobjective {_fmt(data['objective'])}"


def _edge_label(data: dict) -> str:
    block = data.get("block")
    return data["kind"] if block is None else f"{data['kind']}\nblock {block}"


# ---------------------------------------------------------------------------------- helpers
def _run(run: RunLike) -> Run:
    return run if isinstance(run, Run) else load_run(run)


def _figure(width: float, height: float, rows: int | None = None):
    """A figure and its one axes, or (with ``rows``) a list of that many stacked axes."""
    fig = Figure(figsize=(width, height))
    axes = list(fig.subplots(rows or 1, 1, squeeze=False)[:, 0])
    return (fig, axes[0]) if rows is None else (fig, axes)


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _eng(value) -> str:
    try:
        return EngFormatter(places=2)(float(value))
    except (TypeError, ValueError):
        return "? "
