"""DynamoDB-only contract: lost responses and request counts, through botocore's event hooks.

A lost response is a request that landed but whose answer never came back; the store
layer then sends it again. It is injected on the real wire path: a handler on
`after-call.dynamodb.<Op>` (run after DynamoDB applied the request) raises
`ReadTimeoutError` once. The retried write must be reported APPLIED or ALREADY_APPLIED
(never a conflict) and must not take effect twice. Request counts come from
`before-call` handlers. Needs a `store` fixture that is a DynamoDB store opened with a
FakeClock (its retry backoff sleeps on that clock, so these tests keep it ticking).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from botocore.exceptions import ReadTimeoutError

from orchestrator.store import ClaimPolicy, MetricSummary, NewTask, SessionStatus, Store, TaskStatus, WriteOutcome
from orchestrator.testing.contract import LEASE, clock_of, complete, make_session, start

__all__ = ["DynamoDBContract", "lose_response", "count_requests"]

WRITE_OPS = frozenset({"UpdateItem", "PutItem", "TransactWriteItems", "BatchWriteItem", "DeleteItem"})


def _events(store: Store) -> Any:
    events = getattr(store, "client_events", None)
    assert events is not None, f"{store!r} has no client_events: this part of the contract is for DynamoDB"
    return events


@asynccontextmanager
async def _ticking(store: Store) -> AsyncIterator[None]:
    """Advance the store's FakeClock in small steps so retry backoff sleeps return."""
    clock = clock_of(store)
    async with anyio.create_task_group() as tg:

        async def tick() -> None:
            while True:
                await anyio.sleep(0.001)
                clock.advance(0.01)

        tg.start_soon(tick)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


class lose_response:  # noqa: N801 - used like a function: `with lose_response(store) as lost:`
    """Raise ReadTimeoutError after the first write request (of `ops`) landed; `fired` counts."""

    def __init__(self, store: Store, ops: frozenset[str] = WRITE_OPS) -> None:
        self._events = _events(store)
        self._ops = ops
        self.fired = 0
        self.ops: list[str] = []

    def _after(self, model: Any = None, **_: Any) -> None:
        name = getattr(model, "name", "")
        if name in self._ops and self.fired == 0:
            self.fired += 1
            self.ops.append(name)
            raise ReadTimeoutError(endpoint_url="http://lost-response.test")

    def __enter__(self) -> lose_response:
        self._events.register("after-call.dynamodb", self._after, unique_id=f"lose-{id(self)}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._events.unregister("after-call.dynamodb", self._after, unique_id=f"lose-{id(self)}")


class count_requests:  # noqa: N801
    """Record the name of every DynamoDB request sent while active, in `ops`."""

    def __init__(self, store: Store) -> None:
        self._events = _events(store)
        self.ops: list[str] = []

    def _before(self, model: Any = None, **_: Any) -> None:
        self.ops.append(getattr(model, "name", "?"))

    def __enter__(self) -> count_requests:
        self._events.register("before-call.dynamodb", self._before, unique_id=f"count-{id(self)}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._events.unregister("before-call.dynamodb", self._before, unique_id=f"count-{id(self)}")


async def _with_lost_response(store: Store, fn: Callable[[], Any]) -> tuple[Any, lose_response]:
    with lose_response(store) as lost:
        async with _ticking(store):
            with anyio.fail_after(30):
                result = await fn()
    assert lost.fired == 1, "no write request was sent: the fault was never injected"
    return result, lost


class DynamoDBContract:
    """Lost responses, no Scan, one Query per resume, requests per task."""

    pytestmark = pytest.mark.anyio

    async def test_lost_response_of_a_start_is_already_applied_and_not_repeated(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        [result], _ = await _with_lost_response(store, lambda: store.write_tasks(lease, [start("t1")]))
        assert result.outcome in (WriteOutcome.APPLIED, WriteOutcome.ALREADY_APPLIED)
        t1 = await store.get_task("s1", "t1")
        assert (t1.status, t1.attempt, t1.fence) == (TaskStatus.RUNNING, 1, 1)

    async def test_lost_response_of_a_complete_is_already_applied_and_recorded_once(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        [result], _ = await _with_lost_response(
            store, lambda: store.write_tasks(lease, [complete("t1", output={"n": 1})]))
        assert result.outcome in (WriteOutcome.APPLIED, WriteOutcome.ALREADY_APPLIED)
        t1 = await store.get_task("s1", "t1")
        assert (t1.status, t1.output, t1.attempt, len(t1.history)) == (TaskStatus.COMPLETED, {"n": 1}, 1, 1)

    async def test_lost_response_of_a_batch_is_already_applied(self, store: Store) -> None:
        await make_session(store, tasks=[NewTask("a", "x"), NewTask("b", "x"), NewTask("c", "x")])
        lease = await store.claim_session("s1", "w1", LEASE)
        results, _ = await _with_lost_response(
            store, lambda: store.write_tasks(lease, [start("a"), start("b"), start("c")]))
        assert all(r.ok for r in results) and [r.task_id for r in results] == ["a", "b", "c"]
        snap = await store.load_session("s1")
        assert {t.task_id: t.attempt for t in snap.tasks.values()} == {"a": 1, "b": 1, "c": 1}

    async def test_lost_response_of_a_claim_returns_the_lease_once(self, store: Store) -> None:
        await make_session(store)
        lease, _ = await _with_lost_response(store, lambda: store.claim_session("s1", "w1", LEASE))
        s = await store.get_session("s1")
        assert (lease.fence, lease.owner, s.fence, s.lease_owner) == (1, "w1", 1, "w1")

    async def test_lost_response_of_a_redrive_claim_counts_one_redrive(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.finish_session(lease, SessionStatus.FAILED, "boom")
        policy = ClaimPolicy(redrive_failed=True)
        await _with_lost_response(store, lambda: store.claim_session("s1", "cron", LEASE, policy))
        s = await store.get_session("s1")
        assert (s.fence, s.redrive_count, s.status) == (2, 1, SessionStatus.RUNNING)

    async def test_lost_response_of_record_metrics_does_not_double_count(self, store: Store) -> None:
        m = MetricSummary("2025-06-15", 1, "task", "a", count=5, sum_ms=50.0, buckets=(0, 5))
        await _with_lost_response(store, lambda: store.record_metrics("w", 1, [m]))
        [got] = await store.read_metrics("2025-06-15", agent="a")
        assert (got.count, got.sum_ms) == (5, 50.0)

    async def test_lost_response_of_create_session_creates_it_once(self, store: Store) -> None:
        await _with_lost_response(store, lambda: make_session(store))
        snap = await store.load_session("s1")
        assert set(snap.tasks) == {"t1", "t2"} and snap.session.fence == 0

    async def test_listing_failed_sessions_queries_the_index_never_scans(self, store: Store) -> None:
        for sid in ("f1", "f2"):
            await make_session(store, sid)
            lease = await store.claim_session(sid, "w1", LEASE)
            await store.finish_session(lease, SessionStatus.FAILED, "boom")
        clock_of(store).advance(3600)
        with count_requests(store) as counted:
            page = await store.list_sessions(SessionStatus.FAILED, updated_before=clock_of(store).now() - 1800)
        assert {s.session_id for s in page.items} == {"f1", "f2"}
        assert set(counted.ops) == {"Query"}, counted.ops  # the status index only: no Scan, no re-reads

    async def test_resume_load_is_one_query(self, store: Store) -> None:
        tasks = [NewTask(f"t{i}", "a", input={"i": i}, depends_on=(f"t{i - 1}",) if i else ()) for i in range(30)]
        await make_session(store, tasks=tasks)
        with count_requests(store) as counted:
            snap = await store.load_session("s1")
        assert len(snap.tasks) == 30
        assert counted.ops == ["Query"], counted.ops

    async def test_a_start_and_a_completion_are_one_request_each(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        with count_requests(store) as started:
            await store.write_tasks(lease, [start("t1")])
        with count_requests(store) as completed:
            await store.write_tasks(lease, [complete("t1", output="small")])
        assert (len(started.ops), len(completed.ops)) == (1, 1), (started.ops, completed.ops)

    # -- the events operations record (rules.history): their request cost ----------------------

    async def test_an_operation_event_rides_in_its_transaction_or_is_one_put_right_after(self, store: Store) -> None:
        transactions = bool(getattr(store, "transactions", False))

        def writes(counted: count_requests) -> list[str]:
            return [op for op in counted.ops if op in WRITE_OPS]

        with count_requests(store) as created:
            await make_session(store)
        with count_requests(store) as signalled:
            await store.send_signal("s1", "t1", "go", {"big": "x" * 1000})
        lease = await store.claim_session("s1", "w1", LEASE)
        with count_requests(store) as cancelled:  # held: the owner stops at its next heartbeat
            await store.request_cancel("s1", "enough")
        await store.finish_session(lease, SessionStatus.FAILED, "boom")
        with count_requests(store) as flagged:
            await store.set_needs_human("s1", "look")
        if transactions:
            assert [writes(c) for c in (created, signalled, cancelled, flagged)] == [["TransactWriteItems"]] * 4
        else:
            assert writes(created) == ["BatchWriteItem", "PutItem", "PutItem"]  # tasks, META, then the event
            assert writes(signalled) == ["PutItem", "UpdateItem", "PutItem"]  # signal, META, then the event
            assert writes(cancelled) == writes(flagged) == ["UpdateItem", "PutItem"]

    async def test_a_lost_response_of_a_signal_records_its_event_once(self, store: Store) -> None:
        await make_session(store)
        seq, _ = await _with_lost_response(store, lambda: store.send_signal("s1", "t1", "go", None))
        page = await store.read_events("s1")
        assert [(e.kind, e.data.get("signal_seq")) for e in page.items] == [("created", None), ("signal", seq)]
