"""The history part of the Store contract: metrics summed over writers, pipeline definitions,
retention. See `orchestrator.testing.contract`."""

from __future__ import annotations


import pytest

from orchestrator.errors import (
    PipelineNotFoundError,
    SessionNotFoundError,
    VersionMismatchError,
)
from orchestrator.store import (
    MetricSummary,
    PipelineDefinition,
    SessionStatus,
    Store,
)
from orchestrator.testing.contract_base import (
    LEASE,
    _strip,
    _tasks,
    clock_of,
    make_session,
)

__all__ = ["HistoryContract"]


class HistoryContract:
    """Metrics, pipelines and purge; needs a `store` fixture opened with a FakeClock."""

    pytestmark = pytest.mark.anyio

    # -- metrics ---------------------------------------------------------------------------

    async def test_metrics_are_summed_over_writers(self, store: Store) -> None:
        day = "2025-06-15"
        w1 = MetricSummary(day, 3, "task", "coder", count=4, errors=1, blocked=1, sum_ms=40.0, min_ms=5.0,
                           max_ms=20.0, buckets=(1, 2, 1))
        w2 = MetricSummary(day, 3, "task", "coder", count=2, errors=0, sum_ms=10.0, min_ms=2.0, max_ms=8.0,
                           buckets=(0, 1, 0, 1))
        other = MetricSummary(day, 4, "task", "tester", count=9)
        await store.record_metrics("writer-1", 1, [w1, other])
        await store.record_metrics("writer-2", 1, [w2])
        [coder] = await store.read_metrics(day, name="task", agent="coder")
        assert (coder.hour, coder.count, coder.errors, coder.blocked, coder.sum_ms) == (3, 6, 1, 1, 50.0)
        assert (coder.min_ms, coder.max_ms, _strip(coder.buckets)) == (2.0, 20.0, (1, 3, 1, 1))
        assert {(m.agent, m.count) for m in await store.read_metrics(day)} == {("coder", 6), ("tester", 9)}

    async def test_retried_record_metrics_with_the_same_seq_does_not_double_count(self, store: Store) -> None:
        day = "2025-06-15"
        first = MetricSummary(day, 0, "task", "a", count=3, sum_ms=3.0, buckets=(3,))
        later = MetricSummary(day, 0, "task", "a", count=5, sum_ms=5.0, buckets=(5,))
        await store.record_metrics("w", 1, [first])
        await store.record_metrics("w", 1, [first])
        await store.record_metrics("w", 2, [later])
        await store.record_metrics("w", 1, [first])  # a late retry of an older seq
        [m] = await store.read_metrics(day, agent="a")
        assert (m.count, m.sum_ms, _strip(m.buckets)) == (5, 5.0, (5,))

    # -- pipelines ---------------------------------------------------------------------------

    async def test_pipeline_put_get_and_shape_mismatch(self, store: Store) -> None:
        tasks = tuple(_tasks("plan", "code", chain=True))
        definition = PipelineDefinition("build", "2", tasks)
        await store.put_pipeline(definition)
        await store.put_pipeline(definition)
        got = await store.get_pipeline("build", "2")
        assert (got.name, got.version, got.digest) == ("build", "2", definition.digest)
        assert {t.task_id for t in got.tasks} == {"plan", "code"}
        with pytest.raises(VersionMismatchError, match="bump the pipeline's version"):
            await store.put_pipeline(PipelineDefinition("build", "2", tasks[:1]))
        assert (await store.get_pipeline("build", "2")).digest == definition.digest
        with pytest.raises(PipelineNotFoundError):
            await store.get_pipeline("build", "3")

    # -- retention ---------------------------------------------------------------------------

    async def test_purge_deletes_sessions_ended_before_the_bound(self, store: Store) -> None:
        await make_session(store, "old")
        await make_session(store, "live")
        lease = await store.claim_session("old", "w1", LEASE)
        await store.finish_session(lease, SessionStatus.COMPLETED)
        clock_of(store).advance(100)
        report = await store.purge(ended_before=clock_of(store).now() - 50)
        assert report.sessions == 1 and report.items >= 1
        with pytest.raises(SessionNotFoundError):
            await store.load_session("old")
        assert (await store.get_session("live")).status is SessionStatus.PENDING

