"""Helpers shared by the contract suites: a session to test with, task writes, the fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.errors import SessionNotFoundError
from orchestrator.store import (
    Lease,
    NewSession,
    NewTask,
    SessionRecord,
    SessionStatus,
    Store,
    TaskWrite,
    TaskWriteKind,
    WriteResult,
)
from orchestrator.testing.clock import FakeClock

__all__ = ["BIG", "LEASE", "assert_no_session", "clock_of", "complete", "make_session", "start"]

LEASE = 30.0
BIG = 1_000_000  # bytes of a large output: several DynamoDB chunks


def clock_of(store: Store) -> FakeClock:
    """The FakeClock the contract needs the store to be opened with."""
    clock = store.clock
    assert isinstance(clock, FakeClock), (
        f"the contract suite moves time: open the store with clock=FakeClock(), not {clock!r}"
    )
    return clock


def start(task_id: str, attempt: int = 1) -> TaskWrite:
    return TaskWrite(TaskWriteKind.START, task_id, attempt)


def complete(task_id: str, attempt: int = 1, output: Any = None) -> TaskWrite:
    return TaskWrite(TaskWriteKind.COMPLETE, task_id, attempt, output=output)


def _tasks(*ids: str, chain: bool = False) -> list[NewTask]:
    out: list[NewTask] = []
    for i, tid in enumerate(ids):
        deps = (ids[i - 1],) if chain and i else ()
        out.append(NewTask(tid, agent=f"agent-{tid}", input={"n": i}, depends_on=deps))
    return out


async def make_session(
    store: Store,
    session_id: str = "s1",
    tasks: list[NewTask] | None = None,
    *,
    owner: str | None = None,
    lease_seconds: float | None = None,
    **fields: Any,
) -> SessionRecord:
    """A session (PENDING unless `owner`) with tasks t1 -> t2 by default."""
    new = NewSession(session_id=session_id, pipeline="contract", **fields)
    chosen = _tasks("t1", "t2", chain=True) if tasks is None else tasks
    return await store.create_session(new, chosen, owner=owner, lease_seconds=lease_seconds)


async def _one(store: Store, lease: Lease, write: TaskWrite) -> WriteResult:
    [result] = await store.write_tasks(lease, [write])
    return result


async def _expire_and_claim(store: Store, sid: str, owner: str) -> Lease:
    clock_of(store).advance(LEASE + 1)
    return await store.claim_session(sid, owner, LEASE)


def _strip(buckets: tuple[int, ...]) -> tuple[int, ...]:
    out = list(buckets)
    while out and out[-1] == 0:
        out.pop()
    return tuple(out)


async def assert_no_session(store: Store, session_id: str = "s1") -> None:
    """Nothing of a refused session is visible: not by id, not in a listing."""
    with pytest.raises(SessionNotFoundError):
        await store.get_session(session_id)
    with pytest.raises(SessionNotFoundError):
        await store.load_session(session_id)
    assert (await store.list_sessions(SessionStatus.PENDING)).items == ()
