"""The values the Store protocol speaks in: sessions, tasks, edges, leases, events, metrics,
and the users' project history.

Frozen dataclasses, checked in `__post_init__`, with decoded JSON values (never the
encoded text and never a backend key). Times are UTC epoch seconds.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from orchestrator.errors import ValidationError

__all__ = [
    "ATTEMPT_HISTORY_LIMIT",
    "LATENCY_BUCKETS_MS",
    "SCHEMA_VERSION",
    "AttemptRecord",
    "ChunkRef",
    "ClaimPolicy",
    "Edge",
    "ErrorInfo",
    "Event",
    "Lease",
    "MetricSample",
    "MetricSummary",
    "NewSession",
    "NewTask",
    "OwnerKind",
    "Page",
    "PipelineDefinition",
    "Progress",
    "ProjectStats",
    "PurgeReport",
    "SessionRecord",
    "SessionSnapshot",
    "SessionStatus",
    "SignalRecord",
    "StoreDescription",
    "TaskRecord",
    "TaskStatus",
    "TaskWrite",
    "TaskWriteKind",
    "UserProjectRecord",
    "WriteOutcome",
    "bucket_index",
    "check_id",
    "percentile_from_buckets",
]

#: Version written on every item/row; a newer one is refused by older code.
SCHEMA_VERSION = 1
#: Attempt history kept per task (oldest dropped).
ATTEMPT_HISTORY_LIMIT = 10
#: Upper bounds (ms) of the fixed log-scale latency buckets; a last bucket catches the rest.
LATENCY_BUCKETS_MS: tuple[float, ...] = tuple(float(2**i) for i in range(0, 25))  # 1 ms .. ~4.7 h

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")


def check_id(kind: str, value: str, where: str = "") -> str:
    """Ids go into keys: letters, digits and `_ . : @ -`, at most 128, no '#'."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        at = f" in {where}" if where else ""
        raise ValidationError(
            f"{kind} id {value!r}{at} is not valid: use 1-128 letters, digits or _ . : @ -, "
            f"starting with a letter or digit (no '#', '/', or spaces)",
            field=kind,
        )
    return value


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
    not_before: float | None = None  # a retry's backoff, durable across crashes
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


class WriteOutcome(str, enum.Enum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"  # our earlier try landed; its response was lost
    COMPLETED_ELSEWHERE = "completed_elsewhere"  # adopt the stored output
    STALE = "stale"  # a newer fence or attempt wrote the task: stop (lease likely lost)


@dataclass(frozen=True, slots=True)
class Event:
    session_id: str
    kind: str  # "log", "retry", "lease", "signal", "cancel", ...
    at: float
    task_id: str | None = None
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    writer: str = ""
    seq: int = 0  # per writer; with `at` and `writer` it makes the event key unique
    level: str = "INFO"

    @property
    def cursor(self) -> str:
        return f"{self.at:017.6f}#{self.writer}#{self.seq:010d}"


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    cursor: str | None  # pass back for the next page; None when exhausted


def bucket_index(duration_ms: float) -> int:
    """Index of the log-scale latency bucket for a duration."""
    if duration_ms <= LATENCY_BUCKETS_MS[0]:
        return 0
    idx = math.ceil(math.log2(duration_ms))
    return min(idx, len(LATENCY_BUCKETS_MS))


def percentile_from_buckets(buckets: Sequence[int], q: float) -> float | None:
    """Upper bound (ms) of the bucket holding quantile `q` (0..1); None when empty."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            return LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else math.inf
    return math.inf


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One observation; writers aggregate samples per (day, hour, name, agent)."""

    name: str  # e.g. "task" (agent executions), "session" (per project outcomes)
    agent: str  # agent name, or "project:<pid>" for project aggregates
    at: float
    duration_ms: float | None = None
    error: bool = False
    blocked: bool = False
    value: float | None = None  # a free-form value summed as `sum` when no duration


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """Counters for one (day, hour, name, agent), summed over writers by the reader."""

    day: str
    hour: int
    name: str
    agent: str
    count: int = 0
    errors: int = 0
    blocked: int = 0
    sum_ms: float = 0.0
    min_ms: float | None = None
    max_ms: float | None = None
    buckets: tuple[int, ...] = ()

    @property
    def mean_ms(self) -> float | None:
        timed = sum(self.buckets)
        return self.sum_ms / timed if timed else None

    @property
    def error_rate(self) -> float:
        return self.errors / self.count if self.count else 0.0

    def percentile(self, q: float) -> float | None:
        return percentile_from_buckets(self.buckets, q)

    def plus(self, other: MetricSummary) -> MetricSummary:
        """Both counters summed under this summary's key: sums, min of mins, max of maxes."""
        width = max(len(self.buckets), len(other.buckets))
        mine = (*self.buckets, *([0] * (width - len(self.buckets))))
        theirs = (*other.buckets, *([0] * (width - len(other.buckets))))
        mins = [m for m in (self.min_ms, other.min_ms) if m is not None]
        maxes = [m for m in (self.max_ms, other.max_ms) if m is not None]
        return replace(
            self,
            count=self.count + other.count,
            errors=self.errors + other.errors,
            blocked=self.blocked + other.blocked,
            sum_ms=self.sum_ms + other.sum_ms,
            min_ms=min(mins) if mins else None,
            max_ms=max(maxes) if maxes else None,
            buckets=tuple(a + b for a, b in zip(mine, theirs, strict=True)),
        )


@dataclass(frozen=True, slots=True)
class ProjectStats:
    project_id: str
    total: int
    completed: int
    failed: int
    blocked: int
    mean_duration_ms: float | None

    @property
    def success_rate(self) -> float:
        done = self.completed + self.failed
        return self.completed / done if done else 0.0


@dataclass(frozen=True, slots=True)
class UserProjectRecord:
    """One project in a user's history: what was generated, and its downloads.

    `put_user_project` writes the descriptive fields; `download_count` and
    `last_accessed` move only through `record_download`. The store stamps the times.
    """

    user_id: str
    project_id: str
    project_name: str
    description: str = ""
    tech_stack: tuple[str, ...] = ()
    file_path: str | None = None
    size_mb: float = 0.0
    download_count: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    last_accessed: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        check_id("user", self.user_id)
        check_id("project", self.project_id)
        what = f"project {self.project_id} of user {self.user_id}"
        ids = {"user_id": self.user_id, "project_id": self.project_id}
        if not isinstance(self.project_name, str) or not self.project_name:
            raise ValidationError(f"{what} has no project_name; pass a non-empty string", field="project_name", **ids)
        if not isinstance(self.description, str):
            raise ValidationError(f"{what}: description must be a string, got {self.description!r}",
                                  field="description", **ids)
        if isinstance(self.tech_stack, str) or not all(isinstance(t, str) and t for t in self.tech_stack):
            raise ValidationError(f"{what}: tech_stack must be a list of non-empty strings, got {self.tech_stack!r}",
                                  field="tech_stack", **ids)
        object.__setattr__(self, "tech_stack", tuple(self.tech_stack))
        if self.file_path is not None and not isinstance(self.file_path, str):
            raise ValidationError(f"{what}: file_path must be a string or None, got {self.file_path!r}",
                                  field="file_path", **ids)
        for name in ("size_mb", "created_at", "updated_at", "last_accessed"):
            value = getattr(self, name)
            if value is None and name == "last_accessed":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValidationError(f"{what}: {name}={value!r} must be a finite number >= 0", field=name, **ids)
        if isinstance(self.download_count, bool) or not isinstance(self.download_count, int) or self.download_count < 0:
            raise ValidationError(f"{what}: download_count={self.download_count!r} must be an integer >= 0",
                                  field="download_count", **ids)
        if not isinstance(self.metadata, Mapping):
            raise ValidationError(f"{what}: metadata must be a mapping, got {type(self.metadata).__name__}",
                                  field="metadata", **ids)


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


@dataclass(frozen=True, slots=True)
class PurgeReport:
    sessions: int
    items: int


@dataclass(frozen=True, slots=True)
class StoreDescription:
    """Where a store keeps its data, for messages and `orchestrator doctor`."""

    backend: str  # "sqlite" | "dynamodb"
    location: str  # file path, or table name
    region: str | None = None
    endpoint: str | None = None

    def __str__(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in (("region", self.region), ("endpoint", self.endpoint)) if v)
        return f"{self.backend}:{self.location}{extra}"
