"""MetricsRecorder: in-memory aggregation, cumulative per-writer flushes, derived stats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import anyio
import pytest

from orchestrator.errors import StoreUnavailableError, ValidationError
from orchestrator.metrics import (
    MetricsRecorder,
    agent_stats,
    day_of,
    project_agent,
    project_stats,
    session_sample,
)
from orchestrator.store import (
    LATENCY_BUCKETS_MS,
    MetricSample,
    MetricSummary,
    SessionRecord,
    SessionStatus,
    Store,
)
from orchestrator.testing import FakeClock

# Store-specific behaviour runs on SQLite and in-process DynamoDB (moto); the rest on SQLite.
pytestmark = [pytest.mark.anyio, pytest.mark.backends("sqlite")]

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z, the FakeClock's default start
DAY, HOUR = day_of(T0)


class RecordingStore:
    """Delegates to a real store; keeps every `record_metrics` call and can fail some."""

    def __init__(self, inner: Store, fail_next: int = 0) -> None:
        self.inner = inner
        self.fail_next = fail_next
        self.calls: list[tuple[str, int, list[MetricSummary]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def record_metrics(self, writer: str, seq: int, summaries: Sequence[MetricSummary]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise StoreUnavailableError("throttled (test)")
        self.calls.append((writer, seq, list(summaries)))
        await self.inner.record_metrics(writer, seq, summaries)


def task(agent: str, ms: float | None, *, at: float = T0, error: bool = False) -> MetricSample:
    return MetricSample(name="task", agent=agent, at=at, duration_ms=ms, error=error)


async def test_observe_aggregates_per_day_hour_name_agent(store: Store, fake_clock: FakeClock) -> None:
    rec = MetricsRecorder(store, writer="w1", clock=fake_clock)
    rec.observe(task("gen", 10))
    rec.observe(task("gen", 30, error=True))
    rec.observe(task("gen", 5, at=T0 + 3600))
    rec.observe(task("parse", 1))
    rows = {(s.hour, s.agent): s for s in rec.snapshot()}
    assert set(rows) == {(HOUR, "gen"), (HOUR + 1, "gen"), (HOUR, "parse")}
    gen = rows[(HOUR, "gen")]
    assert (gen.count, gen.errors, gen.sum_ms, gen.min_ms, gen.max_ms) == (2, 1, 40.0, 10.0, 30.0)
    assert len(gen.buckets) == len(LATENCY_BUCKETS_MS) + 1
    assert sum(gen.buckets) == 2
    assert gen.mean_ms == 20.0


async def test_percentiles_come_from_log_buckets(store: Store, fake_clock: FakeClock) -> None:
    rec = MetricsRecorder(store, writer="w1", clock=fake_clock)
    for _ in range(90):
        rec.observe(task("gen", 100))  # bucket bound 128 ms
    for _ in range(10):
        rec.observe(task("gen", 3000))  # bucket bound 4096 ms
    (row,) = rec.snapshot()
    p50, p95 = row.percentile(0.5), row.percentile(0.95)
    assert p50 is not None and 64.0 < p50 <= 128.0  # within the bucket that holds 100 ms
    assert p95 is not None and 2048.0 < p95 <= 3000.0  # within its bucket, never above the max seen


async def test_a_percentile_never_exceeds_the_largest_duration_seen(store: Store, fake_clock: FakeClock) -> None:
    rec = MetricsRecorder(store, writer="w1", clock=fake_clock)
    rec.observe(task("gen", 37))  # one 37 ms run: its bucket's upper edge is 64 ms
    (row,) = rec.snapshot()
    assert row.percentile(0.5) == 37.0 and row.percentile(0.95) == 37.0


@pytest.mark.backends("sqlite", "moto")
async def test_flush_writes_cumulative_rows_readers_see(store: Store, fake_clock: FakeClock) -> None:
    rec = MetricsRecorder(store, writer="w1", clock=fake_clock)
    rec.observe(task("gen", 10))
    assert await rec.flush() == 1
    rec.observe(task("gen", 20))
    assert await rec.flush() == 1
    assert await rec.flush() == 0  # nothing changed
    (row,) = await store.read_metrics(DAY, name="task", agent="gen")
    assert (row.count, row.sum_ms) == (2, 30.0)


@pytest.mark.backends("sqlite", "moto")
async def test_replayed_flush_with_same_seq_does_not_double_count(store: Store, fake_clock: FakeClock) -> None:
    spy = RecordingStore(store)
    rec = MetricsRecorder(cast(Store, spy), writer="w1", clock=fake_clock)
    rec.observe(task("gen", 10))
    rec.observe(task("gen", 10))
    await rec.flush()
    writer, seq, summaries = spy.calls[-1]
    await store.record_metrics(writer, seq, summaries)  # a retry whose first response was lost
    await store.record_metrics(writer, seq - 1, [])
    (row,) = await store.read_metrics(DAY, name="task", agent="gen")
    assert row.count == 2


@pytest.mark.backends("sqlite", "moto")
async def test_writers_are_summed_by_readers(store: Store, fake_clock: FakeClock) -> None:
    a = MetricsRecorder(store, writer="wa", clock=fake_clock)
    b = MetricsRecorder(store, writer="wb", clock=fake_clock)
    a.observe(task("gen", 10))
    b.observe(task("gen", 30, error=True))
    await a.flush()
    await b.flush()
    (row,) = await store.read_metrics(DAY, name="task", agent="gen")
    assert (row.count, row.errors, row.min_ms, row.max_ms) == (2, 1, 10.0, 30.0)


async def test_failed_flush_keeps_rows_for_the_next_one(store: Store, fake_clock: FakeClock) -> None:
    spy = RecordingStore(store, fail_next=1)
    rec = MetricsRecorder(cast(Store, spy), writer="w1", clock=fake_clock)
    rec.observe(task("gen", 10))
    with pytest.raises(StoreUnavailableError):
        await rec.flush()
    assert rec.pending == 1
    assert await rec.flush() == 1
    (row,) = await store.read_metrics(DAY, name="task", agent="gen")
    assert row.count == 1


async def test_run_flushes_on_the_clock_and_at_exit(store: Store, fake_clock: FakeClock) -> None:
    spy = RecordingStore(store)
    rec = MetricsRecorder(cast(Store, spy), writer="w1", clock=fake_clock, flush_interval=5.0)
    async with anyio.create_task_group() as tg:
        await tg.start(rec.run)
        rec.observe(task("gen", 10))
        fake_clock.advance(5.0)
        with anyio.fail_after(10):
            while not spy.calls:
                await anyio.sleep(0)
        rec.observe(task("gen", 10))
        tg.cancel_scope.cancel()
    assert [seq for _, seq, _ in spy.calls] == [1, 2]
    (row,) = await store.read_metrics(DAY, name="task", agent="gen")
    assert row.count == 2


@pytest.mark.backends("sqlite", "moto")
async def test_project_stats_derive_totals_and_success_rate(store: Store, fake_clock: FakeClock) -> None:
    rec = MetricsRecorder(store, writer="w1", clock=fake_clock)
    base = SessionRecord(
        session_id="s1", pipeline="p", pipeline_version="1", status=SessionStatus.COMPLETED,
        project_id="web", created_at=T0 - 2, completed_at=T0,
    )
    for status, needs_human in (
        (SessionStatus.COMPLETED, False),
        (SessionStatus.COMPLETED, False),
        (SessionStatus.COMPLETED, False),
        (SessionStatus.FAILED, False),
        (SessionStatus.FAILED, True),
    ):
        sample = session_sample(replace(base, status=status, needs_human=needs_human), T0)
        assert sample is not None and sample.agent == project_agent("web")
        rec.observe(sample)
    await rec.flush()
    stats = await project_stats(store, "web", [DAY])
    assert (stats.total, stats.completed, stats.failed, stats.blocked) == (5, 3, 1, 1)
    assert stats.success_rate == 0.75
    assert stats.mean_duration_ms == 2000.0


@pytest.mark.backends("sqlite", "moto")
async def test_agent_stats_merge_hours_per_agent(store: Store, fake_clock: FakeClock) -> None:
    rec = MetricsRecorder(store, writer="w1", clock=fake_clock)
    rec.observe(task("gen", 10))
    rec.observe(task("gen", 20, at=T0 + 3600))
    rec.observe(task("parse", 5, error=True))
    await rec.flush()
    daily = await agent_stats(store, DAY)
    assert [(s.agent, s.hour, s.count, s.errors) for s in daily] == [("gen", -1, 2, 0), ("parse", -1, 1, 1)]
    hourly = await agent_stats(store, DAY, "gen", by_hour=True)
    assert [(s.hour, s.count) for s in hourly] == [(HOUR, 1), (HOUR + 1, 1)]


async def test_sample_without_agent_is_refused(store: Store, fake_clock: FakeClock) -> None:
    rec = MetricsRecorder(store, writer="w1", clock=fake_clock)
    with pytest.raises(ValidationError, match="non-empty name and agent"):
        rec.observe(MetricSample(name="task", agent="", at=T0))


async def test_cancelled_sessions_are_not_counted_as_outcomes() -> None:
    s = SessionRecord(session_id="s", pipeline="p", pipeline_version="1", status=SessionStatus.CANCELLED,
                      project_id="web")
    assert session_sample(s, T0) is None
