"""The deadline part of the Store contract: past a call's deadline nothing is written.

A runner bounds every store call by its lease's local deadline
(`orchestrator.store.deadline.bounded_by`); each backend must check it right before it
sends a request or begins a transaction, and raise the deadline's error instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from orchestrator.store import Progress, SessionStatus, Store, TaskStatus
from orchestrator.store.deadline import bounded_by
from orchestrator.testing.contract_base import LEASE, clock_of, make_session, start

__all__ = ["DeadlineContract"]


class DeadlinePassed(Exception):
    """The error a `FixedDeadline` raises once passed."""


@dataclass
class FixedDeadline:
    at: float | None

    def deadline_at(self) -> float | None:
        return self.at

    def deadline_error(self) -> Exception:
        return DeadlinePassed(f"deadline {self.at} passed")


class DeadlineContract:
    """No call is made past the deadline of its context; needs a `store` fixture."""

    pytestmark = pytest.mark.anyio

    async def test_calls_before_the_deadline_are_made(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        with bounded_by(FixedDeadline(clock_of(store).now() + 10)):
            [result] = await store.write_tasks(lease, [start("t1")])
        assert result.ok

    async def test_a_task_write_past_the_deadline_raises_its_error_and_writes_nothing(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        with bounded_by(FixedDeadline(clock_of(store).now())), pytest.raises(DeadlinePassed):
            await store.write_tasks(lease, [start("t1")])
        assert (await store.get_task("s1", "t1")).status is TaskStatus.PENDING

    async def test_session_writes_past_the_deadline_raise_and_write_nothing(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        with bounded_by(FixedDeadline(clock_of(store).now() - 1)):
            with pytest.raises(DeadlinePassed):
                await store.update_session(lease, progress=Progress(1, 2))
            with pytest.raises(DeadlinePassed):
                await store.renew_lease(lease, LEASE)
            with pytest.raises(DeadlinePassed):
                await store.finish_session(lease, SessionStatus.COMPLETED)
        session = await store.get_session("s1")
        assert (session.status, session.progress, session.lease_expires_at) == (
            SessionStatus.RUNNING, Progress(0, 2), lease.expires_at)

    async def test_the_deadline_is_read_at_each_call_so_a_renewal_moves_it(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        deadline = FixedDeadline(clock_of(store).now() - 1)
        with bounded_by(deadline):
            with pytest.raises(DeadlinePassed):
                await store.write_tasks(lease, [start("t1")])
            deadline.at = clock_of(store).now() + 5
            [result] = await store.write_tasks(lease, [start("t1")])
        assert result.ok

    async def test_calls_outside_the_scope_are_unbounded(self, store: Store) -> None:
        await make_session(store)
        with bounded_by(FixedDeadline(clock_of(store).now() - 1)):
            pass
        assert (await store.get_session("s1")).session_id == "s1"
