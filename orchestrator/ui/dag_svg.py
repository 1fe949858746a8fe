"""The DAG as SVG: one status-coloured box per task, an arrow per dependency.

Colours come from the stylesheet through `s-STATUS` classes; each box carries
`data-task` and `data-status` so the page script (and the browser tests) can find a
task and read its state from the DOM. Tasks added at run time are dashed and marked "+".
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.scheduler.resources import WAITING_FOR_RESOURCE
from orchestrator.store import TaskRecord, TaskStatus
from orchestrator.ui.html import esc
from orchestrator.ui.layout import BOX_H, BOX_W, Layout

__all__ = ["dag_svg"]

_ID_CHARS = 22


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _box(task: TaskRecord, x: float, y: float, selected: bool) -> str:
    status = task.status.value
    dynamic = task.added_by is not None
    p = task.progress
    # a RUNNING task whose attempt waits for a fleet-wide resource (scheduler/resources.py)
    resource = p.step if task.status is TaskStatus.RUNNING and p.phase == WAITING_FOR_RESOURCE else None
    classes = (f"task s-{status}" + (" dynamic" if dynamic else "") + (" selected" if selected else "")
               + (" resource-wait" if resource is not None else ""))
    shown = f"waits for {resource}" if resource is not None else status.lower()
    bar = ""
    if p.total > 0:
        width = (BOX_W - 12) * min(1.0, max(0.0, p.current / p.total))
        bar = f'<rect class="bar" x="{x + 6:.0f}" y="{y + BOX_H - 7:.0f}" width="{width:.0f}" height="3"/>'
    mark = (f'<text class="plus" x="{x + BOX_W - 12:.0f}" y="{y + 15:.0f}" aria-label="added at run time">+</text>'
            if dynamic else "")
    title = (f"{task.task_id} · {task.agent} · {status}" + (f" · added by {task.added_by}" if dynamic else "")
             + (f" · waiting for resource {resource}" if resource is not None else ""))
    return (
        f'<g class="{classes}" data-task="{esc(task.task_id)}" data-status="{status}" tabindex="0" role="button">'
        f"<title>{esc(title)}</title>"
        f'<rect class="box" x="{x:.0f}" y="{y:.0f}" width="{BOX_W:.0f}" height="{BOX_H:.0f}" rx="6"/>'
        f'<text class="id" x="{x + 8:.0f}" y="{y + 18:.0f}">{esc(_clip(task.task_id, _ID_CHARS))}</text>'
        f'<text class="sub" x="{x + 8:.0f}" y="{y + 33:.0f}">{esc(_clip(task.agent, 14))} · {esc(shown)}</text>'
        f"{mark}{bar}</g>"
    )


def dag_svg(layout: Layout, tasks: Mapping[str, TaskRecord], selected: str | None = None) -> str:
    """The picture of a session's DAG (tasks missing from `layout` are not drawn)."""
    arrows = "".join(
        f'<path class="edge" data-from="{esc(a.source)}" data-to="{esc(a.target)}" '
        f'd="M{a.start[0]:.0f},{a.start[1]:.0f} C{a.start[0]:.0f},{a.start[1] + 28:.0f} '
        f'{a.end[0]:.0f},{a.end[1] - 28:.0f} {a.end[0]:.0f},{a.end[1] - 2:.0f}" marker-end="url(#arrow)"/>'
        for a in layout.arrows
    )
    boxes = "".join(_box(tasks[b.task_id], b.x, b.y, b.task_id == selected)
                    for b in layout.boxes.values() if b.task_id in tasks)
    return (
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{layout.width:.0f}" '
        f'height="{layout.height:.0f}" viewBox="0 0 {layout.width:.0f} {layout.height:.0f}" '
        f'role="img" aria-label="task graph of {len(tasks)} tasks">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>'
        f"<g class=\"edges\">{arrows}</g><g class=\"tasks\">{boxes}</g></svg>"
    )
