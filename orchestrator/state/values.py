"""The small pieces of an external session's recorder: its owner, its tasks' local state, checks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orchestrator.errors import SessionStateError, TaskCompletedError, TaskNotFoundError, ValidationError
from orchestrator.store.protocol import WriteResult
from orchestrator.store.records import NewTask, SessionStatus, TaskStatus, WriteOutcome
from orchestrator.store.rules import check_graph

__all__ = ["FINAL", "TaskState", "external_owner", "final_status", "new_tasks", "undeclared_task", "write_refusal"]

FINAL = (SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED)


def external_owner(token: str) -> str:
    """The lease owner stored for an external session: a digest of its token."""
    return "external:" + hashlib.sha256(token.encode()).hexdigest()[:32]


@dataclass(slots=True)
class TaskState:
    """What the recorder remembers of one declared task between writes."""

    agent: str
    status: TaskStatus
    attempt: int
    started_at: float | None


def new_tasks(tasks: Sequence[str | NewTask], where: str) -> list[NewTask]:
    """Declared tasks (a bare id is a task run by an agent of that name), checked as a graph."""
    out = [NewTask(task_id=t, agent=t) if isinstance(t, str) else t for t in tasks]
    check_graph(((t.task_id, t.depends_on) for t in out), where=f"session {where}")
    return out


def final_status(status: SessionStatus | str, session_id: str) -> SessionStatus:
    try:
        final = SessionStatus(status.upper() if isinstance(status, str) else status)
    except ValueError:
        final = SessionStatus.PENDING
    if final not in FINAL:
        raise ValidationError.bad_value("status", status, "COMPLETED, FAILED or CANCELLED",
                                        f"the end of session {session_id}", session_id=session_id)
    return final


def write_refusal(result: WriteResult, session_id: str) -> Exception | None:
    """The error for a task write the store refused, or None when it applied."""
    if result.ok:
        return None
    tid = result.task_id
    if result.outcome is WriteOutcome.COMPLETED_ELSEWHERE:
        return TaskCompletedError(
            f"task {tid!r} of session {session_id} was already COMPLETED by another writer of this session; "
            f"the write is discarded",
            session_id=session_id, task_id=tid,
        )
    stored = result.task
    return SessionStateError(
        f"task {tid!r} of session {session_id} was written by another recorder of this session (attempt "
        f"{stored.attempt if stored else '?'}); attach again to continue from the stored state",
        session_id=session_id, task_id=tid,
    )


def undeclared_task(session_id: str, task_id: str, known: Iterable[str]) -> TaskNotFoundError:
    return TaskNotFoundError(
        f"session {session_id} has no task {task_id!r} (known: {', '.join(sorted(known)) or 'none'}); declare "
        f"every task when starting the session (tasks=[...])",
        session_id=session_id, task_id=task_id,
    )
