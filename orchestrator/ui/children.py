"""Parent <-> children links on a session's page: the parent a child belongs to, a parent's children."""

from __future__ import annotations

from orchestrator.scheduler.children import child_ids
from orchestrator.store import SessionSnapshot
from orchestrator.store.rules.children import ChildLink
from orchestrator.ui.html import esc

__all__ = ["link_facts"]

_LINKED = 20  # children linked by id per task; the rest are counted


def _a(session_id: str) -> str:
    return f'<a href="/sessions/{esc(session_id)}">{esc(session_id)}</a>'


def link_facts(snapshot: SessionSnapshot) -> list[tuple[str, str]]:
    """Facts (label, HTML) for the session header: "parent" for a child, "children of T" per mapping task."""
    facts: list[tuple[str, str]] = []
    link = ChildLink.of(snapshot.session.metadata)
    if link is not None:
        facts.append(("parent", f"{_a(link.session_id)} (task {esc(link.task_id)}, item {link.index})"))
    sid = snapshot.session.session_id
    for tid, task in sorted(snapshot.tasks.items()):
        ids = child_ids(sid, tid, task.checkpoint)
        if ids:
            shown = ", ".join(_a(c) for c in ids[:_LINKED])
            more = f" and {len(ids) - _LINKED} more" if len(ids) > _LINKED else ""
            facts.append((f"children of {esc(tid)}", f"{len(ids)}: {shown}{more}"))
    return facts
