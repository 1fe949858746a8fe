"""Per-writer metric counters: aggregate samples in memory, flush cumulative rows.

A `MetricsRecorder` folds `MetricSample`s into one cumulative `MetricSummary` per
(day, hour, name, agent) and writes the changed ones with `Store.record_metrics`
under its own writer id and a sequence number that rises with every flush. The rows
hold absolute values and the store keeps the highest sequence per row, so a retried
write never double-counts and no single item is hot (readers sum over writers).

Conventions: a task execution is a sample named "task" with `agent=<agent name>`; a
session outcome is named "session" with `agent="project:<project_id>"`, `error=True`
for FAILED and `blocked=True` for a FAILED session flagged needs-human
(`session_sample` builds both the same way everywhere). A task of a project's session is
counted a second time as "project_task" with `agent=<project_id>/<agent name>` (project ids
hold no '/'), so a project's agents are read from one day's rows, never by loading its
sessions. Any other name is a custom metric (`StateAPI.record_metric`): its `value`s are
summed, or with a unit it is a duration.

Metrics are statistics: samples buffered in a process that is SIGKILLed before its
next flush are lost. State (sessions, tasks, outputs) never is: it is written through
the Store before an operation returns.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import anyio
import anyio.abc

from orchestrator.clock import Clock
from orchestrator.errors import StoreError, ValidationError
from orchestrator.store.protocol import Store
from orchestrator.store.records import (
    LATENCY_BUCKETS_MS,
    PROJECT_TASK_METRIC,
    TASK_METRIC,
    MetricSample,
    MetricSummary,
    ProjectStats,
    SessionRecord,
    SessionStatus,
    TaskRecord,
    TaskStatus,
    bucket_index,
    project_task_agent,
)

__all__ = [
    "CACHE_HIT_METRIC",
    "PROJECT_TASK_METRIC",
    "SESSION_METRIC",
    "TASK_METRIC",
    "MetricsRecorder",
    "agent_stats",
    "custom_stats",
    "day_of",
    "day_totals",
    "default_writer_id",
    "merge_summaries",
    "project_agent",
    "project_task_agent",
    "project_stats",
    "session_sample",
    "task_sample",
]

SESSION_METRIC = "session"
CACHE_HIT_METRIC = "cache_hit"  # a task completed from a cached output, per agent
#: Samples older than this (relative to the clock) are dropped: their rows were evicted.
_RETAIN_SECONDS = 48 * 3600.0
_N_BUCKETS = len(LATENCY_BUCKETS_MS) + 1

logger = logging.getLogger(__name__)

_Key = tuple[str, int, str, str]  # (day, hour, name, agent)


def default_writer_id() -> str:
    """`<host>-<pid>-<random>`: unique per recorder, stable for its lifetime."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def day_of(ts: float) -> tuple[str, int]:
    """The UTC day (`YYYY-MM-DD`) and hour (0-23) of an epoch timestamp."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%d"), dt.hour


def project_agent(project_id: str) -> str:
    """The `agent` under which a project's session outcomes are counted."""
    return f"project:{project_id}"


def task_sample(task: TaskRecord, at: float) -> MetricSample:
    """The "task" sample for a task that just ended (COMPLETED or FAILED)."""
    duration = task.duration
    return MetricSample(
        name=TASK_METRIC,
        agent=task.agent,
        at=at,
        duration_ms=None if duration is None else duration * 1000.0,
        error=task.status is TaskStatus.FAILED,
    )


def session_sample(session: SessionRecord, at: float) -> MetricSample | None:
    """The "session" sample for a finished session of a project; None if not countable.

    COMPLETED counts as completed, FAILED as an error, FAILED with needs-human as
    blocked (not an error, so completed/failed/blocked are disjoint). CANCELLED
    sessions and sessions without a project are not counted.
    """
    if session.project_id is None or session.status not in (SessionStatus.COMPLETED, SessionStatus.FAILED):
        return None
    end = session.completed_at if session.completed_at is not None else at
    blocked = session.status is SessionStatus.FAILED and session.needs_human
    return MetricSample(
        name=SESSION_METRIC,
        agent=project_agent(session.project_id),
        at=at,
        duration_ms=max(0.0, end - session.created_at) * 1000.0,
        error=session.status is SessionStatus.FAILED and not blocked,
        blocked=blocked,
    )


@dataclass(slots=True)
class _Aggregate:
    count: int = 0
    errors: int = 0
    blocked: int = 0
    sum_ms: float = 0.0
    min_ms: float | None = None
    max_ms: float | None = None
    buckets: list[int] = field(default_factory=lambda: [0] * _N_BUCKETS)

    def add(self, sample: MetricSample) -> None:
        self.count += 1
        self.errors += int(sample.error)
        self.blocked += int(sample.blocked)
        if sample.duration_ms is not None:
            ms = max(0.0, float(sample.duration_ms))
            self.sum_ms += ms
            self.min_ms = ms if self.min_ms is None else min(self.min_ms, ms)
            self.max_ms = ms if self.max_ms is None else max(self.max_ms, ms)
            self.buckets[bucket_index(ms)] += 1
        elif sample.value is not None:
            self.sum_ms += float(sample.value)

    def summary(self, key: _Key) -> MetricSummary:
        day, hour, name, agent = key
        return MetricSummary(
            day=day,
            hour=hour,
            name=name,
            agent=agent,
            count=self.count,
            errors=self.errors,
            blocked=self.blocked,
            sum_ms=self.sum_ms,
            min_ms=self.min_ms,
            max_ms=self.max_ms,
            buckets=tuple(self.buckets),
        )


class MetricsRecorder:
    """Aggregates samples in memory and flushes cumulative per-writer rows to a store.

    `observe()` never does I/O; `flush()` writes what changed since the last flush;
    `run()` flushes every `flush_interval` seconds of the injected clock, and once more
    on exit (also when cancelled).
    """

    def __init__(
        self,
        store: Store,
        *,
        writer: str | None = None,
        clock: Clock | None = None,
        flush_interval: float = 5.0,
    ) -> None:
        if flush_interval <= 0:
            raise ValidationError(f"metrics flush_interval={flush_interval} must be > 0 seconds")
        self.store = store
        self.writer = writer or default_writer_id()
        self.clock = clock or store.clock
        self.flush_interval = flush_interval
        self.seq = 0
        self.dropped = 0  # samples older than the retention window
        self._aggs: dict[_Key, _Aggregate] = {}
        self._dirty: set[_Key] = set()
        self._lock = anyio.Lock()

    def observe(self, sample: MetricSample) -> None:
        """Fold one sample into its (day, hour, name, agent) counters; no I/O."""
        if not sample.name or not sample.agent:
            raise ValidationError(
                f"metric sample {sample!r} needs a non-empty name and agent (use the agent name, "
                f"or 'project:<id>' for project aggregates)"
            )
        if sample.at < self.clock.now() - _RETAIN_SECONDS:
            # Its row may have been evicted; counting from zero would overwrite the
            # stored cumulative value with a smaller one.
            self.dropped += 1
            return
        day, hour = day_of(sample.at)
        key = (day, hour, sample.name, sample.agent)
        agg = self._aggs.get(key)
        if agg is None:
            agg = self._aggs[key] = _Aggregate()
        agg.add(sample)
        self._dirty.add(key)

    def observe_many(self, samples: Iterable[MetricSample]) -> None:
        for sample in samples:
            self.observe(sample)

    def snapshot(self) -> list[MetricSummary]:
        """This writer's cumulative counters as held in memory (flushed or not)."""
        return [agg.summary(key) for key, agg in sorted(self._aggs.items())]

    @property
    def pending(self) -> int:
        """How many rows changed since the last successful flush."""
        return len(self._dirty)

    async def flush(self) -> int:
        """Write the changed rows under a new sequence number; returns how many.

        On failure the rows stay dirty for the next flush (which uses a higher
        sequence and the then-current absolute values) and the error propagates.
        """
        async with self._lock:
            if not self._dirty:
                return 0
            keys = sorted(self._dirty)
            self._dirty.clear()
            self.seq += 1
            summaries = [self._aggs[k].summary(k) for k in keys]
            try:
                await self.store.record_metrics(self.writer, self.seq, summaries)
            except BaseException:
                self._dirty.update(keys)
                raise
            self._evict()
            return len(summaries)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Flush periodically until cancelled, then flush once more (shielded)."""
        task_status.started()
        try:
            while True:
                await self.clock.sleep(self.flush_interval)
                try:
                    await self.flush()
                except StoreError as exc:
                    logger.warning(
                        "metrics flush of writer %s failed (kept for the next one): %s", self.writer, exc
                    )
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.flush()
                except StoreError as exc:
                    logger.warning("final metrics flush of writer %s failed; %d rows lost: %s",
                                   self.writer, self.pending, exc)

    def _evict(self) -> None:
        horizon_day, horizon_hour = day_of(self.clock.now() - _RETAIN_SECONDS)
        for key in [k for k in self._aggs if (k[0], k[1]) < (horizon_day, horizon_hour) and k not in self._dirty]:
            del self._aggs[key]


def merge_summaries(items: Sequence[MetricSummary], *, day: str, hour: int, name: str, agent: str) -> MetricSummary:
    """The sum of several summaries (over writers, hours or days) under one key."""
    total = MetricSummary(day=day, hour=hour, name=name, agent=agent, buckets=(0,) * _N_BUCKETS)
    for s in items:
        total = total.plus(replace(s, buckets=s.buckets[:_N_BUCKETS]))
    return total


async def project_stats(store: Store, project_id: str, days: Sequence[str]) -> ProjectStats:
    """A project's session outcomes over `days` (`YYYY-MM-DD`, UTC), summed over writers."""
    agent = project_agent(project_id)
    rows: list[MetricSummary] = []
    for day in days:
        rows.extend(await store.read_metrics(day, name=SESSION_METRIC, agent=agent))
    total = merge_summaries(rows, day=days[0] if days else "", hour=-1, name=SESSION_METRIC, agent=agent)
    return ProjectStats(
        project_id=project_id,
        total=total.count,
        completed=total.count - total.errors - total.blocked,
        failed=total.errors,
        blocked=total.blocked,
        mean_duration_ms=total.mean_ms,
    )


async def agent_stats(
    store: Store, day: str, agent: str | None = None, *, by_hour: bool = False, project: str | None = None
) -> list[MetricSummary]:
    """Task counters for one day per agent (hour -1 = the whole day), or per hour with `by_hour`;
    with `project`, only that project's tasks."""
    if project is None:
        rows = await store.read_metrics(day, name=TASK_METRIC, agent=agent)
    elif agent is not None:
        rows = [replace(r, name=TASK_METRIC, agent=agent) for r in
                await store.read_metrics(day, name=PROJECT_TASK_METRIC, agent=project_task_agent(project, agent))]
    else:
        prefix = project_task_agent(project, "")
        rows = [replace(r, name=TASK_METRIC, agent=r.agent.removeprefix(prefix))
                for r in await store.read_metrics(day, name=PROJECT_TASK_METRIC) if r.agent.startswith(prefix)]
    if by_hour:
        return sorted(rows, key=lambda s: (s.agent, s.hour))
    return day_totals(rows, day)


def day_totals(rows: Sequence[MetricSummary], day: str) -> list[MetricSummary]:
    """Per agent, the day's totals (hour -1) of its task counter rows: a view that shows both
    hours and totals derives them from one read, so a flush in between cannot split them."""
    by_agent: dict[str, list[MetricSummary]] = {}
    for row in rows:
        by_agent.setdefault(row.agent, []).append(row)
    return [
        merge_summaries(group, day=day, hour=-1, name=TASK_METRIC, agent=name)
        for name, group in sorted(by_agent.items())
    ]


async def custom_stats(store: Store, day: str, agent: str | None = None) -> list[MetricSummary]:
    """Custom metrics (every name but "task" and "session") for one day, per name and agent."""
    groups: dict[tuple[str, str], list[MetricSummary]] = {}
    for row in await store.read_metrics(day, agent=agent):
        if row.name not in (TASK_METRIC, SESSION_METRIC, PROJECT_TASK_METRIC):
            groups.setdefault((row.name, row.agent), []).append(row)
    return [merge_summaries(rows, day=day, hour=-1, name=name, agent=who)
            for (name, who), rows in sorted(groups.items())]

