"""Topology drawing: x = block order, y = level, colour = dilation, edges = connections."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search_spaces.spec import STEM, STEM_LEVEL, ArchSpec

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

EDGE_STYLES = {
    "chain": {"color": "0.25", "linestyle": "-", "linewidth": 1.4},
    "fuse": {"color": "tab:blue", "linestyle": "-", "linewidth": 1.0, "alpha": 0.7},
    "absorb": {"color": "tab:red", "linestyle": ":", "linewidth": 1.2},
}
MARKERS = {"bottleneck": "o", "residual": "s"}


def draw_topology(spec: ArchSpec, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Draw ``spec``: one marker per block (circle = bottleneck, square = residual) at
    (block order, level), coloured by dilation; outputs ringed; pruned (dead) blocks faded;
    chain edges dark, fused edges blue, SpineNet's dead-end merges dotted red.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if ax is None:
        fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(spec.blocks) + 2), 3.8))
    else:
        fig = ax.figure
    dilations = sorted({b.dilation for b in spec.blocks} | {1, 2, 4, 8})
    cmap = plt.get_cmap("viridis", len(dilations))
    colour = {d: cmap(k) for k, d in enumerate(dilations)}

    def position(node: int) -> tuple[float, float]:
        return (-1.0, STEM_LEVEL) if node == STEM else (float(node), spec.blocks[node].level)

    levels = [STEM_LEVEL] + [b.level for b in spec.blocks]
    middle = (min(levels) + max(levels)) / 2
    for i, b in enumerate(spec.blocks):
        for p in b.parents:
            _edge(ax, position(p), position(i), EDGE_STYLES[b.connection], middle)
    for i, absorbed in spec.absorbed.items():
        for j in absorbed:
            _edge(ax, position(j), position(i), EDGE_STYLES["absorb"], middle)

    ax.scatter([-1], [STEM_LEVEL], marker="D", s=90, color="0.5", zorder=3)
    for i, b in enumerate(spec.blocks):
        live = i in spec.live
        ax.scatter(
            [i],
            [b.level],
            marker=MARKERS[b.type],
            s=120 if b.type == "bottleneck" else 100,
            color=colour[b.dilation],
            alpha=1.0 if live else 0.25,
            edgecolors="crimson" if b.output else "black",
            linewidths=2.2 if b.output else 0.6,
            zorder=3,
        )
    ax.set_xticks(range(-1, len(spec.blocks)), ["stem", *map(str, range(len(spec.blocks)))], fontsize=7)
    ax.set_xlim(-1.7, len(spec.blocks) - 0.3)
    ax.set_ylim(min(levels) - 0.6, max(levels) + 0.6)
    ax.set_yticks(range(min(levels), max(levels) + 1))
    ax.set_xlabel("block order")
    ax.set_ylabel("level (stride $2^L$)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title if title is not None else f"{spec.name or 'spec'} ({spec.hash})")
    handles = [Line2D([], [], marker="o", linestyle="", color=colour[d], label=f"dilation {d}") for d in dilations]
    handles += [
        Line2D([], [], marker="s", linestyle="", color="0.6", label="residual"),
        Line2D(
            [], [], marker="o", linestyle="", color="0.6", markeredgecolor="crimson", markeredgewidth=2, label="output"
        ),
        Line2D([], [], **EDGE_STYLES["chain"], label="chain"),
        Line2D([], [], **EDGE_STYLES["fuse"], label="fuse"),
        Line2D([], [], **EDGE_STYLES["absorb"], label="dead end merged"),
        Line2D([], [], marker="o", linestyle="", color="0.6", alpha=0.25, label="pruned (dead)"),
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def _edge(ax: Axes, start: tuple[float, float], end: tuple[float, float], style: dict, middle: float) -> None:
    # Arcs rather than straight lines, so that long connections do not hide the blocks between;
    # they bow towards the middle of the level range so that they stay inside the axes.
    span = end[0] - start[0]
    bend = 0.0 if span <= 1 else min(0.35, 0.06 * span)
    if (start[1] + end[1]) / 2 < middle:
        bend = -bend
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={
            "arrowstyle": "-|>",
            "connectionstyle": f"arc3,rad={bend}",
            "shrinkA": 6,
            "shrinkB": 6,
            **style,
        },
        zorder=1,
    )
