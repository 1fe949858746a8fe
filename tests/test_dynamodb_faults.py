"""Transient failures on the wire are retried inside the DynamoDB store, bounded by attempts
and by a caller's deadline; a store failure never becomes an agent attempt.

Faults come from a `FaultProxy` on 127.0.0.1 between the store and the session's moto
server: throttling, 5xx with a JSON, an HTML or an empty body, lost responses. Nothing
in the SDK is patched.
"""

from __future__ import annotations

import pickle
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from orchestrator.agents import AgentContext, agent
from orchestrator.clock import Clock, SystemClock
from orchestrator.codec import default_codec
from orchestrator.errors import (
    SessionNotFoundError,
    StoreDeadlineError,
    StoreError,
    StoreUnavailableError,
)
from orchestrator.graph import Pipeline
from orchestrator.recovery import Worker
from orchestrator.scheduler import RunOptions, submit
from orchestrator.store import DynamoDBConfig, SessionStatus, TaskStatus
from orchestrator.store.dynamodb import DynamoDBStore
from orchestrator.testing import FakeClock
from orchestrator.testing.fault_proxy import FaultProxy, Faults

pytestmark = pytest.mark.anyio


@pytest.fixture
def proxy(moto_upstream: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_upstream, seed=11) as started:
        yield started


def through(proxy: FaultProxy, clock: Clock | None = None, **kw: Any) -> DynamoDBStore:
    """A store on a fresh table, reached through the proxy, with short backoffs."""
    kw.setdefault("initial_backoff_ms", 1.0)
    kw.setdefault("max_backoff_s", 0.05)
    config = DynamoDBConfig(table=f"f-{uuid.uuid4().hex[:10]}", endpoint=proxy.endpoint, **kw)
    return DynamoDBStore(config, clock=clock or SystemClock(), codec=default_codec, rng=random.Random(3))


@pytest.mark.parametrize("fault", ["error_html", "error_empty", "error_json", "throttle", "lost"])
async def test_a_transient_fault_on_the_wire_is_retried_until_the_store_answers(
    proxy: FaultProxy, fault: str
) -> None:
    async with through(proxy) as store:
        proxy.faults = Faults(**{fault: 1.0}, limit=2)  # type: ignore[arg-type]
        with pytest.raises(SessionNotFoundError):  # DynamoDB's real answer, after two faults
            await store.get_session("s-1")
        assert proxy.injected[fault] == 2


async def test_a_5xx_on_every_attempt_ends_in_store_unavailable_after_max_attempts(proxy: FaultProxy) -> None:
    async with through(proxy, max_attempts=3) as store:
        proxy.faults = Faults(error_html=1.0)
        seen = proxy.seen
        with pytest.raises(StoreUnavailableError, match=r"GetItem after 3 attempts .*503"):
            await store.get_session("s-1")
        assert proxy.seen - seen == 3


async def test_no_attempt_is_sent_at_or_after_the_deadline(proxy: FaultProxy) -> None:
    clock = FakeClock()
    async with through(proxy, clock) as store:
        seen = proxy.seen
        with pytest.raises(StoreDeadlineError) as info:
            await store._caller.call("GetItem", {"TableName": store.table, "Key": store.key("SESSION#s", "META")},
                                     session="s", deadline=clock.monotonic())
        assert proxy.seen == seen
        assert (info.value.attempts, info.value.deadline, info.value.session_id) == (0, clock.monotonic(), "s")
        assert "before any attempt" in str(info.value) and "[table=" in str(info.value)


async def test_a_backoff_that_would_cross_the_deadline_is_not_slept(proxy: FaultProxy) -> None:
    clock = FakeClock()  # a sleep would wait forever: nobody advances this clock
    async with through(proxy, clock, initial_backoff_ms=1000.0) as store:
        proxy.faults = Faults(error_empty=1.0)
        seen = proxy.seen
        with anyio.fail_after(10), pytest.raises(StoreDeadlineError) as info:
            await store._caller.call("GetItem", {"TableName": store.table, "Key": store.key("SESSION#s", "META")},
                                     deadline=clock.monotonic() + 1e-6)
        assert proxy.seen - seen == 1 and info.value.attempts == 1
        assert "after 1 attempt(s)" in str(info.value)


async def test_a_call_that_waited_for_the_connection_pool_past_its_deadline_is_not_sent(
    proxy: FaultProxy,
) -> None:
    clock = FakeClock()
    async with through(proxy, clock, max_pool_connections=1) as store:
        params = {"TableName": store.table, "Key": store.key("SESSION#s", "META")}
        stopped: list[StoreDeadlineError] = []

        async def bounded() -> None:
            try:
                await store._caller.call("GetItem", params, deadline=clock.monotonic() + 1.0)
            except StoreDeadlineError as exc:
                stopped.append(exc)

        proxy.hold()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(store._caller.call, "GetItem", params)  # takes the only connection, held
                while proxy.held < 1:
                    await anyio.sleep(0.01)
                seen = proxy.seen
                tg.start_soon(bounded)
                while store._caller.limiter.statistics().tasks_waiting < 1:
                    await anyio.sleep(0.01)
                clock.advance(2.0)  # the deadline passes while it waits for the connection
                proxy.release()
        assert proxy.seen == seen and [e.attempts for e in stopped] == [0]


def test_the_deadline_error_is_a_timeout_and_a_store_error_that_pickles() -> None:
    err = StoreDeadlineError.reached("GetItem", 12.5, 12.6, 2, None, "[table=t, op=GetItem, session=s, task=-]",
                                     session_id="s")
    assert isinstance(err, TimeoutError) and isinstance(err, StoreError)
    back = pickle.loads(pickle.dumps(err))
    assert (back.deadline, back.attempts, back.session_id, str(back)) == (12.5, 2, "s", str(err))


# -- acceptance: many sessions under 5xx and throttling ------------------------------------------

TASKS = 10


async def run_under_faults(proxy: FaultProxy, sessions: int, *, transactions: bool) -> None:
    """`sessions` sessions of TASKS tasks through a Worker with 5% HTML/empty 5xx and 20% throttling:
    every session COMPLETED, every agent run once, at attempt 1."""
    calls: list[tuple[str, str, int]] = []

    @agent(name="step")
    async def step(ctx: AgentContext) -> dict[str, Any]:
        calls.append((ctx.session_id, ctx.task_id, ctx.attempt))
        await ctx.checkpoint({"seen": ctx.task_id})  # a store write inside the agent
        ctx.progress(1, 1)
        return {"task": ctx.task_id, "deps": sorted(ctx.deps)}

    # A fan-out/fan-in DAG: t0 -> t1..t8 -> t9.
    pipe = Pipeline("faults", agents=[step]).task("t0", "step")
    middle = [f"t{i}" for i in range(1, TASKS - 1)]
    for tid in middle:
        pipe.task(tid, "step", depends_on="t0")
    pipe.task(f"t{TASKS - 1}", "step", depends_on=middle)

    store = through(proxy, max_attempts=15, initial_backoff_ms=5.0, max_backoff_s=0.2, transactions=transactions)
    proxy.faults = Faults(throttle=0.20, error_html=0.025, error_empty=0.025)
    async with store:
        ids = [await submit(pipe, {"n": i}, store=store, session_id=f"acc-{i:02d}") for i in range(sessions)]
        options = RunOptions(flush_interval=0.5, progress_interval=0.2)
        worker = Worker(store, pipe, concurrency=sessions, poll_interval=0.05, options=options)
        with anyio.fail_after(60):
            report = await worker.run(idle_exit=0.3)
        proxy.faults = Faults()
        loaded = [await store.load_session(sid) for sid in ids]
    print(f"faults injected: {dict(proxy.injected)} of {proxy.seen} requests")  # shown with -s

    assert report.errors == {}
    assert [s.session.status for s in loaded] == [SessionStatus.COMPLETED] * sessions
    runs = Counter((sid, tid) for sid, tid, _ in calls)
    assert len(runs) == sessions * TASKS and set(runs.values()) == {1}  # every agent ran once
    assert {attempt for _, _, attempt in calls} == {1}
    assert {(t.status, t.attempt) for s in loaded for t in s.tasks.values()} == {(TaskStatus.COMPLETED, 1)}
    assert proxy.injected["error_html"] + proxy.injected["error_empty"] > 0 and proxy.injected["throttle"] > 0


async def test_twenty_sessions_under_html_and_empty_5xx_and_throttling_complete_with_every_agent_run_once(
    proxy: FaultProxy,
) -> None:
    # Single-item writes: moto deep-copies the whole table for every item of a transaction,
    # which would make this test's time grow with its own table (the next test covers them).
    await run_under_faults(proxy, 20, transactions=False)


async def test_sessions_writing_with_transactions_under_5xx_and_throttling_complete_with_every_agent_run_once(
    proxy: FaultProxy,
) -> None:
    await run_under_faults(proxy, 5, transactions=True)
