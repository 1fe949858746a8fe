"""Real processes: SIGKILL mid-run and resume, SIGSTOP past the lease, signals and cancels from outside.

Children run `scheduler.apps` (see its docstring); agents leave side-effect files, so
"ran exactly once" is counted, not assumed. Conditions are polled with bounded loops.
Each runs on SQLite, the moto server and dynalite (concurrent, no transactions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.agents import AgentContext, agent
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, RunResult, resume, run
from orchestrator.store import SessionStatus, TaskStatus

from .apps import CHAIN, CHAIN_TASKS, CHECKPOINT, CHECKPOINT_BLOCK_AT, CHECKPOINT_STEPS, DYNAMIC, SIGNAL, SUB_TASKS
from .conftest import Backend
from .helpers import Child, crash_when, marks, open_gate, wait_lease_expired, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: Short leases so a resumer can take a killed child's session within about a second.
SHORT = json.dumps({"lease_seconds": 1.0, "heartbeat_interval": 0.25, "clock_skew_margin": 0.2, "worker_id": "A"})
RESUMER = RunOptions(worker_id="B")


def _chain_output(tid: str) -> dict[str, Any]:
    return {"task": tid, "n": CHAIN_TASKS.index(tid) + 1}


@pytest.mark.parametrize("done_before_kill", [1, 2, 4])
async def test_sigkilled_run_resumes_without_rerunning_completed_tasks(
    backend: Backend, tmp_path: Path, done_before_kill: int
) -> None:
    sid = f"crash-{done_before_kill}"
    work = tmp_path / "work"
    work.mkdir()
    open_gate(work, *CHAIN_TASKS[:done_before_kill])
    running = CHAIN_TASKS[done_before_kill]
    # The next task starts only after its dependency's completion is durable.
    await crash_when(["run", backend.url, sid, CHAIN.name, str(work), SHORT], tmp_path,
                     lambda: marks(work, "start")[running] == 1,
                     what=f"{done_before_kill} task(s) done and {running} running")

    at_kill = await backend.store.load_session(sid)
    completed = {tid for tid, t in at_kill.tasks.items() if t.status is TaskStatus.COMPLETED}
    assert completed == set(CHAIN_TASKS[:done_before_kill])
    assert at_kill.tasks[running].status is TaskStatus.RUNNING

    open_gate(work, *CHAIN_TASKS)
    await wait_lease_expired(backend.store, sid)
    result = await resume(CHAIN, sid, store=backend.store, options=RESUMER)

    assert result.status is SessionStatus.COMPLETED
    done = marks(work, "done")
    assert {tid: done[tid] for tid in completed} == {tid: 1 for tid in completed}
    assert all(done[tid] == 1 for tid in CHAIN_TASKS)
    assert marks(work, "start")[running] == 2  # interrupted: ran again
    final = await backend.store.load_session(sid)
    assert final.session.status is SessionStatus.COMPLETED
    assert {tid: t.output for tid, t in final.tasks.items()} == {tid: _chain_output(tid) for tid in CHAIN_TASKS}
    assert {tid: final.tasks[tid].attempt for tid in completed} == {tid: 1 for tid in completed}
    [killed, rerun] = final.tasks[running].history
    assert (killed.attempt, killed.status, killed.error and killed.error.type) == (
        1, TaskStatus.FAILED, "orchestrator.Interrupted")
    assert killed.started_at is not None and killed.ended_at is not None
    assert (rerun.attempt, rerun.status) == (2, TaskStatus.COMPLETED)


async def test_tasks_added_before_a_crash_are_added_once_and_each_runs_once(
    backend: Backend, tmp_path: Path
) -> None:
    sid = "crash-dynamic-1"
    work = tmp_path / "work"
    work.mkdir()
    await crash_when(["run", backend.url, sid, DYNAMIC.name, str(work), SHORT], tmp_path,
                     lambda: marks(work, "added")["coord"] == 1, what="the coordinator to add its sub-tasks")

    at_kill = await backend.store.load_session(sid)
    assert set(at_kill.tasks) == {"coord"}  # added tasks stay invisible until the coordinator completes

    open_gate(work, "coord")
    await wait_lease_expired(backend.store, sid)
    result = await resume(DYNAMIC, sid, store=backend.store, options=RESUMER)

    assert result.status is SessionStatus.COMPLETED
    assert result.outputs["join"] == {"sum": 0 + 1 + 2}
    final = await backend.store.load_session(sid)
    assert set(final.tasks) == {"coord", "join", *SUB_TASKS}
    assert all(t.status is TaskStatus.COMPLETED for t in final.tasks.values())
    starts, done = marks(work, "start"), marks(work, "done")
    assert (starts["coord"], done["coord"]) == (2, 1)
    assert {tid: (starts[tid], done[tid]) for tid in (*SUB_TASKS, "join")} == {
        tid: (1, 1) for tid in (*SUB_TASKS, "join")
    }


async def test_agent_checkpoint_survives_a_crash_and_the_next_attempt_continues_from_it(
    backend: Backend, tmp_path: Path
) -> None:
    sid = "crash-checkpoint-1"
    work = tmp_path / "work"
    work.mkdir()
    await crash_when(["run", backend.url, sid, CHECKPOINT.name, str(work), SHORT], tmp_path,
                     lambda: marks(work, "blocked")["steps"] == 1,
                     what=f"step {CHECKPOINT_BLOCK_AT} to be checkpointed")

    assert (await backend.store.get_task(sid, "steps")).checkpoint == {"next": CHECKPOINT_BLOCK_AT + 1}
    open_gate(work, "steps")
    await wait_lease_expired(backend.store, sid)
    result = await resume(CHECKPOINT, sid, store=backend.store, options=RESUMER)

    assert result.status is SessionStatus.COMPLETED
    assert result.outputs["steps"] == {"resumed_from": CHECKPOINT_BLOCK_AT + 1, "steps": CHECKPOINT_STEPS}
    states = {p.name.split(".")[1]: json.loads(p.read_text()) for p in work.glob("steps.*.state")}
    assert states == {"1": None, "2": {"next": CHECKPOINT_BLOCK_AT + 1}}
    work_done = sorted(p.name.split(".")[1] for p in work.glob("work.*"))
    assert work_done == [str(k) for k in range(CHECKPOINT_STEPS)]  # each step once, across both attempts


async def test_worker_stopped_past_its_lease_writes_nothing_that_counts_after_it_resumes(
    backend: Backend, tmp_path: Path
) -> None:
    sid = "sigstop-1"
    work = tmp_path / "work"
    work.mkdir()
    options = json.dumps({"lease_seconds": 3.0, "heartbeat_interval": 0.5, "clock_skew_margin": 0.5,
                          "worker_id": "A"})
    child = Child(["run", backend.url, sid, CHAIN.name, str(work), options], tmp_path)
    try:
        open_gate(work, "t1")
        await wait_until(lambda: marks(work, "start")["t2"] == 1, child=child, what="t1 done and t2 running")
        child.stop()
        await wait_lease_expired(backend.store, sid)
        open_gate(work, *CHAIN_TASKS)  # A's t2 may finish as soon as it runs again
        result = await resume(CHAIN, sid, store=backend.store, options=RESUMER)
        assert result.status is SessionStatus.COMPLETED
        after_b = await backend.store.load_session(sid)
        child.cont()
        stale = await child.result()
    finally:
        child.cont()
        child.kill()

    final = await backend.store.load_session(sid)
    assert final.session.status is SessionStatus.COMPLETED
    assert (final.session.fence, final.session.lease_owner) == (after_b.session.fence, after_b.session.lease_owner)
    assert final.session.fence == 2
    assert final.tasks == after_b.tasks  # the stale owner changed no task once it ran again
    assert {tid: t.output for tid, t in final.tasks.items()} == {tid: _chain_output(tid) for tid in CHAIN_TASKS}
    assert final.tasks["t1"].fence == 1 and final.tasks["t1"].attempt == 1  # completed by A before the stop
    assert all(final.tasks[tid].fence == 2 for tid in CHAIN_TASKS[1:])
    assert marks(work, "done")["t1"] == 1
    assert "status" not in stale, stale  # A did not end the session its way
    assert stale["error"] == "LeaseLostError", (stale, child.stderr()[-3000:])


async def test_signal_wait_survives_the_worker_exiting_and_completes_on_a_signal_from_another_process(
    backend: Backend, tmp_path: Path
) -> None:
    sid = "signal-proc-1"
    work = tmp_path / "work"
    work.mkdir()
    first = await Child(["run", backend.url, sid, SIGNAL.name, str(work)], tmp_path).result()
    assert first["status"] == "WAITING", first
    assert first["tasks"] == {"ask": "WAITING", "then": "PENDING"}
    waiting = await backend.store.get_session(sid)
    assert waiting.status is SessionStatus.WAITING and waiting.lease_owner is None

    sent = await Child(["signal", backend.url, sid, "ask", "approve", json.dumps({"ok": True})], tmp_path).result()
    assert sent == {"seq": 1}

    result = await resume(SIGNAL, sid, store=backend.store, options=RESUMER)
    assert result.status is SessionStatus.COMPLETED
    assert result.outputs["ask"] == {"payload": {"ok": True}}
    assert result.outputs["then"] == {"seen": {"ask": {"payload": {"ok": True}}}}
    assert marks(work, "start")["ask"] == 2 and marks(work, "done")["ask"] == 1
    assert (await backend.store.get_task(sid, "ask")).attempt == 1


async def test_cancel_requested_from_another_process_cancels_running_agents(
    backend: Backend, tmp_path: Path
) -> None:
    sid = "cancel-1"
    started: set[str] = set()
    cancelled: set[str] = set()

    @agent(name="forever")
    async def forever(ctx: AgentContext) -> None:
        started.add(ctx.task_id)
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.add(ctx.task_id)
            raise

    @agent(name="never")
    async def never(ctx: AgentContext) -> None:
        raise AssertionError("a dependent of cancelled tasks must not run")

    pipe = (
        Pipeline("cancel", agents=[forever, never])
        .task("x", "forever").task("y", "forever").task("z", "never", depends_on=["x", "y"])
    )
    options = RunOptions(lease_seconds=1.0, heartbeat_interval=0.2, clock_skew_margin=0.2)
    results: list[RunResult] = []

    async def go() -> None:
        results.append(await run(pipe, store=backend.store, session_id=sid, options=options))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(go)
            await wait_until(lambda: started == {"x", "y"}, what="both agents to start")
            reply = await Child(["cancel", backend.url, sid, "stop requested by ops"], tmp_path).result()
            assert reply == {"status": "RUNNING", "cancel_requested": True}

    [result] = results
    assert result.status is SessionStatus.CANCELLED
    assert cancelled == {"x", "y"}
    snapshot = await backend.store.load_session(sid)
    assert snapshot.session.status is SessionStatus.CANCELLED
    assert snapshot.session.reason is not None and "stop requested by ops" in snapshot.session.reason
    assert {tid: t.status for tid, t in snapshot.tasks.items()} == {
        "x": TaskStatus.CANCELLED, "y": TaskStatus.CANCELLED, "z": TaskStatus.CANCELLED
    }


