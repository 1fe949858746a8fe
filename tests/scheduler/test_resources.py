"""Tasks that use fleet-wide resources: how they wait, what they show, what they hold meanwhile."""

from __future__ import annotations

import json

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from cli_helpers import cli

from orchestrator.agents import AgentContext, NonRetryableError, agent
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, RunResult, resume, run
from orchestrator.schedules import flow_store
from orchestrator.store import SessionStatus, TaskStatus
from orchestrator.store.records.flow import Grant, ResourceLimit

from .conftest import Backend
from .helpers import wait_until

pytestmark = pytest.mark.anyio

OPTIONS = RunOptions(concurrency=1, progress_interval=0.05)


@agent(uses={"openai": 1})
async def ask(ctx: AgentContext) -> str:
    return "answer"


@agent(uses={"openai": 1}, timeout=0.3)
async def quick_ask(ctx: AgentContext) -> str:
    return "answer"


@agent(uses={"openai": 3})
async def greedy(ctx: AgentContext) -> str:
    return "never"


@agent(uses={"openai": 1})
async def refuses(ctx: AgentContext) -> str:
    raise NonRetryableError("the provider refused the prompt")


@agent(uses={"openai": 1})
async def asks_a_person(ctx: AgentContext) -> Any:
    return await ctx.wait_for_signal("answer", timeout=60)


@agent
async def plain(ctx: AgentContext) -> str:
    return "done"


async def _outsider(backend: Backend, name: str = "openai", units: int = 1) -> Grant:
    flow = flow_store(backend.store)
    await flow.set_limit(ResourceLimit(name, units))
    grant = await flow.acquire_resource(name, "outsider", units, priority=0, lease_seconds=60.0)
    assert isinstance(grant, Grant)
    return grant


async def _run_until_waiting(backend: Backend, pipeline: Pipeline, session_id: str, task_id: str,
                             grant: Grant, while_waiting: Callable[[], Awaitable[None]] | None = None) -> RunResult:
    results: list[RunResult] = []

    async def go() -> None:
        results.append(await run(pipeline, store=backend.store, session_id=session_id, options=OPTIONS))

    async def waiting() -> bool:
        task = (await backend.store.load_session(session_id)).tasks[task_id]
        return task.progress.phase == "waiting-for-resource"

    async with anyio.create_task_group() as tg:
        tg.start_soon(go)
        await wait_until(lambda: _exists(backend, session_id), what="the session")
        await wait_until(waiting, what=f"task {task_id} waiting for its resource")
        if while_waiting is not None:
            await while_waiting()
        await flow_store(backend.store).release_resource(grant)
    return results[0]


async def _exists(backend: Backend, session_id: str) -> bool:
    page = await backend.store.list_sessions(SessionStatus.RUNNING, limit=10)
    return any(s.session_id == session_id for s in page.items)


async def test_a_waiting_task_shows_it_and_gives_its_session_slot_to_another_task(backend: Backend) -> None:
    grant = await _outsider(backend)
    pipe = Pipeline("slots", agents=[ask, plain]).task("ask", ask, priority=0).task("other", plain)
    result = await _run_until_waiting(backend, pipe, "s-slots", "ask", grant)
    assert result.status is SessionStatus.COMPLETED
    snap = await backend.store.load_session("s-slots")
    # with one session slot, "other" ran while "ask" waited
    assert snap.tasks["other"].ended_at is not None and snap.tasks["ask"].ended_at is not None
    assert snap.tasks["other"].ended_at <= snap.tasks["ask"].ended_at
    kinds = [e.kind for e in (await backend.store.read_events("s-slots")).items if e.task_id == "ask"]
    assert kinds.index("resource_wait") < kinds.index("resource_acquired")


async def test_the_wait_for_a_resource_does_not_count_toward_the_agent_timeout(backend: Backend) -> None:
    grant = await _outsider(backend)
    pipe = Pipeline("timeout", agents=[quick_ask]).task("ask", quick_ask)
    results: list[RunResult] = []

    async def go() -> None:
        results.append(await run(pipe, store=backend.store, session_id="s-timeout", options=OPTIONS))

    async with anyio.create_task_group() as tg:
        tg.start_soon(go)
        await anyio.sleep(1.0)  # three times the agent's timeout, spent waiting
        await flow_store(backend.store).release_resource(grant)
    assert results[0].status is SessionStatus.COMPLETED
    assert (await backend.store.get_task("s-timeout", "ask")).attempt == 1


async def test_a_task_needing_more_units_than_the_limit_fails_at_once(backend: Backend) -> None:
    await flow_store(backend.store).set_limit(ResourceLimit("openai", 2))
    pipe = Pipeline("greedy", agents=[greedy]).task("g", greedy)
    result = await run(pipe, store=backend.store, session_id="s-greedy", options=OPTIONS)
    task = await backend.store.get_task("s-greedy", "g")
    assert (result.status, task.status, task.attempt) == (SessionStatus.FAILED, TaskStatus.FAILED, 1)
    assert task.last_error is not None and "limits set openai" in task.last_error.message


async def test_a_task_s_own_uses_add_to_its_agent_s(backend: Backend) -> None:
    grant = await _outsider(backend, "github")
    pipe = Pipeline("own", agents=[plain]).task("t", plain, uses={"github": 1})
    result = await _run_until_waiting(backend, pipe, "s-own", "t", grant)
    assert result.status is SessionStatus.COMPLETED
    events: list[Any] = [e for e in (await backend.store.read_events("s-own")).items if e.kind == "resource_wait"]
    assert events[0].data["resource"] == "github"


async def test_status_and_limits_show_a_task_waiting_for_its_resource(backend: Backend, tmp_path: Path) -> None:
    grant = await _outsider(backend)
    pipe = Pipeline("shown", agents=[ask]).task("ask", ask)
    seen: list[str] = []

    async def look() -> None:
        status = await anyio.to_thread.run_sync(lambda: cli("status", "s-shown", store=backend.url, tmp=tmp_path))
        limits = await anyio.to_thread.run_sync(
            lambda: cli("limits", "show", "openai", "--json", store=backend.url, tmp=tmp_path))
        seen.extend([status.out, limits.out])

    result = await _run_until_waiting(backend, pipe, "s-shown", "ask", grant, look)
    assert result.status is SessionStatus.COMPLETED
    assert "waiting-for-resource (openai)" in seen[0]
    shown = json.loads(seen[1])
    assert [h["holder"] for h in shown["holders"]] == ["outsider"]
    assert [w["holder"].split("/")[:2] for w in shown["waiting"]] == [["s-shown", "ask"]]


async def test_an_agent_holding_a_resource_fails_with_its_own_error_and_frees_the_resource(backend: Backend) -> None:
    await flow_store(backend.store).set_limit(ResourceLimit("openai", 1))
    pipe = Pipeline("refused", agents=[refuses]).task("r", refuses)
    result = await run(pipe, store=backend.store, session_id="s-refused", options=OPTIONS)
    task = await backend.store.get_task("s-refused", "r")
    assert (result.status, task.attempt) == (SessionStatus.FAILED, 1)  # non-retryable: not retried
    assert task.last_error is not None and task.last_error.type.endswith("NonRetryableError")
    assert (await flow_store(backend.store).resource_state("openai")).holders == ()


async def test_an_agent_holding_a_resource_can_wait_for_a_signal_and_holds_nothing_meanwhile(
        backend: Backend) -> None:
    await flow_store(backend.store).set_limit(ResourceLimit("openai", 1))
    pipe = Pipeline("person", agents=[asks_a_person]).task("ask", asks_a_person)
    waiting = await run(pipe, store=backend.store, session_id="s-person", options=OPTIONS)
    assert waiting.status is SessionStatus.WAITING
    assert (await flow_store(backend.store).resource_state("openai")).holders == ()
    await backend.store.send_signal("s-person", "ask", "answer", {"ok": True})
    done = await resume(pipe, "s-person", store=backend.store, options=OPTIONS)
    assert done.status is SessionStatus.COMPLETED and done.outputs["ask"] == {"ok": True}
