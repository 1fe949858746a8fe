"""The lease's local deadline is a hard bound: past it a runner writes nothing and starts nothing.

Each test blocks a runner's store past its deadline on a real resource (SQLite's write
lock held by another connection; a partition in front of DynamoDB, held at a proxy on
the wire), releases it, and checks what happened after: no request sent, no task or
session write, no agent start. The session completes when resumed.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.agents import AgentContext, agent
from orchestrator.clock import SystemClock
from orchestrator.errors import LeaseLostError
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, resume, run
from orchestrator.store import SessionStatus, TaskStatus, open_store
from orchestrator.testing.fault_proxy import FaultProxy

pytestmark = pytest.mark.anyio

SHORT = RunOptions(lease_seconds=2.0, heartbeat_interval=0.5, clock_skew_margin=0.2, worker_id="w1")


class Recorder:
    """Agents `a` -> `b`; each start is recorded with its fence and wall time. On fence 1,
    `a` waits until the test holds the store's lock, then returns."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, int, float]] = []
        self.started = anyio.Event()
        self.locked = anyio.Event()

        @agent(name="step")
        async def step(ctx: AgentContext) -> dict[str, Any]:
            self.starts.append((ctx.task_id, ctx.fence, time.time()))  # noqa: TID251 - wall time of a side effect
            if ctx.task_id == "a" and ctx.fence == 1:
                self.started.set()
                await self.locked.wait()
            return {"task": ctx.task_id}

        self.pipeline = Pipeline("deadline", agents=[step]).task("a", "step").task("b", "step", depends_on="a")


async def test_a_runner_blocked_by_a_held_sqlite_lock_past_its_deadline_writes_and_starts_nothing(
        tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_store(f"sqlite://{path}")
    await store.initialize()
    rec = Recorder()
    outcome: dict[str, Any] = {}

    async def first() -> None:
        try:
            outcome["result"] = await run(rec.pipeline, store=store, session_id="d1", options=SHORT)
        except LeaseLostError as exc:
            outcome["error"] = exc

    holder = sqlite3.connect(path, isolation_level=None)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await rec.started.wait()
            holder.execute("BEGIN IMMEDIATE")  # a writer elsewhere holds the lock ...
            rec.locked.set()  # ... while `a` returns: its COMPLETE + START b must wait
            await anyio.sleep(SHORT.lease_seconds * 2)
            released = time.time()  # noqa: TID251 - compared with the agents' wall times
            holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert isinstance(outcome.get("error"), LeaseLostError), outcome
    assert [(t, f) for t, f, _ in rec.starts] == [("a", 1)], "b must not start after the deadline"
    a = await store.get_task("d1", "a")
    assert (a.status, a.fence) == (TaskStatus.RUNNING, 1), "a's COMPLETE must not land after the deadline"
    assert a.updated_at < released
    session = await store.get_session("d1")
    assert session.updated_at < released, "no session write after the deadline"

    await anyio.sleep(max(0.0, (session.lease_expires_at or 0) - time.time()) + 0.1)  # noqa: TID251
    result = await resume(rec.pipeline, "d1", store=store, options=SHORT)
    assert result.status is SessionStatus.COMPLETED
    assert [(t, f) for t, f, _ in rec.starts] == [("a", 1), ("a", 2), ("b", 2)]
    await store.aclose()


class _Wall(SystemClock):
    """Arrival times at the proxy on the wall clock, comparable with the lease's expiry."""

    def monotonic(self) -> float:
        return self.now()


async def test_a_runner_cut_off_by_a_partition_past_its_deadline_sends_nothing_and_starts_nothing(
        moto_upstream: str) -> None:
    table = f"d-{uuid.uuid4().hex[:10]}"
    with FaultProxy(moto_upstream, clock=_Wall(), record_arrivals=True) as proxy:
        runner_store = open_store(f"dynamodb://{table}?region=us-east-1&endpoint={proxy.endpoint}")
        direct = open_store(f"dynamodb://{table}?region=us-east-1&endpoint={moto_upstream}")
        await direct.initialize()
        await runner_store.initialize()
        rec = Recorder()
        outcome: dict[str, Any] = {}

        async def first() -> None:
            try:
                outcome["result"] = await run(rec.pipeline, store=runner_store, session_id="p1", options=SHORT)
            except LeaseLostError as exc:
                outcome["error"] = exc

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                await rec.started.wait()
                proxy.hold()  # the partition: every request of the runner waits from now on
                expires = (await direct.get_session("p1")).lease_expires_at
                assert expires is not None
                deadline = expires - SHORT.clock_skew_margin  # the runner's local deadline is at or before it
                rec.locked.set()  # `a` returns: COMPLETE a + START b are sent into the partition
                await anyio.sleep(max(0.0, expires - time.time()) + 1.0)  # noqa: TID251
                proxy.release()
        late = [a for a in proxy.arrivals if a.at > deadline + 0.1]  # 0.1 s: transit from client to proxy
        assert late == [], f"requests sent after the deadline {deadline}: {late}"
        assert isinstance(outcome.get("error"), LeaseLostError), outcome
        assert [(t, f) for t, f, _ in rec.starts] == [("a", 1)], "b must not start after the deadline"
        await runner_store.aclose()

        session = await direct.get_session("p1")
        await anyio.sleep(max(0.0, (session.lease_expires_at or 0) - time.time()) + 0.1)  # noqa: TID251
        result = await resume(rec.pipeline, "p1", store=direct, options=SHORT)
        assert result.status is SessionStatus.COMPLETED
        assert [(t, f) for t, f, _ in rec.starts if t == "b"] == [("b", 2)]
        await direct.aclose()
