"""A store that fails under an agent is the store's failure, not the agent's attempt."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.agents import AgentContext, RetryPolicy, agent
from orchestrator.errors import StoreUnavailableError
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, run
from orchestrator.store import SessionStatus, TaskStatus

from .conftest import Backend
from .faulty import FaultyStore

pytestmark = pytest.mark.anyio


async def test_a_store_failure_inside_ctx_checkpoint_reruns_the_agent_without_using_an_attempt(
        backend: Backend) -> None:
    runs: list[int] = []
    armed = {"fail": False}

    async def fail_once() -> None:
        if armed["fail"]:
            armed["fail"] = False
            raise StoreUnavailableError("write_tasks failed: injected outage")

    @agent(name="saver", retry=RetryPolicy(max_attempts=1, initial_backoff=0.01))
    async def saver(ctx: AgentContext) -> dict[str, Any]:
        runs.append(ctx.attempt)
        armed["fail"] = len(runs) == 1
        await ctx.checkpoint({"step": 1})
        return {"attempt": ctx.attempt}

    pipe = Pipeline("store-fault", agents=[saver]).task("a", "saver")
    faulty = FaultyStore(backend.store, before={"write_tasks": fail_once})
    result = await run(pipe, store=faulty, session_id="sf1", options=RunOptions(worker_id="w1"))
    assert result.status is SessionStatus.COMPLETED, result.reason
    assert runs == [1, 2]
    task = await backend.store.get_task("sf1", "a")
    assert (task.status, task.attempt, task.attempt_base) == (TaskStatus.COMPLETED, 2, 1)
    assert [h.status for h in task.history] == [TaskStatus.FAILED, TaskStatus.COMPLETED]
