"""What a real run reports through OpenTelemetry: a span per session and per task attempt,
retries as span events, the trace context stored on the session and linked on resume."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.agents import AgentContext, RetryPolicy, agent
from orchestrator.graph import Pipeline
from orchestrator.scheduler import resume, run
from orchestrator.store import SessionStatus, Store
from orchestrator.telemetry import Telemetry
from orchestrator.testing import temporary_store

pytestmark = pytest.mark.anyio


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter) -> Iterator[Telemetry]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Telemetry(tracer_provider=provider)
    provider.shutdown()


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with temporary_store() as opened:
        yield opened


def _spans(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


async def test_a_run_has_one_session_span_and_a_task_span_per_attempt_with_retries_as_events(
    store: Store, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    calls = 0

    @agent(retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, jitter=0.0))
    async def flaky(ctx: AgentContext) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("transient")
        return "ok"

    result = await run(Pipeline("traced", agents=[flaky]).task("t", "flaky"), store=store, telemetry=telemetry)

    assert result.ok
    [session] = _spans(exporter, "session ")
    attempts = _spans(exporter, "task t")
    assert [dict(s.attributes or {})["orchestrator.attempt"] for s in attempts] == [1, 2]
    assert all(s.parent is not None and s.parent.span_id == session.context.span_id for s in attempts)
    assert dict(session.attributes or {})["orchestrator.session.id"] == result.session_id
    retries = [e for e in session.events if e.name == "retry"]
    assert len(retries) == 1 and dict(retries[0].attributes or {})["orchestrator.task.id"] == "t"
    stored = await store.get_session(result.session_id)
    assert format(session.context.trace_id, "032x") in stored.trace_context["traceparent"]


async def test_a_resumed_run_links_to_the_trace_that_started_the_session(
    store: Store, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    @agent
    async def approval(ctx: AgentContext) -> Any:
        return await ctx.wait_for_signal("approve")

    pipeline = Pipeline("linked", agents=[approval]).task("review", "approval")
    first = await run(pipeline, store=store, telemetry=telemetry)
    assert first.status is SessionStatus.WAITING
    await store.send_signal(first.session_id, "review", "approve", {"ok": True})
    second = await resume(pipeline, first.session_id, store=store, telemetry=telemetry)

    assert second.ok and second.outputs["review"] == {"ok": True}
    original, resumed = _spans(exporter, "session ")
    assert dict(resumed.attributes or {})["orchestrator.resumed"] is True
    assert [link.context.trace_id for link in resumed.links] == [original.context.trace_id]
