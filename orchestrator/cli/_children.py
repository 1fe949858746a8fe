"""Parent and child sessions in `status`: the parent a child belongs to, a parent's children by status."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.table import Table
from rich.text import Text

from orchestrator.scheduler.children import child_ids
from orchestrator.store import SessionSnapshot, Store
from orchestrator.store.protocol import ChildStore
from orchestrator.store.rules.children import ChildLink

__all__ = ["ChildrenView", "children_view", "graph_note"]

_COUNTED = 2000  # children whose status `status` reads at most (batched); the rest are only named


class ChildrenView:
    """The links of one session: its parent (if a child) and its children per task, with status counts."""

    def __init__(self, parent: ChildLink | None, children: dict[str, list[str]], counts: dict[str, Counter[str]]):
        self.parent, self.children, self.counts = parent, children, counts

    def captions(self) -> list[Text]:
        out = []
        if self.parent is not None:
            out.append(Text(f"child {self.parent.index} of session {self.parent.session_id} "
                            f"(task {self.parent.task_id})", style="cyan"))
        for tid, ids in self.children.items():
            counts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.get(tid, Counter()).items()))
            out.append(Text(f"task {tid}: {len(ids)} child session(s) {ids[0]} .. {ids[-1]}"
                            + (f" ({counts})" if counts else ""), style="cyan"))
        return out

    def extend(self, table: Table) -> Table:
        """The status table with these links appended to its caption."""
        if isinstance(table.caption, Text) and (self.parent is not None or self.children):
            table.caption = Text("  ").join([table.caption, *self.captions()])
        return table

    def json(self) -> dict[str, Any]:
        return {
            "parent": None if self.parent is None else self.parent.to_json(),
            "children": {tid: {"sessions": ids, "by_status": dict(self.counts.get(tid, Counter()))}
                         for tid, ids in self.children.items()},
        }


async def children_view(store: Store, snap: SessionSnapshot) -> ChildrenView:
    sid = snap.session.session_id
    children = {tid: ids for tid, t in sorted(snap.tasks.items()) if (ids := child_ids(sid, tid, t.checkpoint))}
    counts: dict[str, Counter[str]] = {}
    if isinstance(store, ChildStore):
        for tid, ids in children.items():
            found = await store.get_sessions(ids[:_COUNTED])
            counts[tid] = Counter(s.status.value for s in found.values())
    return ChildrenView(ChildLink.of(snap.session.metadata), children, counts)


_COMMENT = {"mermaid": "%% ", "dot": "// "}


def graph_note(snap: SessionSnapshot, fmt: str) -> str:
    """Lines appended to `graph`: the session's parent and each mapping task's children, as comments."""
    lead = _COMMENT.get(fmt, "")
    sid = snap.session.session_id
    lines = []
    link = ChildLink.of(snap.session.metadata)
    if link is not None:
        lines.append(f"{lead}child {link.index} of session {link.session_id} (task {link.task_id})")
    for tid, task in sorted(snap.tasks.items()):
        if ids := child_ids(sid, tid, task.checkpoint):
            lines.append(f"{lead}task {tid} -> {len(ids)} child session(s): {ids[0]} .. {ids[-1]}")
    return "".join(line + "\n" for line in lines)
