"""The lease's local deadline is a hard bound: past it a runner writes nothing and starts nothing.

Each test blocks a runner's store on a real resource (SQLite's write lock held by another
connection) past its deadline, releases it, and checks what landed after: no task write,
no session write, no agent start. The session completes when resumed.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from agents import AgentContext, agent
from orchestrator.errors import LeaseLostError
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, resume, run
from orchestrator.store import SessionStatus, TaskStatus, open_store

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
