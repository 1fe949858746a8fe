"""Drawing a DAG as Mermaid, Graphviz dot, or text levels, with status colours."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from orchestrator.errors import ValidationError
from orchestrator.store.records import Edge, TaskStatus

__all__ = ["RENDER_FORMATS", "RenderFormat", "render"]

RenderFormat = Literal["mermaid", "dot", "text"]
RENDER_FORMATS: tuple[str, ...] = ("mermaid", "dot", "text")


_COLOURS: dict[TaskStatus | None, tuple[str, str]] = {
    # status: (fill, stroke)
    None: ("#ffffff", "#9e9e9e"),
    TaskStatus.PENDING: ("#eceff1", "#78909c"),
    TaskStatus.RUNNING: ("#bbdefb", "#1565c0"),
    TaskStatus.WAITING: ("#fff9c4", "#f9a825"),
    TaskStatus.COMPLETED: ("#c8e6c9", "#2e7d32"),
    TaskStatus.FAILED: ("#ffcdd2", "#c62828"),
    TaskStatus.SKIPPED: ("#e0e0e0", "#616161"),
    TaskStatus.CANCELLED: ("#d7ccc8", "#4e342e"),
}


def _task_label(item: Any) -> tuple[str, str | None, TaskStatus | None]:
    """(id, agent, status) of a Task, NewTask, TaskRecord, (id, agent) pair or plain id."""
    if isinstance(item, str):
        return item, None, None
    if isinstance(item, tuple):
        return str(item[0]), (str(item[1]) if len(item) > 1 and item[1] is not None else None), None
    tid = getattr(item, "task_id", None) or getattr(item, "id", None)
    if not isinstance(tid, str):
        raise ValidationError(f"cannot render {item!r}: pass tasks as ids, Task, NewTask or TaskRecord objects")
    status = getattr(item, "status", None)
    return tid, getattr(item, "agent", None), status if isinstance(status, TaskStatus) else None


def _status(value: Any) -> TaskStatus | None:
    if value is None or isinstance(value, TaskStatus):
        return value
    try:
        return TaskStatus(str(value).upper())
    except ValueError:
        raise ValidationError(
            f"unknown task status {value!r}; use one of {', '.join(s.value for s in TaskStatus)}"
        ) from None


def render(
    tasks: Iterable[Any] | Mapping[str, Any],
    edges: Iterable[Edge | tuple[str, str]],
    statuses: Mapping[str, TaskStatus | str] | None = None,
    format: RenderFormat = "mermaid",
) -> str:
    """Draw a DAG: a status-coloured Mermaid flowchart, Graphviz dot, or a text view by level.

    `tasks` holds ids, `Task`/`NewTask`/`TaskRecord` objects or (id, agent) pairs (or a
    mapping of them); `edges` are `Edge`s or (task, dependency) pairs; `statuses`
    overrides the status a `TaskRecord` carries.
    """
    if format not in RENDER_FORMATS:
        raise ValidationError(f"unknown render format {format!r}; use one of {', '.join(RENDER_FORMATS)}")
    items = tasks.values() if isinstance(tasks, Mapping) else tasks
    nodes: dict[str, tuple[str | None, TaskStatus | None]] = {}
    for item in items:
        tid, agent, status = _task_label(item)
        nodes[tid] = (agent, status)
    pairs: list[tuple[str, str]] = []
    for edge in edges:
        tid, dep = (edge.task_id, edge.depends_on) if isinstance(edge, Edge) else (edge[0], edge[1])
        pairs.append((tid, dep))
        for name in (dep, tid):
            nodes.setdefault(name, (None, None))
    for tid, value in (statuses or {}).items():
        agent = nodes.get(tid, (None, None))[0]
        nodes[tid] = (agent, _status(value))
    if format == "mermaid":
        return _mermaid(nodes, pairs)
    if format == "dot":
        return _dot(nodes, pairs)
    return _text(nodes, pairs)


def _mermaid(nodes: Mapping[str, tuple[str | None, TaskStatus | None]], pairs: Sequence[tuple[str, str]]) -> str:
    # Task ids may hold '.', ':' or '@', which Mermaid ids cannot: nodes get positional ids.
    key = {tid: f"n{i}" for i, tid in enumerate(nodes)}
    lines = ["flowchart TD"]
    for tid, (agent, status) in nodes.items():
        label = tid.replace('"', "#quot;")
        if agent:
            label += "<br/><small>" + agent.replace('"', "#quot;") + "</small>"
        if status is not None:
            label += f"<br/>{status.value}"
        cls = status.value.lower() if status is not None else "unknown"
        lines.append(f'    {key[tid]}["{label}"]:::{cls}')
    for tid, dep in pairs:
        lines.append(f"    {key[dep]} --> {key[tid]}")
    for status, (fill, stroke) in _COLOURS.items():
        cls = status.value.lower() if status is not None else "unknown"
        lines.append(f"    classDef {cls} fill:{fill},stroke:{stroke},color:#000")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot(nodes: Mapping[str, tuple[str | None, TaskStatus | None]], pairs: Sequence[tuple[str, str]]) -> str:
    lines = [
        "digraph pipeline {",
        "    rankdir=LR;",
        '    node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    for tid, (agent, status) in nodes.items():
        label = tid + (f"\n{agent}" if agent else "") + (f"\n{status.value}" if status is not None else "")
        fill, stroke = _COLOURS[status]
        lines.append(
            f"    {_dot_quote(tid)} [label={_dot_quote(label)}, fillcolor={_dot_quote(fill)}, "
            f"color={_dot_quote(stroke)}];"
        )
    for tid, dep in pairs:
        lines.append(f"    {_dot_quote(dep)} -> {_dot_quote(tid)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _text(nodes: Mapping[str, tuple[str | None, TaskStatus | None]], pairs: Sequence[tuple[str, str]]) -> str:
    """Tasks grouped by level (longest dependency path from a root), each with its deps."""
    deps: dict[str, list[str]] = {tid: [] for tid in nodes}
    children: dict[str, list[str]] = {tid: [] for tid in nodes}
    for tid, dep in pairs:
        deps[tid].append(dep)
        children[dep].append(tid)
    indeg = {tid: len(d) for tid, d in deps.items()}
    level = {tid: 0 for tid in nodes}
    queue = deque(tid for tid, n in indeg.items() if n == 0)
    while queue:
        tid = queue.popleft()
        for child in children[tid]:
            level[child] = max(level[child], level[tid] + 1)
            indeg[child] -= 1
            if indeg[child] == 0:
                queue.append(child)
    by_level: dict[int, list[str]] = {}
    in_cycle: list[str] = []
    for tid in nodes:
        (in_cycle if indeg[tid] > 0 else by_level.setdefault(level[tid], [])).append(tid)

    def line(tid: str) -> str:
        agent, status = nodes[tid]
        text = f"  {tid}"
        if status is not None:
            text += f" [{status.value}]"
        if agent:
            text += f" ({agent})"
        if deps[tid]:
            text += f" <- {', '.join(deps[tid])}"
        return text

    out: list[str] = []
    for lvl in sorted(by_level):
        out.append(f"level {lvl}:")
        out.extend(line(tid) for tid in sorted(by_level[lvl]))
    if in_cycle:
        out.append("in a cycle:")
        out.extend(line(tid) for tid in sorted(in_cycle))
    return "\n".join(out) + "\n"
