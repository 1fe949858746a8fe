"""The worker's idle timer (`run(idle_exit=...)`) reads the store's injected clock."""

from __future__ import annotations

import anyio
import pytest

from orchestrator.agents import AgentContext, agent
from orchestrator.graph import Pipeline
from orchestrator.recovery import Worker, WorkerReport
from orchestrator.testing import FakeClock, temporary_store

pytestmark = pytest.mark.anyio


@agent(name="noop")
async def noop(ctx: AgentContext) -> None:
    return None


async def test_an_idle_worker_exits_when_the_injected_clock_passes_idle_exit() -> None:
    clock = FakeClock()
    reports: list[WorkerReport] = []
    async with temporary_store(clock=clock) as store:
        worker = Worker(store, Pipeline("idle", agents=[noop]), poll_interval=0.01)

        async def work() -> None:
            reports.append(await worker.run(idle_exit=60.0))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(work)
                await anyio.sleep(0.3)  # many real polls, no fake time: still running
                assert reports == []
                clock.advance(59.0)
                await anyio.sleep(0.1)
                assert reports == []
                clock.advance(1.0)
                while not reports:
                    await anyio.sleep(0.01)
    assert reports[0].results == {}
