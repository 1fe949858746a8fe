"""One record per task (`TaskState`) and the table that owns them (`TaskTable`).

The table is the one place a record changes: each change also updates the `DagState`
that mirrors task statuses for the ready set, and the indexes that keep counts O(1)
(running tasks and agents, backoffs, waits). Pure data; no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.graph import DagState
from orchestrator.store.records import (
    NewTask,
    Progress,
    SessionSnapshot,
    SignalRecord,
    TaskRecord,
    TaskStatus,
)

__all__ = ["TaskState", "TaskTable", "Wait"]


@dataclass(slots=True)
class Wait:
    """A task waiting for signal `signal`: until `deadline`, woken only by signals newer than `seen`."""

    deadline: float | None
    seen: int  # the session's signal sequence, as loaded, when the wait began
    signal: str | None = None  # None: a task record written before the name was stored


@dataclass(slots=True, eq=False)
class TaskState:
    """Everything this owner knows and decided about one task."""

    task_id: str
    agent: str
    input: Any
    max_attempts: int
    added_by: str | None
    status: TaskStatus
    attempt: int = 0  # the last attempt written (a START advances it; a WAKE keeps it)
    attempt_base: int = 0  # attempts before the latest redrive: the retry budget starts here
    checkpoint: Any = None  # the agent's last saved state, restored by its next attempt
    output: Any = None  # set once COMPLETED (optimistically, before the write lands)
    not_before: float | None = None  # a retry's backoff: may not start before
    wait: Wait | None = None  # waiting (or woken and not yet restarted)
    running: bool = False  # an agent runs `attempt` (launched once its START landed)
    progress: Progress | None = None  # reported by the running attempt, not yet written
    progress_attempt: int = 0
    signals: dict[str, SignalRecord] = field(default_factory=dict)  # by signal name
    staged: tuple[NewTask, ...] = ()  # added by its pending COMPLETE, adopted when it lands

    @classmethod
    def from_record(cls, record: TaskRecord, status: TaskStatus | None = None) -> TaskState:
        return cls(
            task_id=record.task_id, agent=record.agent, input=record.input, max_attempts=record.max_attempts,
            added_by=record.added_by, status=status if status is not None else record.status,
            attempt=record.attempt, attempt_base=record.attempt_base, checkpoint=record.checkpoint,
            output=record.output if record.status is TaskStatus.COMPLETED else None,
        )


class TaskTable:
    """The session's `TaskState`s by id, with the DAG and the indexes kept in step with them."""

    def __init__(self, snapshot: SessionSnapshot) -> None:
        self.dag = DagState.from_records(snapshot.tasks, snapshot.edges)
        self._tasks = {tid: TaskState.from_record(rec) for tid, rec in snapshot.tasks.items()}
        self.running: set[str] = set()
        self.load: Counter[str] = Counter()  # running agents by agent name
        self.backoff: set[str] = set()  # tasks with a not-before time
        self.waiting: set[str] = set()  # tasks with a wait
        self.changed = True  # done/total or the running agents changed since `changed` was cleared
        self.add_signals(snapshot.signals)

    def __getitem__(self, task_id: str) -> TaskState:
        return self._tasks[task_id]

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def __iter__(self) -> Iterator[TaskState]:
        return iter(self._tasks.values())

    def get(self, task_id: str) -> TaskState | None:
        return self._tasks.get(task_id)

    def move(self, task: TaskState, status: TaskStatus) -> None:
        """Set a task's status (the DAG follows)."""
        task.status = status
        self.dag.mark(task.task_id, status)

    def finalize(self, task: TaskState, status: TaskStatus) -> None:
        """Give a task a final status: it no longer waits or backs off."""
        self.move(task, status)
        self.set_wait(task, None)
        self.set_backoff(task, None)
        self.changed = True

    def set_running(self, task: TaskState, running: bool) -> None:
        if task.running is running:
            return
        task.running = running
        self.changed = True
        if running:
            self.running.add(task.task_id)
            self.load[task.agent] += 1
        else:
            self.running.discard(task.task_id)
            self.load[task.agent] -= 1

    def set_backoff(self, task: TaskState, at: float | None) -> None:
        task.not_before = at
        if at is None:
            self.backoff.discard(task.task_id)
        else:
            self.backoff.add(task.task_id)

    def set_wait(self, task: TaskState, wait: Wait | None) -> Wait | None:
        """Set (or clear) the task's wait; returns the previous one."""
        previous, task.wait = task.wait, wait
        if wait is None:
            self.waiting.discard(task.task_id)
        else:
            self.waiting.add(task.task_id)
        return previous

    def add(self, records: Iterable[TaskRecord]) -> None:
        """Tasks added at run time (adopted): PENDING, or COMPLETED with their output."""
        fresh = [rec for rec in records if rec.task_id not in self._tasks]
        if not fresh:
            return
        self.dag.add_tasks([
            NewTask(t.task_id, t.agent, t.input, t.priority, t.max_attempts, t.depends_on, t.added_by) for t in fresh
        ])
        for rec in fresh:
            task = self._tasks[rec.task_id] = TaskState.from_record(rec, status=TaskStatus.PENDING)
            if rec.status is TaskStatus.COMPLETED:
                task.output = rec.output
                self.move(task, TaskStatus.COMPLETED)
        self.changed = True

    def add_signals(self, signals: Mapping[tuple[str, str], SignalRecord]) -> None:
        for (tid, name), sig in signals.items():
            task = self._tasks.get(tid)
            if task is not None:
                task.signals[name] = sig


def pending_record(task: NewTask) -> TaskRecord:
    """The record of a task an attempt added, as it stands once adopted."""
    return TaskRecord(
        task_id=task.task_id, agent=task.agent, status=TaskStatus.PENDING, input=task.input,
        priority=task.priority, max_attempts=task.max_attempts, depends_on=task.depends_on, added_by=task.added_by,
    )
