"""How often an idle worker lists each status: the requests an idle fleet costs."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest

from orchestrator.agents import AgentContext, agent
from orchestrator.graph import Pipeline
from orchestrator.recovery import Worker
from orchestrator.scheduler import RunOptions
from orchestrator.store import SessionStatus, Store
from orchestrator.testing import FakeClock, temporary_store

pytestmark = pytest.mark.anyio


@agent(name="noop")
async def noop(ctx: AgentContext) -> None:
    return None


class ListingCounter:
    """A Store that counts `list_sessions` calls by status and passes everything through."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.listed: Counter[SessionStatus] = Counter()

    async def list_sessions(self, status: SessionStatus, **kwargs: Any) -> Any:
        self.listed[SessionStatus(status)] += 1
        return await self._store.list_sessions(status, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def idle_listings(clock: FakeClock, options: RunOptions, advance: float) -> Counter[SessionStatus]:
    """Listings of an idle worker over about 0.5 s of real polls, the fake clock moved by `advance`."""
    async with temporary_store(clock=clock) as store:
        counter = ListingCounter(store)
        worker = Worker(counter, Pipeline("idle", agents=[noop]), poll_interval=0.01,  # type: ignore[arg-type]
                        options=options)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await anyio.sleep(0.25)
                clock.advance(advance)
                await anyio.sleep(0.25)
                worker.stop()
        return counter.listed


async def test_an_idle_worker_lists_abandoned_sessions_once_per_heartbeat_interval() -> None:
    options = RunOptions().with_lease(30.0)  # heartbeats every 6 s
    listed = await idle_listings(FakeClock(), options, advance=options.heartbeat_interval)
    assert listed[SessionStatus.RUNNING] == 2  # at the start, and once the clock passed a heartbeat interval
    assert listed[SessionStatus.PENDING] > 10  # submissions are looked for on every pass
    assert listed[SessionStatus.WAITING] == listed[SessionStatus.PENDING]


async def test_an_idle_worker_does_not_list_abandoned_sessions_again_within_a_heartbeat_interval() -> None:
    options = RunOptions().with_lease(30.0)
    listed = await idle_listings(FakeClock(), options, advance=options.heartbeat_interval - 0.5)
    assert listed[SessionStatus.RUNNING] == 1
