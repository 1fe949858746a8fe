"""Task transitions: one table that both backends consume, and the fencing of DESIGN.md §6.

`TRANSITIONS` says, per `TaskWriteKind`, the status after the write, which fields it
stamps with the time, clears, or takes from the write, and whether it adds an entry to
the attempt history. SQLite applies it to the record it read (`apply_task_write`);
DynamoDB renders the same table into one update expression without reading
(`orchestrator/store/dynamodb/tasks.py`). Every write also sets the task's fence and
attempt to the writer's, and `updated_at`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

from orchestrator.errors import PipelineDefinitionError, TaskCompletedError, TaskNotFoundError
from orchestrator.store.records import (
    ATTEMPT_HISTORY_LIMIT,
    AttemptRecord,
    ErrorInfo,
    Lease,
    NewTask,
    Progress,
    SessionRecord,
    TaskRecord,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    WriteOutcome,
)
from orchestrator.store.rules.graph import check_graph
from orchestrator.store.rules.claims import lease_lost

__all__ = [
    "TRANSITIONS",
    "Definition",
    "History",
    "TaskTransition",
    "apply_task_write",
    "check_added",
    "classify_rejection",
    "expected_attempt",
    "same_definition",
    "task_write_allowed",
    "with_entry",
    "write_error",
]


class History(enum.Enum):
    """Whether a write records the attempt in the task's bounded history."""

    NONE = "none"
    ALWAYS = "always"  # the entry of this attempt is (over)written
    IF_ABSENT = "if_absent"  # only an attempt that has no entry yet (one that was running) gets one


@dataclass(frozen=True, slots=True)
class TaskTransition:
    """What one kind of task write does to the stored task."""

    status: TaskStatus | None  # the status after the write; None keeps it
    stamps: tuple[str, ...] = ()  # fields set to the time of the write
    clears: tuple[str, ...] = ()  # fields set to None
    takes: tuple[str, ...] = ()  # fields taken from the write: output, progress, checkpoint, not_before, ...
    history: History = History.NONE
    history_status: TaskStatus | None = None  # status of the history entry (default: `status`)
    fresh_progress: bool = False  # progress back to 0/0 (a new attempt)
    rebase: bool = False  # attempt_base = the attempt stored before the write (a redrive)
    forgive: bool = False  # attempt_base + 1: this attempt does not count toward the retry budget


_ENDING = ("ended_at",)
#: The signal a task waits for lives while it is WAITING: WAIT takes it, every status change clears it.
_WAITED = "waiting_for"
TRANSITIONS: dict[TaskWriteKind, TaskTransition] = {
    TaskWriteKind.START: TaskTransition(
        TaskStatus.RUNNING, stamps=("started_at",), clears=("ended_at", "not_before", "output", "output_ref", _WAITED),
        fresh_progress=True),
    TaskWriteKind.PROGRESS: TaskTransition(None, takes=("progress",)),
    TaskWriteKind.CHECKPOINT: TaskTransition(None, takes=("checkpoint",)),
    TaskWriteKind.COMPLETE: TaskTransition(
        TaskStatus.COMPLETED, stamps=_ENDING, clears=("not_before", _WAITED), takes=("output", "progress"),
        history=History.ALWAYS),
    TaskWriteKind.RETRY: TaskTransition(
        TaskStatus.PENDING, stamps=_ENDING, clears=(_WAITED,), takes=("error", "not_before"),
        history=History.ALWAYS, history_status=TaskStatus.FAILED),
    TaskWriteKind.REQUEUE: TaskTransition(
        TaskStatus.PENDING, stamps=_ENDING, clears=(_WAITED,), takes=("error", "not_before"),
        history=History.ALWAYS, history_status=TaskStatus.FAILED, forgive=True),
    TaskWriteKind.ABANDON: TaskTransition(
        TaskStatus.PENDING, stamps=_ENDING, clears=(_WAITED,), takes=("error",), history=History.ALWAYS,
        history_status=TaskStatus.FAILED),
    TaskWriteKind.FAIL: TaskTransition(
        TaskStatus.FAILED, stamps=_ENDING, clears=("not_before", _WAITED), takes=("error",),
        history=History.ALWAYS),
    TaskWriteKind.SKIP: TaskTransition(
        TaskStatus.SKIPPED, stamps=_ENDING, clears=("not_before", _WAITED), takes=("error",),
        history=History.IF_ABSENT),
    TaskWriteKind.CANCEL: TaskTransition(
        TaskStatus.CANCELLED, stamps=_ENDING, clears=("not_before", _WAITED), takes=("error",),
        history=History.IF_ABSENT),
    TaskWriteKind.WAIT: TaskTransition(TaskStatus.WAITING, takes=("not_before", _WAITED)),
    TaskWriteKind.WAKE: TaskTransition(TaskStatus.RUNNING, clears=(_WAITED,)),
    TaskWriteKind.RESET: TaskTransition(
        TaskStatus.PENDING, clears=("last_error", "not_before", "started_at", "ended_at", _WAITED), rebase=True),
}


def write_error(write: TaskWrite) -> ErrorInfo | None:
    """The error a write records: its own, or one made from its reason (a skip, a cancel)."""
    if write.error is not None or not write.reason:
        return write.error
    status = TRANSITIONS[write.kind].status
    name = status.value.title() if status is not None else write.kind.value.title()
    return ErrorInfo(type=f"orchestrator.{name}", message=write.reason, retryable=False)


def expected_attempt(write: TaskWrite) -> int:
    """The attempt the stored task must have (at the same fence) for `write` to apply."""
    return write.attempt - 1 if write.kind is TaskWriteKind.START else write.attempt


def task_write_allowed(task: TaskRecord, lease: Lease, write: TaskWrite) -> bool:
    """`status <> COMPLETED AND (fence < mine OR (fence = mine AND attempt = expected))`."""
    if task.status is TaskStatus.COMPLETED:
        return False
    if task.fence < lease.fence:
        return True
    return task.fence == lease.fence and task.attempt == expected_attempt(write)


def classify_rejection(task: TaskRecord, session: SessionRecord, lease: Lease, write: TaskWrite) -> WriteOutcome:
    """Why a fenced task write was rejected, from consistent re-reads of task and session.

    Raises LeaseLostError when a newer claim explains it.
    """
    result_status = TRANSITIONS[write.kind].status
    same_writer = task.fence == lease.fence and task.attempt == write.attempt
    if same_writer and (result_status is None or task.status is result_status):
        return WriteOutcome.ALREADY_APPLIED
    if task.status is TaskStatus.COMPLETED:
        return WriteOutcome.COMPLETED_ELSEWHERE
    if session.fence > lease.fence:
        err = lease_lost(session, lease)
        assert err is not None
        raise err
    return WriteOutcome.STALE


def apply_task_write(task: TaskRecord, lease: Lease, write: TaskWrite, now: float) -> TaskRecord:
    """The task after `write` (assumed allowed), as `TRANSITIONS` defines it."""
    rule = TRANSITIONS[write.kind]
    values: dict[str, object] = {"fence": lease.fence, "attempt": write.attempt, "updated_at": now}
    if rule.status is not None:
        values["status"] = rule.status
    if rule.rebase:
        values["attempt_base"] = task.attempt
    if rule.forgive:
        values["attempt_base"] = task.attempt_base + 1
    for name in rule.stamps:
        values[name] = now
    for name in rule.clears:
        values[name] = None
    if rule.fresh_progress:
        values["progress"] = Progress()
    error = write_error(write)
    for name in rule.takes:
        if name == "error":
            if error is not None:
                values["last_error"] = error
        elif name == "progress":
            if write.progress is not None:
                values["progress"] = write.progress
        else:
            values[name] = getattr(write, name)
    new = replace(task, **values)  # type: ignore[arg-type]
    if rule.history is History.ALWAYS or (
            rule.history is History.IF_ABSENT and write.attempt > 0
            and all(e.attempt != write.attempt for e in task.history)):
        entry = AttemptRecord(attempt=write.attempt, fence=lease.fence, status=rule.history_status or new.status,
                              started_at=task.started_at, ended_at=now, error=error)
        new = replace(new, history=with_entry(task.history, entry))
    return new


def with_entry(history: tuple[AttemptRecord, ...], entry: AttemptRecord) -> tuple[AttemptRecord, ...]:
    """The history with `entry` as its attempt's entry, the latest ATTEMPT_HISTORY_LIMIT attempts kept."""
    kept = [e for e in history if e.attempt != entry.attempt]
    return tuple(sorted([*kept, entry], key=lambda e: e.attempt))[-ATTEMPT_HISTORY_LIMIT:]


#: A task's stored definition: agent, input (the codec's text), priority, max attempts, dependencies.
Definition = tuple[str, "str | None", int, int, Sequence[str]]


def same_definition(stored: Definition, task: NewTask, input_text: str) -> bool:
    """Whether a stored definition equals `task`: inputs as decoded JSON, dependencies as sets."""
    agent, stored_input, priority, max_attempts, depends_on = stored
    return (
        agent == task.agent
        and int(priority) == task.priority
        and int(max_attempts) == task.max_attempts
        and set(depends_on) == set(task.depends_on)
        and json.loads(stored_input or "null") == json.loads(input_text)
    )


def check_added(
    session: SessionRecord,
    lease: Lease,
    parent: str,
    attempt: int,
    tasks: Sequence[NewTask],
    inputs: Sequence[str],
    *,
    parent_status: TaskStatus | None,
    known: Collection[str],
    stored: Callable[[str], Sequence[Definition]],
    store: str,
) -> None:
    """Raise for tasks an agent may not add; checked in this order on every backend.

    The writer must hold the session (LeaseLostError), the parent must exist and not be
    COMPLETED (its completion adopted what it staged; later additions never would be), the batch
    must be a valid graph over `known` (adopted tasks and those this attempt staged),
    and an id already defined (adopted or staged by any attempt) must keep its definition.
    """
    sid = session.session_id
    err = lease_lost(session, lease)
    if err is not None:
        raise err
    if parent_status is None:
        raise TaskNotFoundError.missing(sid, parent, store)
    if parent_status is TaskStatus.COMPLETED:
        raise TaskCompletedError.adding_to(sid, parent)
    where = f"the tasks added by {parent} (attempt {attempt}) to session {sid}"
    check_graph(((t.task_id, t.depends_on) for t in tasks), where=where, known=known, session_id=sid)
    for t, text in zip(tasks, inputs, strict=True):
        if any(not same_definition(d, t, text) for d in stored(t.task_id)):
            raise PipelineDefinitionError.redefined_task(sid, t.task_id)
