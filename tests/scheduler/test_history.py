"""The event history tells who held a session, how they got it, and how it ended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.agents import AgentContext, agent
from orchestrator.errors import LeaseLostError
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, resume, run
from orchestrator.store import NewSession, NewTask, SessionStatus, open_store
from orchestrator.testing import FakeClock

from .apps import SIGNAL

pytestmark = pytest.mark.anyio


@agent(name="echo")
async def echo(ctx: AgentContext) -> dict[str, Any]:
    return {"task": ctx.task_id}


PIPELINE = Pipeline("history", agents=[echo]).task("a", "echo").task("b", "echo", depends_on="a")


async def test_a_run_records_its_claim_and_its_end(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path / 'h.db'}")
    await store.initialize()
    try:
        result = await run(PIPELINE, store=store, session_id="h1", options=RunOptions(worker_id="w1"))
        assert result.status is SessionStatus.COMPLETED
        events = (await store.read_events("h1")).items
    finally:
        await store.aclose()
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["created", "claim"] and kinds[-1] == "end", kinds  # `created` is the store's
    claim, end = events[1], events[-1]
    assert (claim.data["owner"], claim.data["fence"]) == ("w1", 1)
    assert "w1 holds the session at fence 1 (until 20" in claim.message  # an ISO time, not epoch seconds
    assert (end.message, end.data["status"]) == ("session COMPLETED", "COMPLETED")


async def test_a_takeover_names_both_owners_and_both_fences(tmp_path: Path) -> None:
    clock = FakeClock()
    store = open_store(f"sqlite://{tmp_path / 'h.db'}", clock=clock)
    await store.initialize()
    try:
        await store.create_session(NewSession("h2", "history"), [NewTask("a", "echo"),
                                                                 NewTask("b", "echo", depends_on=("a",))])
        await store.claim_session("h2", "dead", 30)  # a worker that died holding it
        clock.advance(31)
        result = await resume(PIPELINE, "h2", store=store, options=RunOptions(worker_id="w2"))
        assert result.status is SessionStatus.COMPLETED
        events = (await store.read_events("h2")).items
    finally:
        await store.aclose()
    [takeover] = [e for e in events if e.kind == "takeover"]
    assert (takeover.data["owner"], takeover.data["fence"]) == ("w2", 2)
    assert (takeover.data["previous_owner"], takeover.data["previous_fence"]) == ("dead", 1)
    assert takeover.message.startswith("w2 took the session over from dead at fence 2 (")
    assert "dead (fence 1) stopped renewing its lease" in takeover.message
    assert takeover.level == "WARNING"


async def test_a_signal_that_wakes_a_waiting_task_is_recorded_as_a_wake(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path / 'h.db'}")
    await store.initialize()
    try:
        first = await run(SIGNAL, {"dir": str(tmp_path)}, store=store, session_id="h4")
        assert first.status is SessionStatus.WAITING
        await store.send_signal("h4", "ask", "approve", {"ok": True})
        result = await resume(SIGNAL, "h4", store=store, options=RunOptions(worker_id="w2"))
        assert result.status is SessionStatus.COMPLETED
        events = (await store.read_events("h4")).items
    finally:
        await store.aclose()
    [wake] = [e for e in events if e.kind == "wake"]
    assert (wake.task_id, wake.data["signal"], wake.writer) == ("ask", "approve", "w2.2")
    assert wake.message == "task ask woken by signal 'approve'"


async def test_the_end_of_a_cancelled_session_counts_the_cancelled_tasks_and_says_why(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path / 'h.db'}")
    await store.initialize()
    started: set[str] = set()

    @agent(name="forever")
    async def forever(ctx: AgentContext) -> None:
        started.add(ctx.task_id)
        await anyio.sleep_forever()

    pipe = Pipeline("cancel-history", agents=[forever]).task("x", "forever").task("y", "forever", depends_on="x")
    options = RunOptions(lease_seconds=1.0, heartbeat_interval=0.2, clock_skew_margin=0.2)
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: run(pipe, store=store, session_id="h5", options=options))
                while "x" not in started:
                    await anyio.sleep(0.01)
                await store.request_cancel("h5", "stopped by ops")
        events = (await store.read_events("h5")).items
    finally:
        await store.aclose()
    end = events[-1]
    assert (end.kind, end.data["status"], end.data["cancelled_tasks"]) == ("end", "CANCELLED", 2)
    assert "stopped by ops" in end.data["reason"]
    assert end.message.endswith("(2 task(s) cancelled)")


async def test_a_run_that_loses_its_lease_to_a_newer_claim_records_who_holds_it_now(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'h.db'}"
    ours = FakeClock()
    theirs = FakeClock(ours.now() + 31)  # another worker whose clock runs ahead: our lease looks expired to it
    store, other = open_store(url, clock=ours), open_store(url, clock=theirs)
    await store.initialize()
    await other.initialize()
    started = anyio.Event()

    @agent(name="block")
    async def block(ctx: AgentContext) -> None:
        started.set()
        await anyio.sleep_forever()

    pipe = Pipeline("lost", agents=[block]).task("x", "block")
    lost: list[LeaseLostError] = []

    async def go() -> None:
        try:
            await run(pipe, store=store, session_id="h6", options=RunOptions(worker_id="w1"))
        except LeaseLostError as exc:
            lost.append(exc)

    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(go)
                await started.wait()
                await other.claim_session("h6", "w2", 30)
                ours.advance(8)  # our next renewal meets the newer claim, well before our deadline
        events = (await other.read_events("h6")).items
    finally:
        await store.aclose()
        await other.aclose()
    assert len(lost) == 1
    [event] = [e for e in events if e.kind == "lease_lost"]
    assert (event.data["owner"], event.data["fence"], event.data["new_owner"], event.data["new_fence"]) == (
        "w1", 1, "w2", 2)
    assert event.level == "WARNING" and event.message == "w1 lost its lease at fence 1; w2 holds it at fence 2"
