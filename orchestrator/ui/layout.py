"""Where each task's box goes in the DAG picture: a layered layout, a pure function.

Layers are networkx's topological generations (a task sits one row below its deepest
dependency); a layer wider than `max_row` boxes wraps onto several rows, so 500 tasks
stay a tall, scrollable picture rather than one 80,000-pixel-wide row. Within a layer,
boxes are ordered by the mean position of their dependencies (one barycentre pass),
which removes most arrow crossings of pipeline-shaped graphs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import networkx as nx

__all__ = ["BOX_H", "BOX_W", "Arrow", "Box", "Layout", "layout_dag"]

BOX_W = 168.0
BOX_H = 46.0
GAP_X = 24.0
GAP_Y = 56.0
MARGIN = 16.0


@dataclass(frozen=True, slots=True)
class Box:
    """A task's box: top-left corner, and the layer (generation) it belongs to."""

    task_id: str
    x: float
    y: float
    layer: int


@dataclass(frozen=True, slots=True)
class Arrow:
    """A dependency drawn from the bottom of `source` (the dependency) to the top of `target`."""

    source: str
    target: str
    start: tuple[float, float]
    end: tuple[float, float]


@dataclass(frozen=True, slots=True)
class Layout:
    boxes: Mapping[str, Box]
    arrows: tuple[Arrow, ...]
    width: float
    height: float


def _generations(graph: nx.DiGraph) -> list[list[str]]:
    try:
        return [sorted(layer) for layer in nx.topological_generations(graph)]
    except nx.NetworkXUnfeasible:  # a cycle cannot be stored, but draw something rather than fail
        return [[node] for node in sorted(graph.nodes)]


def layout_dag(depends_on: Mapping[str, Sequence[str]], *, max_row: int = 10) -> Layout:
    """Boxes and arrows for tasks given as `task -> its dependencies` (unknown dependencies ignored)."""
    if max_row < 1:
        raise ValueError(f"max_row={max_row} must be at least 1")
    graph: nx.DiGraph = nx.DiGraph()
    graph.add_nodes_from(depends_on)
    graph.add_edges_from((dep, task) for task, deps in depends_on.items() for dep in deps if dep in depends_on)
    boxes: dict[str, Box] = {}
    column: dict[str, float] = {}  # a placed task's horizontal slot, for the barycentre of its dependents
    row = 0
    widest = 0
    for layer, members in enumerate(_generations(graph)):
        def weight(task: str) -> tuple[float, str]:
            parents = [column[p] for p in graph.predecessors(task) if p in column]
            return (sum(parents) / len(parents) if parents else float("inf"), task)

        ordered = sorted(members, key=weight)
        for start in range(0, len(ordered), max_row):
            chunk = ordered[start:start + max_row]
            widest = max(widest, len(chunk))
            for slot, task in enumerate(chunk):
                boxes[task] = Box(task, MARGIN + slot * (BOX_W + GAP_X), MARGIN + row * (BOX_H + GAP_Y), layer)
                column[task] = float(slot)
            row += 1
    arrows = tuple(
        Arrow(source, target,
              (boxes[source].x + BOX_W / 2, boxes[source].y + BOX_H),
              (boxes[target].x + BOX_W / 2, boxes[target].y))
        for source, target in sorted(graph.edges)
    )
    width = 2 * MARGIN + max(widest, 1) * (BOX_W + GAP_X) - GAP_X
    height = 2 * MARGIN + max(row, 1) * (BOX_H + GAP_Y) - GAP_Y
    return Layout(boxes, arrows, width, height)
