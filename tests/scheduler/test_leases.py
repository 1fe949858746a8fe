"""Lease loss in one process, with an injected FakeClock: taken over, and heartbeats that fail."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from orchestrator.agents import AgentContext, agent
from orchestrator.errors import LeaseLostError
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, RunResult, execute, run
from orchestrator.store import Lease, Progress, SessionStatus, Store, TaskStatus
from orchestrator.store.deadline import unbounded
from orchestrator.testing import FakeClock

from .conftest import Backend
from .faulty import FaultyStore
from .helpers import lease_lost_in, wait_until

pytestmark = pytest.mark.anyio

LEASE = RunOptions(lease_seconds=30.0, heartbeat_interval=8.0, clock_skew_margin=2.0, worker_id="w1")


class Holder:
    """An agent that, on fence 1, blocks until cancelled (recording it); on later fences, finishes."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.cancelled: list[tuple[str, int]] = []

        @agent(name="hold")
        async def hold(ctx: AgentContext) -> dict[str, Any]:
            if ctx.fence == 1:
                self.started.set()
                try:
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    self.cancelled.append((ctx.task_id, ctx.attempt))
                    raise
            return {"task": ctx.task_id, "fence": ctx.fence}

        self.pipeline = Pipeline("lease-loss", agents=[hold]).task("a", "hold").task("b", "hold", depends_on="a")


async def _run_first(pipe: Pipeline, store: Store, sid: str, outcome: dict[str, Any]) -> None:
    try:
        outcome["result"] = await run(pipe, store=store, session_id=sid, options=LEASE)
    except Exception as exc:  # noqa: BLE001 - the test inspects what escaped run()
        outcome["error"] = exc


async def test_runner_whose_lease_is_taken_stops_its_agents_and_new_owner_completes(backend: Backend) -> None:
    clock = FakeClock(time.time())  # near real time: TTL filters of the other store instances agree
    mine, theirs = await backend.open(clock), await backend.open(clock)
    sid = "taken-1"
    holder = Holder()
    taken: list[Lease] = []

    async def take_over() -> None:
        # Another worker claims the session while this one is about to renew (it was paused
        # past its lease): the renewal that follows must be refused.
        if not taken:
            clock.advance(LEASE.lease_seconds)
            # Shielded: the first runner may notice its local deadline (and cancel this
            # heartbeat) while the other worker's claim is in flight.
            # Unbounded: the claim is the other worker's, not bound by this runner's deadline.
            with anyio.CancelScope(shield=True), unbounded():
                taken.append(await theirs.claim_session(sid, "w2", LEASE.lease_seconds))

    faulty = FaultyStore(mine, before={"renew_lease": take_over})
    outcome: dict[str, Any] = {}
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run_first, holder.pipeline, faulty, sid, outcome)
            await holder.started.wait()
            clock.advance(LEASE.heartbeat_interval)  # the first heartbeat is due
            await wait_until(lambda: bool(outcome), what="the first runner to stop")

    assert isinstance(lease_lost_in(outcome.get("error")), LeaseLostError), outcome
    assert holder.cancelled == [("a", 1)]
    assert len(taken) == 1, outcome
    [lease2] = taken
    assert lease2.fence == 2
    stale = Lease(sid, "w1", 1, None)
    with pytest.raises(LeaseLostError):
        await mine.update_session(stale, progress=Progress(1, 2))
    with pytest.raises(LeaseLostError):
        await mine.finish_session(stale, SessionStatus.FAILED, "a stale owner must not decide")

    result: RunResult = await execute(theirs, holder.pipeline, lease2, options=LEASE)
    assert result.status is SessionStatus.COMPLETED
    assert result.outputs == {"a": {"task": "a", "fence": 2}, "b": {"task": "b", "fence": 2}}
    snapshot = await backend.store.load_session(sid)
    assert snapshot.session.status is SessionStatus.COMPLETED and snapshot.session.fence == 2
    assert {t.task_id: (t.status, t.fence, t.attempt) for t in snapshot.tasks.values()} == {
        "a": (TaskStatus.COMPLETED, 2, 2), "b": (TaskStatus.COMPLETED, 2, 1)
    }
    # run() itself must raise LeaseLostError, not an ExceptionGroup wrapping it.
    assert isinstance(outcome["error"], LeaseLostError), repr(outcome["error"])


async def test_runner_whose_heartbeats_fail_stops_agents_at_its_local_lease_deadline(backend: Backend) -> None:
    clock = FakeClock(time.time())  # near real time: TTL filters of the other store instances agree
    mine, theirs = await backend.open(clock), await backend.open(clock)
    sid = "unreachable-1"
    holder = Holder()
    faulty = FaultyStore(mine, fail_on={"renew_lease"})
    outcome: dict[str, Any] = {}
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run_first, holder.pipeline, faulty, sid, outcome)
            await holder.started.wait()
            created = clock.now()
            for failures in (1, 2, 3):  # heartbeats at 8, 16, 24 s all fail; the run goes on
                clock.advance(LEASE.heartbeat_interval)
                await wait_until(lambda n=failures: faulty.failures["renew_lease"] >= n,  # type: ignore[misc]
                                 what=f"renewal failure {failures}")
            assert not outcome and holder.cancelled == []
            # The local deadline is the lease expiry minus the skew margin: 30 - 2 = 28 s.
            clock.set(created + LEASE.lease_seconds - LEASE.clock_skew_margin)
            await wait_until(lambda: bool(outcome), what="the runner to stop at its local deadline")

    error = lease_lost_in(outcome.get("error"))
    assert isinstance(error, LeaseLostError), outcome
    assert "deadline" in str(error) and sid in str(error)
    assert holder.cancelled == [("a", 1)]
    stored = await theirs.get_session(sid)
    assert stored.status is SessionStatus.RUNNING and stored.fence == 1  # nothing decided by the lost owner

    clock.advance(LEASE.clock_skew_margin + 1)  # the stored lease expires
    lease2 = await theirs.claim_session(sid, "w2", LEASE.lease_seconds)
    result = await execute(theirs, holder.pipeline, lease2, options=LEASE)
    assert result.status is SessionStatus.COMPLETED
    assert result.outputs["b"] == {"task": "b", "fence": 2}
    # run() itself must raise LeaseLostError, not an ExceptionGroup wrapping it.
    assert isinstance(outcome["error"], LeaseLostError), repr(outcome["error"])
