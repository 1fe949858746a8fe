"""Cached outputs on each backend: a second session reuses the output until the TTL passes.

Time is a FakeClock, so expiry is reached by moving it, never by sleeping.
"""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.agents import AgentContext, CachePolicy, agent
from orchestrator.graph import Pipeline
from orchestrator.metrics import CACHE_HIT_METRIC, day_of
from orchestrator.scheduler import RunOptions, run
from orchestrator.store import SessionStatus
from orchestrator.store.protocol import CacheStore
from orchestrator.store.rules.cache import cache_key
from orchestrator.testing import FakeClock

from .conftest import Backend

pytestmark = pytest.mark.anyio


def _pipeline(calls: list[Any], ttl: str = "7d", version: str = "1") -> Pipeline:
    @agent(name="summarize", cache=CachePolicy(ttl=ttl, version=version))
    async def summarize(ctx: AgentContext) -> dict[str, Any]:
        calls.append(ctx.input)
        return {"summary": f"about {ctx.input['doc']}"}

    return Pipeline("cached", agents=[summarize]).task("sum", agent="summarize", input={"doc": "a"})


async def test_a_second_session_completes_a_cached_task_without_invoking_the_agent(backend: Backend) -> None:
    calls: list[Any] = []
    pipe = _pipeline(calls)
    first = await run(pipe, store=backend.store, session_id="c1")
    second = await run(pipe, store=backend.store, session_id="c2")
    assert first.status is SessionStatus.COMPLETED and second.status is SessionStatus.COMPLETED
    assert second.outputs["sum"] == {"summary": "about a"} == first.outputs["sum"]
    assert calls == [{"doc": "a"}]


async def test_a_cache_hit_is_recorded_in_the_sessions_events_and_the_metrics(backend: Backend) -> None:
    clock = FakeClock()
    store = await backend.open(clock=clock)
    pipe = _pipeline([])
    await run(pipe, store=store, session_id="h1")
    await run(pipe, store=store, session_id="h2")
    events = (await store.read_events("h2", limit=100)).items
    hits = [e for e in events if e.kind == "cache"]
    assert len(hits) == 1 and hits[0].task_id == "sum"
    assert not [e for e in (await store.read_events("h1", limit=100)).items if e.kind == "cache"]
    counts = await store.read_metrics(day_of(clock.now())[0], name=CACHE_HIT_METRIC, agent="summarize")
    assert sum(m.count for m in counts) == 1


async def test_after_the_ttl_the_agent_runs_again_and_the_expired_entry_is_never_read(backend: Backend) -> None:
    clock = FakeClock()
    store = await backend.open(clock=clock)
    calls: list[Any] = []
    pipe = _pipeline(calls, ttl="1h")
    await run(pipe, store=store, session_id="t1")
    clock.advance(3599)
    await run(pipe, store=store, session_id="t2")
    assert len(calls) == 1
    clock.advance(2)
    assert isinstance(store, CacheStore)
    key = cache_key("summarize", CachePolicy(ttl="1h"), {"doc": "a"}, {})
    assert await store.get_cached(key) is None  # expired: not read, whether or not TTL deleted it
    await run(pipe, store=store, session_id="t3")
    assert len(calls) == 2


async def test_no_cache_runs_the_agent_and_a_new_version_does_not_share_entries(backend: Backend) -> None:
    calls: list[Any] = []
    await run(_pipeline(calls), store=backend.store, session_id="n1")
    await run(_pipeline(calls), store=backend.store, session_id="n2", options=RunOptions(cache=False))
    await run(_pipeline(calls, version="2"), store=backend.store, session_id="n3")
    assert len(calls) == 3


async def test_only_a_genuine_completion_writes_an_entry(backend: Backend) -> None:
    attempts: list[int] = []

    @agent(name="flaky", cache=CachePolicy(ttl="1d"))
    async def flaky(ctx: AgentContext) -> str:
        attempts.append(ctx.attempt)
        raise RuntimeError("not today")

    pipe = Pipeline("failing", agents=[flaky]).task("f", agent="flaky", input={"x": 1}, max_attempts=1)
    assert (await run(pipe, store=backend.store, session_id="g1")).status is SessionStatus.FAILED
    assert (await run(pipe, store=backend.store, session_id="g2")).status is SessionStatus.FAILED
    assert len(attempts) == 2
    assert isinstance(backend.store, CacheStore)
    assert await backend.store.get_cached(cache_key("flaky", CachePolicy(ttl="1d"), {"x": 1}, {})) is None
