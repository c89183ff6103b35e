"""Analysis for notebooks: every plot is a function returning a matplotlib Figure."""

from .topology import draw_topology

__all__ = ["draw_topology"]
