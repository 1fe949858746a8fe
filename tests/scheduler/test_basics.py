"""In-process scheduler behaviour on each backend: limits, retries, failures, timeouts, executors, redrive."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.agents import AgentContext, AgentTimeoutError, RetryPolicy, SyncAgentContext, agent
from orchestrator.errors import ClaimRejectedError, NotFoundError, VersionMismatchError
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, RunResult, resume, run, submit
from orchestrator.store import SessionStatus, TaskStatus

from .apps import process_square
from .conftest import Backend
from .helpers import wait_until

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, jitter=0.0)


@agent(name="echo")
async def echo(ctx: AgentContext) -> dict[str, Any]:
    return {"task": ctx.task_id, "deps": sorted(ctx.deps)}


async def test_fan_out_runs_at_most_concurrency_agents_and_reaches_it(backend: Backend) -> None:
    limit, width = 4, 20
    running = 0
    peak = 0
    give_up = time.monotonic() + 20.0

    @agent(name="fan")
    async def fan(ctx: AgentContext) -> dict[str, Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            # Hold the slot until the limit was reached once, so "reaches 4" is measured, not luck.
            while peak < limit and time.monotonic() < give_up:
                await anyio.sleep(0.005)
            await anyio.sleep(0)
            return {"i": ctx.input}
        finally:
            running -= 1

    pipe = Pipeline("fan-out", agents=[fan, echo]).task("root", "echo")
    leaves = [f"leaf-{i:02d}" for i in range(width)]
    for i, tid in enumerate(leaves):
        pipe.task(tid, "fan", depends_on="root", input=i)
    pipe.task("sink", "echo", depends_on=leaves)

    result = await run(pipe, store=backend.store, options=RunOptions(concurrency=limit))

    assert result.status is SessionStatus.COMPLETED
    assert peak == limit
    assert result.outputs["sink"]["deps"] == leaves
    assert {result.outputs[t]["i"] for t in leaves} == set(range(width))


async def test_task_failing_twice_completes_on_third_attempt_after_backoffs(backend: Backend) -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.05, backoff_factor=2.0, jitter=0.0)

    @agent(name="flaky", retry=policy)
    async def flaky(ctx: AgentContext) -> dict[str, Any]:
        if ctx.attempt < 3:
            raise RuntimeError(f"boom on attempt {ctx.attempt}")
        return {"attempt": ctx.attempt}

    pipe = Pipeline("retries", agents=[flaky]).task("f", "flaky")
    result = await run(pipe, store=backend.store, session_id="retry-1")

    assert result.status is SessionStatus.COMPLETED
    assert result.outputs["f"] == {"attempt": 3}
    task = await backend.store.get_task("retry-1", "f")
    assert (task.status, task.attempt) == (TaskStatus.COMPLETED, 3)
    assert [(h.attempt, h.status) for h in task.history] == [
        (1, TaskStatus.FAILED), (2, TaskStatus.FAILED), (3, TaskStatus.COMPLETED)
    ]
    assert [h.error.message if h.error else None for h in task.history] == [
        "boom on attempt 1", "boom on attempt 2", None
    ]
    starts = [h.started_at for h in task.history]
    assert all(s is not None for s in starts)
    # The next attempt may start only after its backoff: 0.05 s after attempt 1, 0.1 s after attempt 2.
    assert starts[1] - starts[0] >= policy.delay(1)  # type: ignore[operator]
    assert starts[2] - starts[1] >= policy.delay(2)  # type: ignore[operator]
    events = (await backend.store.read_events("retry-1", limit=100)).items
    retries = [e for e in events if e.kind == "retry"]
    assert [(e.task_id, e.data["attempt"], e.data["delay"]) for e in retries] == [
        ("f", 1, pytest.approx(0.05)), ("f", 2, pytest.approx(0.1))
    ]


async def test_failed_task_skips_dependents_and_independent_branch_completes(backend: Backend) -> None:
    @agent(name="broken", retry=FAST)
    async def broken(ctx: AgentContext) -> None:
        raise ValueError("the widget is broken")

    pipe = (
        Pipeline("failure", agents=[broken, echo])
        .task("bad", "broken")
        .task("after-bad", "echo", depends_on="bad")
        .task("last", "echo", depends_on="after-bad")
        .task("good", "echo")
        .task("after-good", "echo", depends_on="good")
    )
    result = await run(pipe, store=backend.store, session_id="fail-1")

    assert result.status is SessionStatus.FAILED
    assert result.reason is not None and "bad" in result.reason and "the widget is broken" in result.reason
    snapshot = await backend.store.load_session("fail-1")
    assert {tid: t.status for tid, t in snapshot.tasks.items()} == {
        "bad": TaskStatus.FAILED,
        "after-bad": TaskStatus.SKIPPED,
        "last": TaskStatus.SKIPPED,
        "good": TaskStatus.COMPLETED,
        "after-good": TaskStatus.COMPLETED,
    }
    assert snapshot.tasks["bad"].attempt == 3
    assert snapshot.tasks["after-bad"].attempt == 0  # never started
    assert snapshot.session.status is SessionStatus.FAILED
    assert snapshot.session.reason == result.reason


async def test_agent_past_its_timeout_fails_with_agent_timeout_error_and_is_retried(backend: Backend) -> None:
    @agent(name="slow", timeout=0.2, retry=FAST)
    async def slow(ctx: AgentContext) -> dict[str, Any]:
        if ctx.attempt == 1:
            await anyio.sleep_forever()
        return {"attempt": ctx.attempt}

    pipe = Pipeline("timeouts", agents=[slow]).task("s", "slow")
    result = await run(pipe, store=backend.store, session_id="timeout-1")

    assert result.status is SessionStatus.COMPLETED
    assert result.outputs["s"] == {"attempt": 2}
    task = await backend.store.get_task("timeout-1", "s")
    first = task.history[0]
    assert first.status is TaskStatus.FAILED and first.error is not None
    assert first.error.type.endswith("AgentTimeoutError")
    assert AgentTimeoutError("slow", 0.2).args[0] == first.error.message


async def test_resume_with_another_pipeline_version_is_refused_and_writes_nothing(backend: Backend) -> None:
    v1 = Pipeline("versioned", version="1", agents=[echo]).task("a", "echo")
    v2 = Pipeline("versioned", version="2", agents=[echo]).task("a", "echo").task("b", "echo", depends_on="a")
    sid = await submit(v1, store=backend.store, session_id="version-1")
    before = await backend.store.load_session(sid)

    with pytest.raises(VersionMismatchError) as err:
        await resume(v2, sid, store=backend.store)

    assert "version 1" in str(err.value) and "version 2" in str(err.value) and sid in str(err.value)
    assert await backend.store.load_session(sid) == before

    forced = await resume(v2, sid, store=backend.store, force=True)
    assert forced.status is SessionStatus.COMPLETED
    assert set(forced.outputs) == {"a"}  # the stored DAG runs, not the new code's shape


async def test_thread_and_process_agents_produce_outputs_and_thread_agent_reports_progress(
    backend: Backend,
) -> None:
    seen_progress = threading.Event()

    @agent(name="threaded", executor="thread")
    def threaded(ctx: SyncAgentContext) -> dict[str, Any]:
        ctx.progress(1, 2, phase="halfway")
        if not seen_progress.wait(timeout=20):
            raise RuntimeError("the test never saw the progress this agent reported")
        return {"thread": threading.get_ident() != main_thread, "attempt": ctx.attempt}

    main_thread = threading.get_ident()
    pipe = (
        Pipeline("executors", agents=[threaded, process_square])
        .task("t", "threaded")
        .task("p", "square", input={"x": 7})
    )
    results: list[RunResult] = []

    async def go() -> None:
        results.append(await run(pipe, store=backend.store, session_id="exec-1",
                                 options=RunOptions(progress_interval=0.05)))

    async def progress_stored() -> bool:
        try:
            task = await backend.store.get_task("exec-1", "t")
        except NotFoundError:
            return False  # the session is not created yet
        return (task.progress.current, task.progress.total, task.progress.phase) == (1, 2, "halfway")

    async with anyio.create_task_group() as tg:
        tg.start_soon(go)
        await wait_until(progress_stored, what="the thread agent's progress in the store")
        seen_progress.set()

    [result] = results
    assert result.status is SessionStatus.COMPLETED
    assert result.outputs["t"] == {"thread": True, "attempt": 1}
    assert result.outputs["p"]["square"] == 49
    assert result.outputs["p"]["pid"] != os.getpid()


async def test_redrive_gives_failed_tasks_fresh_attempts_up_to_the_limit_then_force(
    backend: Backend, tmp_path: Path
) -> None:
    flag = tmp_path / "fixed"

    @agent(name="needs-fix", retry=RetryPolicy(max_attempts=1))
    async def needs_fix(ctx: AgentContext) -> dict[str, Any]:
        if not flag.exists():
            raise RuntimeError("not fixed yet")
        return {"attempt": ctx.attempt}

    pipe = (
        Pipeline("redrive", agents=[needs_fix, echo])
        .task("a", "needs-fix")
        .task("b", "echo", depends_on="a")
        .task("c", "echo")
    )
    store = backend.store
    first = await run(pipe, store=store, session_id="redrive-1", options=RunOptions(max_redrives=1))
    assert first.status is SessionStatus.FAILED
    assert first.tasks == {"a": TaskStatus.FAILED, "b": TaskStatus.SKIPPED, "c": TaskStatus.COMPLETED}

    second = await resume(pipe, "redrive-1", store=store)  # redrive 1 of 1: a fresh attempt, fails again
    assert second.status is SessionStatus.FAILED
    snapshot = await store.load_session("redrive-1")
    assert snapshot.session.redrive_count == 1
    assert (snapshot.tasks["a"].status, snapshot.tasks["a"].attempt) == (TaskStatus.FAILED, 2)
    assert snapshot.tasks["b"].status is TaskStatus.SKIPPED
    assert snapshot.tasks["c"].attempt == 1  # completed tasks are kept, never re-run

    with pytest.raises(ClaimRejectedError) as err:
        await resume(pipe, "redrive-1", store=store)
    assert "redrive" in str(err.value) and "redrive-1" in str(err.value) and "--force" in str(err.value)
    assert await store.load_session("redrive-1") == snapshot

    flag.write_text("yes")
    forced = await resume(pipe, "redrive-1", store=store, force=True)
    assert forced.status is SessionStatus.COMPLETED
    final = await store.load_session("redrive-1")
    assert final.tasks["a"].attempt == 3 and final.tasks["a"].status is TaskStatus.COMPLETED
    assert final.tasks["b"].status is TaskStatus.COMPLETED
    assert final.tasks["c"].attempt == 1
    assert final.session.redrive_count == 2





async def test_added_tasks_cannot_form_a_cycle_and_a_refused_add_writes_nothing(backend: Backend) -> None:
    from orchestrator.agents import TaskSpec
    from orchestrator.errors import PipelineDefinitionError

    @agent(name="planner")
    async def planner(ctx: AgentContext) -> dict[str, Any]:
        refused: list[list[str]] = []
        # A cycle needs a dependency on a task not added yet: refused, whatever the order.
        for spec in (TaskSpec("sub-a", "echo", depends_on=["sub-b"]), TaskSpec("sub-b", "echo", depends_on=["sub-a"])):
            try:
                await ctx.add_task(spec)
            except PipelineDefinitionError as exc:
                refused.append([spec.task_id, type(exc).__name__])
        await ctx.add_task(TaskSpec("sub-ok", "echo", depends_on=["plan"]))
        return {"refused": refused}

    pipe = Pipeline("cyclic-plan", agents=[planner, echo]).task("plan", "planner")
    result = await run(pipe, store=backend.store)

    assert result.status is SessionStatus.COMPLETED
    assert result.outputs["plan"] == {"refused": [["sub-a", "PipelineDefinitionError"],
                                                  ["sub-b", "PipelineDefinitionError"]]}
    snapshot = await backend.store.load_session(result.session_id)
    assert sorted(snapshot.tasks) == ["plan", "sub-ok"]
    assert snapshot.tasks["sub-ok"].status is TaskStatus.COMPLETED


async def test_higher_priority_tasks_start_first_when_slots_are_scarce(backend: Backend) -> None:
    order: list[str] = []

    @agent(name="record")
    async def record(ctx: AgentContext) -> None:
        order.append(ctx.task_id)

    pipe = Pipeline("priorities", agents=[record, echo]).task("root", "echo")
    for tid, priority in (("low", 3), ("urgent", 0), ("normal", 2), ("high", 1)):
        pipe.task(tid, "record", depends_on="root", priority=priority)
    result = await run(pipe, store=backend.store, options=RunOptions(concurrency=1))

    assert result.status is SessionStatus.COMPLETED
    assert order == ["urgent", "high", "normal", "low"]


async def test_worker_limits_cap_agents_across_all_the_sessions_a_worker_runs(backend: Backend) -> None:
    from orchestrator.recovery import Worker
    from orchestrator.scheduler import WorkerLimits

    running = 0
    peak = 0
    give_up = time.monotonic() + 20.0

    @agent(name="busy")
    async def busy(ctx: AgentContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            while peak < 2 and time.monotonic() < give_up:  # hold until the cap was reached once
                await anyio.sleep(0.005)
            await anyio.sleep(0.01)
        finally:
            running -= 1

    pipe = Pipeline("capped", agents=[busy])
    for i in range(3):
        pipe.task(f"b{i}", "busy")
    for _ in range(3):
        await submit(pipe, store=backend.store)
    worker = Worker(backend.store, pipe, concurrency=3, poll_interval=0.05, grace=5.0,
                    limits=WorkerLimits(concurrency=2))
    report = await worker.run(max_sessions=3, idle_exit=0.5)

    assert sorted(report.results.values()) == ["COMPLETED"] * 3
    assert peak == 2


async def test_a_retry_in_the_same_run_sees_the_checkpoint_of_the_failed_attempt(backend: Backend) -> None:
    seen: list[Any] = []

    @agent(name="resumable", retry=FAST)
    async def resumable(ctx: AgentContext) -> Any:
        seen.append(ctx.state)
        if ctx.attempt == 1:
            await ctx.checkpoint({"step": 3})
            raise RuntimeError("lost the connection at step 3")
        return ctx.state

    result = await run(Pipeline("ckpt-retry", agents=[resumable]).task("t", "resumable"), store=backend.store)

    assert result.status is SessionStatus.COMPLETED
    assert seen == [None, {"step": 3}]


async def test_a_checkpoint_over_its_limit_fails_the_task_once_without_retries(backend: Backend) -> None:
    from orchestrator.errors import PayloadTooLargeError

    calls: list[int] = []

    @agent(name="hoarder", retry=FAST)
    async def hoarder(ctx: AgentContext) -> dict[str, Any]:
        calls.append(ctx.attempt)
        await ctx.checkpoint({"blob": "x" * 200_000})
        return {}

    pipe = Pipeline("hoard", agents=[hoarder]).task("h", "hoarder")
    result = await run(pipe, store=backend.store)

    assert result.status is SessionStatus.FAILED
    assert calls == [1]
    task = (await backend.store.load_session(result.session_id)).tasks["h"]
    assert (task.status, task.attempt, task.checkpoint) == (TaskStatus.FAILED, 1, None)
    assert task.last_error is not None and task.last_error.type.endswith(PayloadTooLargeError.__name__)
    assert "98,304" in task.last_error.message
