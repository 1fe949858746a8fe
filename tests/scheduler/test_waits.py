"""Durable waits in one process: the signal/wait race, and a wait that times out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.agents import AgentContext, RetryPolicy, SignalTimeoutError, agent
from orchestrator.errors import ClaimRejectedError, ValidationError
from orchestrator.graph import Pipeline
from orchestrator.scheduler import resume, run
from orchestrator.store import SessionStatus, TaskStatus
from orchestrator.testing import FakeClock

from .apps import SIGNAL
from .conftest import Backend
from .faulty import FaultyStore
from .helpers import marks

pytestmark = pytest.mark.anyio


async def test_signal_sent_just_before_the_owner_waits_is_not_missed(backend: Backend, tmp_path: Path) -> None:
    sid = "race-1"
    sent: list[int] = []

    async def signal_first() -> None:
        # The signal lands after the agent suspended but before the session is put WAITING.
        if not sent:
            sent.append(await backend.store.send_signal(sid, "ask", "approve", {"by": "alice"}))

    store = FaultyStore(backend.store, before={"wait_session": signal_first})
    result = await run(SIGNAL, {"dir": str(tmp_path)}, store=store, session_id=sid)

    assert sent == [1]
    assert result.status is SessionStatus.COMPLETED, result
    assert result.outputs["ask"] == {"payload": {"by": "alice"}}
    assert result.outputs["then"] == {"seen": {"ask": {"payload": {"by": "alice"}}}}
    assert marks(tmp_path, "done")["ask"] == 1
    session = await backend.store.get_session(sid)
    assert session.status is SessionStatus.COMPLETED and session.signal_seq == 1


async def test_wait_for_signal_times_out_with_an_error_the_agent_can_catch(backend: Backend) -> None:
    clock = FakeClock(time.time())
    store = await backend.open(clock)

    @agent(name="patient")
    async def patient(ctx: AgentContext) -> dict[str, Any]:
        try:
            return {"payload": await ctx.wait_for_signal("approve", timeout=60)}
        except SignalTimeoutError as exc:
            return {"timed_out": exc.signal, "task": exc.task_id}

    pipe = Pipeline("wait-timeout", agents=[patient]).task("p", "patient")
    first = await run(pipe, store=store, session_id="timeout-wait-1")
    assert first.status is SessionStatus.WAITING
    waiting = await store.get_session("timeout-wait-1")
    assert waiting.status is SessionStatus.WAITING and waiting.lease_owner is None
    assert waiting.wake_at == pytest.approx(clock.now() + 60, abs=0.01)
    assert (await store.get_task("timeout-wait-1", "p")).status is TaskStatus.WAITING

    with pytest.raises(ClaimRejectedError):  # not due yet: no signal, deadline ahead
        await resume(pipe, "timeout-wait-1", store=store)

    clock.advance(61)
    second = await resume(pipe, "timeout-wait-1", store=store)
    assert second.status is SessionStatus.COMPLETED
    assert second.outputs["p"] == {"timed_out": "approve", "task": "p"}
    task = await store.get_task("timeout-wait-1", "p")
    assert task.attempt == 1  # a wake continues the same attempt


async def test_a_waiting_task_records_the_signal_it_waits_for_until_it_is_woken(backend: Backend) -> None:
    store = await backend.open(FakeClock(time.time()))

    @agent(name="asks")
    async def asks(ctx: AgentContext) -> Any:
        return await ctx.wait_for_signal("go")

    pipe = Pipeline("wait-name", agents=[asks]).task("a", "asks")
    assert (await run(pipe, store=store, session_id="named-wait-1")).status is SessionStatus.WAITING
    waiting = await store.get_task("named-wait-1", "a")
    assert (waiting.status, waiting.waiting_for) == (TaskStatus.WAITING, "go")
    await store.send_signal("named-wait-1", "a", "go", {"ok": True})
    assert (await resume(pipe, "named-wait-1", store=store)).status is SessionStatus.COMPLETED
    assert (await store.get_task("named-wait-1", "a")).waiting_for is None


async def test_waiting_for_a_name_no_signal_could_have_fails_the_attempt_naming_it(backend: Backend) -> None:
    store = await backend.open(FakeClock(time.time()))

    @agent(name="asks", retry=RetryPolicy(max_attempts=1))
    async def asks(ctx: AgentContext) -> Any:
        return await ctx.wait_for_signal("go ahead")

    pipe = Pipeline("wait-bad-name", agents=[asks]).task("a", "asks")
    assert (await run(pipe, store=store, session_id="bad-wait-1")).status is SessionStatus.FAILED
    task = await store.get_task("bad-wait-1", "a")
    assert task.last_error is not None and task.last_error.type.endswith(ValidationError.__name__)
    assert "signal id 'go ahead' in wait_for_signal of task 'a' is not valid" in task.last_error.message



@agent(name="two-step")
async def two_step(ctx: AgentContext) -> dict[str, Any]:
    """Waits for "approve", then for "deploy", each with a 60 s timeout."""
    first = await ctx.wait_for_signal("approve", timeout=60)
    try:
        return {"first": first, "second": await ctx.wait_for_signal("deploy", timeout=60)}
    except SignalTimeoutError as exc:
        return {"first": first, "timed_out": exc.signal}


TWO_WAITS = Pipeline("two-waits", agents=[two_step]).task("p", "two-step")


async def test_a_second_wait_in_one_attempt_has_its_own_deadline(backend: Backend) -> None:
    clock = FakeClock(time.time())
    store = await backend.open(clock)
    sid = "two-waits-1"
    assert (await run(TWO_WAITS, store=store, session_id=sid)).status is SessionStatus.WAITING
    clock.advance(50)
    await store.send_signal(sid, "p", "approve", {"ok": 1})
    assert (await resume(TWO_WAITS, sid, store=store)).status is SessionStatus.WAITING
    waiting = await store.get_task(sid, "p")
    assert waiting.waiting_for == "deploy"
    assert waiting.not_before == pytest.approx(clock.now() + 60, abs=0.01)  # not the first wait's deadline, 10 s away

    clock.advance(30)  # past the first wait's deadline, within the second's
    await store.send_signal(sid, "p", "deploy", {"ok": 2})
    done = await resume(TWO_WAITS, sid, store=store)
    assert done.status is SessionStatus.COMPLETED
    assert done.outputs["p"] == {"first": {"ok": 1}, "second": {"ok": 2}}


async def test_a_second_wait_times_out_at_its_own_deadline(backend: Backend) -> None:
    clock = FakeClock(time.time())
    store = await backend.open(clock)
    sid = "two-waits-2"
    await run(TWO_WAITS, store=store, session_id=sid)
    clock.advance(50)
    await store.send_signal(sid, "p", "approve", {"ok": 1})
    await resume(TWO_WAITS, sid, store=store)
    clock.advance(15)  # past the first wait's deadline, not the second's
    with pytest.raises(ClaimRejectedError):
        await resume(TWO_WAITS, sid, store=store)
    clock.advance(50)
    done = await resume(TWO_WAITS, sid, store=store)
    assert done.status is SessionStatus.COMPLETED
    assert done.outputs["p"] == {"first": {"ok": 1}, "timed_out": "deploy"}
