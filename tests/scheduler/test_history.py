"""The event history tells who held a session, how they got it, and how it ended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.agents import AgentContext, agent
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, resume, run
from orchestrator.store import NewSession, NewTask, SessionStatus, open_store
from orchestrator.testing import FakeClock

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


async def test_a_takeover_names_the_fence_it_took_over_from(tmp_path: Path) -> None:
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
    assert (takeover.data["owner"], takeover.data["fence"], takeover.data["previous_fence"]) == ("w2", 2, 1)
    assert takeover.level == "WARNING"
