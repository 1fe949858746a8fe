"""Sessions, tasks, edges, signals, leases and task writes, as the Store protocol speaks them."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.errors import ValidationError
from orchestrator.store.records.base import SCHEMA_VERSION, check_id, check_label

__all__ = ["AttemptRecord", "ChunkRef", "ClaimPolicy", "Edge", "ErrorInfo", "Lease", "NewSession", "NewTask",
           "OwnerKind", "PipelineDefinition", "PreviousHolder", "Progress", "SessionRecord", "SessionSnapshot",
           "SessionStatus", "SignalRecord", "TaskRecord", "TaskStatus", "TaskWrite", "TaskWriteKind", "WriteOutcome"]

class SessionStatus(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in (SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED)


class TaskStatus(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED)


class OwnerKind(str, enum.Enum):
    WORKER = "worker"  # claimed and run by a scheduler; resumable
    EXTERNAL = "external"  # recorded by code running its own loop; never claimed


@dataclass(frozen=True, slots=True)
class Progress:
    current: int = 0
    total: int = 0
    phase: str | None = None
    step: str | None = None

    def __post_init__(self) -> None:
        if self.current < 0 or self.total < 0:
            raise ValidationError(
                f"progress {self.current}/{self.total} is negative; pass counts >= 0"
            )

    @property
    def percentage(self) -> float:
        if self.total <= 0:
            return 0.0
        return round(100.0 * min(self.current, self.total) / self.total, 1)

    @classmethod
    def of_tasks(cls, counts: Mapping[TaskStatus, int]) -> Progress:
        """A scheduled session's progress: its COMPLETED tasks of all its tasks (tasks per status).

        The one definition the scheduler stores and every view shows. A FAILED, SKIPPED or
        CANCELLED task ended without its work done, so a failed session never reads 3/3.
        """
        return cls(counts.get(TaskStatus.COMPLETED, 0), sum(counts.values()))


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failure as stored: exception type, message, and a bounded traceback excerpt."""

    type: str
    message: str
    traceback: str = ""
    retryable: bool = True

    @classmethod
    def from_exception(cls, exc: BaseException, *, retryable: bool = True, limit: int = 4000) -> ErrorInfo:
        import traceback as tb

        text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
        return cls(
            type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            message=str(exc)[:limit],
            traceback=text[-limit:],
            retryable=retryable,
        )


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One finished attempt, kept in the task's bounded history."""

    attempt: int
    fence: int
    status: TaskStatus
    started_at: float | None
    ended_at: float | None
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """An output stored as chunk items, adopted by the completion that names them."""

    fence: int
    attempt: int
    count: int
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task as created: static definition, before any attempt."""

    task_id: str
    agent: str
    input: Any = None
    priority: int = 2  # P0 (highest) .. P3
    max_attempts: int = 3
    depends_on: tuple[str, ...] = ()
    added_by: str | None = None  # task id of the agent that added it at run time

    def __post_init__(self) -> None:
        check_id("task", self.task_id)
        if not isinstance(self.agent, str) or not self.agent:
            raise ValidationError(f"task {self.task_id!r} has no agent name", task_id=self.task_id)
        if self.priority not in (0, 1, 2, 3):
            raise ValidationError(
                f"task {self.task_id!r} has priority {self.priority!r}; use 0..3 (P0 is the highest)",
                task_id=self.task_id,
            )
        if self.max_attempts < 1:
            raise ValidationError(
                f"task {self.task_id!r} has max_attempts={self.max_attempts}; use 1 or more",
                task_id=self.task_id,
            )
        for dep in self.depends_on:
            check_id("task", dep, where=f"depends_on of task {self.task_id!r}")


@dataclass(frozen=True, slots=True)
class Edge:
    """`task_id` depends on `depends_on` (stored as `TASK#<tid>#DEP#<dep>`)."""

    task_id: str
    depends_on: str


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task as stored: the "agent execution" of task-tracking tables, with its own status history."""

    task_id: str
    agent: str
    status: TaskStatus
    input: Any = None
    priority: int = 2
    max_attempts: int = 3
    fence: int = 0  # fence of the last writer
    attempt: int = 0  # attempts started so far (across fences)
    attempt_base: int = 0  # attempts before the latest redrive; budget = attempt - base
    not_before: float | None = None  # a retry's backoff, or a wait's deadline; durable across crashes
    waiting_for: str | None = None  # the signal a WAITING task waits for (set by WAIT, cleared on leaving WAITING)
    last_error: ErrorInfo | None = None
    history: tuple[AttemptRecord, ...] = ()
    started_at: float | None = None
    ended_at: float | None = None
    output: Any = None
    output_ref: ChunkRef | None = None  # set when the output lives in chunks (already joined in `output`)
    progress: Progress = field(default_factory=Progress)
    checkpoint: Any = None
    depends_on: tuple[str, ...] = ()
    added_by: str | None = None
    updated_at: float = 0.0

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)

    @property
    def attempts_left(self) -> int:
        return max(0, self.max_attempts - (self.attempt - self.attempt_base))


@dataclass(frozen=True, slots=True)
class NewSession:
    """What `Store.create_session` needs besides the tasks and edges."""

    session_id: str
    pipeline: str
    pipeline_version: str = "1"
    input: Any = None
    project_id: str | None = None
    user_id: str | None = None
    pipeline_type: str | None = None
    owner_kind: OwnerKind = OwnerKind.WORKER
    status: SessionStatus = SessionStatus.PENDING
    max_redrives: int = 3
    metadata: Mapping[str, Any] = field(default_factory=dict)
    trace_context: Mapping[str, str] = field(default_factory=dict)
    ttl_seconds: float | None = None  # expiry after the session ends; None = the store's default

    def __post_init__(self) -> None:
        check_id("session", self.session_id)
        if not self.pipeline:
            raise ValidationError(f"session {self.session_id!r} has no pipeline name", session_id=self.session_id)
        if self.project_id is not None:
            check_id("project", self.project_id)
        check_label("user id", self.user_id, f"session {self.session_id!r}")
        check_label("pipeline type", self.pipeline_type, f"session {self.session_id!r}")
        if self.max_redrives < 0:
            raise ValidationError(
                f"session {self.session_id!r} has max_redrives={self.max_redrives}; use 0 or more",
                session_id=self.session_id,
            )
        if self.status not in (SessionStatus.PENDING, SessionStatus.RUNNING):
            raise ValidationError(
                f"session {self.session_id!r} cannot be created {self.status.value}; create it PENDING "
                f"(for a worker) or RUNNING (external)",
                session_id=self.session_id,
            )


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_id: str
    pipeline: str
    pipeline_version: str
    status: SessionStatus
    owner_kind: OwnerKind = OwnerKind.WORKER
    input: Any = None
    project_id: str | None = None
    user_id: str | None = None
    pipeline_type: str | None = None
    progress: Progress = field(default_factory=Progress)  # tasks done / total (or external's own)
    current_agents: tuple[str, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0
    completed_at: float | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    fence: int = 0
    signal_seq: int = 0
    wait_seq: int = 0  # signal_seq seen when the session went WAITING
    wake_at: float | None = None
    redrive_count: int = 0
    max_redrives: int = 3
    needs_human: bool = False
    needs_human_reason: str | None = None
    cancel_requested: bool = False
    reason: str | None = None  # why it ended (or was cancelled)
    trace_context: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    expires_at: float | None = None  # TTL
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class SignalRecord:
    task_id: str
    name: str
    payload: Any
    seq: int
    sent_at: float


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """Everything needed to resume a session, from one read (one Query on DynamoDB).

    Holds only adopted tasks: tasks added at run time by an agent whose completion has
    not been recorded are left out, as are output chunks no completion names.
    """

    session: SessionRecord
    tasks: Mapping[str, TaskRecord]
    edges: tuple[Edge, ...]
    signals: Mapping[tuple[str, str], SignalRecord] = field(default_factory=dict)

    def task(self, task_id: str) -> TaskRecord:
        from orchestrator.errors import TaskNotFoundError

        try:
            return self.tasks[task_id]
        except KeyError:
            raise TaskNotFoundError(
                f"session {self.session.session_id} has no task {task_id!r}; known tasks: "
                f"{', '.join(sorted(self.tasks)) or '(none)'}",
                session_id=self.session.session_id,
                task_id=task_id,
            ) from None


@dataclass(frozen=True, slots=True)
class PreviousHolder:
    """Who held a session just before a claim took it, read from the record the claim decided on.

    `owner` is None when nobody held it (PENDING, or released by a wait or a finish);
    a RUNNING `status` means the claim took it over from an owner whose lease expired.
    """

    owner: str | None
    fence: int
    status: SessionStatus
    lease_expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof of ownership: every fenced write carries it.

    For a worker, `owner` is its worker id and `expires_at` the lease deadline. For an
    external session, `owner` is `external:<token>` and `expires_at` is None.
    """

    session_id: str
    owner: str
    fence: int
    expires_at: float | None
    signal_seq: int = 0  # the session's signal sequence as seen at claim/renew
    previous: PreviousHolder | None = None  # set by a claim: who held the session before it

    def with_expiry(self, expires_at: float | None) -> Lease:
        return replace(self, expires_at=expires_at)


@dataclass(frozen=True, slots=True)
class ClaimPolicy:
    """Which sessions a claim may take, besides PENDING and expired RUNNING ones.

    `redrive_failed`: claim a FAILED session (not flagged needs-human, redrives left)
    whose `updated_at` is at or before `failed_updated_before` (the cron's bound,
    re-checked in the claim's condition). `force`: also past the redrive limit and
    clearing needs-human (a person's explicit resume). WAITING sessions are claimable
    when due: wake-at passed or a signal arrived after they started waiting.
    """

    redrive_failed: bool = False
    failed_updated_before: float | None = None
    force: bool = False


class TaskWriteKind(str, enum.Enum):
    START = "start"  # PENDING/RUNNING/FAILED... -> RUNNING, attempt + 1
    PROGRESS = "progress"
    CHECKPOINT = "checkpoint"
    COMPLETE = "complete"
    RETRY = "retry"  # attempt failed, will retry at not_before -> PENDING
    REQUEUE = "requeue"  # as RETRY, but the store failed, not the agent: the attempt is not counted
    ABANDON = "abandon"  # a previous owner's attempt that never recorded an outcome -> PENDING, with its entry
    FAIL = "fail"
    SKIP = "skip"
    CANCEL = "cancel"
    WAIT = "wait"  # the attempt is waiting for a signal -> WAITING
    WAKE = "wake"  # WAITING -> RUNNING, same attempt (a wake is not a new attempt)
    RESET = "reset"  # redrive: fresh attempts for a failed/skipped/cancelled task -> PENDING


@dataclass(frozen=True, slots=True)
class TaskWrite:
    """One fenced task transition; many go in one `Store.write_tasks` batch.

    The store applies it only if the task is not COMPLETED and either its fence is
    older than the lease's, or it equals it and the task's attempt equals `attempt`
    (for START, the attempt before this one; otherwise the attempt being written).
    """

    kind: TaskWriteKind
    task_id: str
    attempt: int
    output: Any = None
    progress: Progress | None = None
    checkpoint: Any = None
    error: ErrorInfo | None = None
    not_before: float | None = None
    reason: str | None = None
    waiting_for: str | None = None  # WAIT: the signal the task waits for (None: a plain timer)


class WriteOutcome(str, enum.Enum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"  # our earlier try landed; its response was lost
    COMPLETED_ELSEWHERE = "completed_elsewhere"  # adopt the stored output
    STALE = "stale"  # a newer fence or attempt wrote the task: stop (lease likely lost)


@dataclass(frozen=True, slots=True)
class PipelineDefinition:
    """A pipeline's stored shape, so a resumed session can be checked against the code."""

    name: str
    version: str
    tasks: tuple[NewTask, ...]
    created_at: float = 0.0

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for t in sorted(self.tasks, key=lambda t: t.task_id):
            h.update(f"{t.task_id}|{t.agent}|{t.priority}|{','.join(sorted(t.depends_on))}\n".encode())
        return h.hexdigest()[:16]
