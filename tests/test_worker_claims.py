"""A worker runs a session as its claim found it, not as a (stale) listing showed it."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from orchestrator.agents import AgentContext, agent
from orchestrator.graph import Pipeline
from orchestrator.recovery import Worker
from orchestrator.scheduler import submit
from orchestrator.store import (
    ErrorInfo,
    Page,
    SessionRecord,
    SessionStatus,
    Store,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
)
from orchestrator.testing import FakeClock, temporary_store

pytestmark = pytest.mark.anyio


@agent(name="ok")
async def ok(ctx: AgentContext) -> str:
    return "done"


PIPE = Pipeline("takeover", agents=[ok]).task("t", "ok")


class StaleListing:
    """A Store whose listings show only `listed`, once, as PENDING (taken before the session moved on)."""

    def __init__(self, store: Store, listed: tuple[SessionRecord, ...]) -> None:
        self._store = store
        self._listed = listed

    async def list_sessions(self, status: SessionStatus, **kwargs: Any) -> Page[SessionRecord]:
        listed: tuple[SessionRecord, ...] = ()
        if SessionStatus(status) is SessionStatus.PENDING:
            listed, self._listed = self._listed, ()
        return Page(listed, None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_a_session_listed_pending_but_abandoned_meanwhile_is_taken_over_and_its_old_failures_rerun() -> None:
    clock = FakeClock()
    async with temporary_store(clock=clock) as store:
        await submit(PIPE, store=store, session_id="s")
        listed = (await store.list_sessions(SessionStatus.PENDING)).items
        old = await store.claim_session("s", "old-owner", 30)  # claimed after the listing...
        await store.write_tasks(old, [TaskWrite(TaskWriteKind.START, "t", 1)])
        await store.write_tasks(old, [TaskWrite(TaskWriteKind.FAIL, "t", 1, error=ErrorInfo("OSError", "disk"))])
        clock.advance(31)  # ...and abandoned: its failure never reached the session
        worker = Worker(StaleListing(store, listed), [PIPE], poll_interval=0.01)  # type: ignore[arg-type]
        with anyio.fail_after(30):
            report = await worker.run(max_sessions=1)
        assert report.results == {"s": "COMPLETED"}
        assert (await store.get_task("s", "t")).status is TaskStatus.COMPLETED
