"""What sessions leave besides their state: events, metric counters, and the users' project history."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.errors import ValidationError
from orchestrator.store.records.base import LATENCY_BUCKETS_MS, SCHEMA_VERSION, check_id

__all__ = ["EVENT_KINDS", "PROJECT_TASK_METRIC", "TASK_METRIC", "Event", "MetricSample", "MetricSummary",
           "ProjectStats", "UserProjectRecord", "bucket_index", "percentile_from_buckets", "project_task_agent"]

#: Every kind of event recorded, and who records it. `orchestrator events --help` and
#: docs/design.md list exactly these; tests/test_event_kinds.py checks them against the code.
EVENT_KINDS: Mapping[str, str] = {
    "created": "the session was created: pipeline, version, task count, project, user, owner (store)",
    "fork": "the session was forked from another session at a task; how many outputs it kept (fork)",
    "claim": "a worker holds the session: owner, fence, lease expiry, whether it is a redrive (runner)",
    "takeover": "a worker took the session over from an owner that stopped renewing its lease: both owners "
                "and both fences (runner)",
    "lease_lost": "this runner lost its lease: the fence it held, who holds the session now if known (runner)",
    "redrive": "a redrive gave the tasks that had not completed fresh attempts (runner)",
    "signal": "a signal was sent to a task: name and sequence, never the payload (store)",
    "wait": "a task waits for a signal; the session waits, its lease released (runner)",
    "wake": "a waiting task was woken by a signal (its name) or by its wait's deadline (runner)",
    "resource_wait": "a task waits for a fleet-wide resource limit (concurrency or rate), holding no slot "
                     "(runner)",
    "resource_acquired": "a task holds the resources it waited for, and how long it waited (runner)",
    "cache": "a task completed with a cached output, without running its agent: the cache key (runner)",
    "retry": "a task attempt failed and is retried after a backoff (runner)",
    "requeue": "the store failed under an attempt: it runs again, not counted as an attempt (runner)",
    "failed": "a task failed for good (runner)",
    "adopt": "a task completed by another owner was adopted with its output (runner)",
    "cancel": "a cancel was requested: reason, the status it had, whether it ended at once (store); the "
              "runner began cancelling (runner)",
    "needs_human": "the needs-human flag was set (reason) or cleared, also by a forced claim (store)",
    "end": "the session ended COMPLETED, FAILED or CANCELLED, with the reason; a cancel says how many tasks "
           "it cancelled (runner)",
    "log": "a line an agent or a SessionRecorder chose to record (agents)",
}


@dataclass(frozen=True, slots=True)
class Event:
    session_id: str
    kind: str  # one of EVENT_KINDS
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


def bucket_index(duration_ms: float) -> int:
    """Index of the log-scale latency bucket for a duration."""
    if duration_ms <= LATENCY_BUCKETS_MS[0]:
        return 0
    idx = math.ceil(math.log2(duration_ms))
    return min(idx, len(LATENCY_BUCKETS_MS))


def percentile_from_buckets(buckets: Sequence[int], q: float, low: float | None = None,
                            high: float | None = None) -> float | None:
    """Estimate (ms) of quantile `q` (0..1); None when empty.

    Linear within the log-scale bucket that holds the rank (between its lower and upper
    edge), then kept within the observed `low` (min) and `high` (max) when given, so a
    percentile never exceeds the largest duration seen (a bucket's upper edge would).
    """
    total = sum(buckets)
    if total == 0:
        return None
    rank = max(1.0, q * total)
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            lower = LATENCY_BUCKETS_MS[i - 1] if i > 0 else 0.0
            upper = LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else (high or lower) * 1.0
            estimate = lower + (upper - lower) * (rank - seen) / count
            if high is not None:
                estimate = min(estimate, high)
            if low is not None:
                estimate = max(estimate, low)
            return estimate
        seen += count
    return high if high is not None else math.inf


TASK_METRIC = "task"
#: A task of a project's session counted again, under `project_task_agent`.
PROJECT_TASK_METRIC = "project_task"


def project_task_agent(project_id: str, agent: str) -> str:
    """`<project_id>/<agent>`: project ids hold no '/', so the prefix is unambiguous."""
    return f"{project_id}/{agent}"


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
        """Estimated quantile `q` of the durations, within [min_ms, max_ms]."""
        return percentile_from_buckets(self.buckets, q, self.min_ms, self.max_ms)

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
