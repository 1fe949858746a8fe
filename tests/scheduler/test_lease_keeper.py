"""LeaseKeeper on its own: a real SQLite store, a FakeClock, and a recording LeaseListener (no runner)."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import pytest

from orchestrator.errors import LeaseLostError
from orchestrator.scheduler.lease_keeper import LeaseKeeper
from orchestrator.scheduler.options import RunOptions
from orchestrator.store import Lease, NewSession, NewTask, Store
from orchestrator.testing import FakeClock, temporary_store

from .faulty import FaultyStore
from .helpers import wait_until

pytestmark = pytest.mark.anyio

OPTIONS = RunOptions(lease_seconds=30.0, heartbeat_interval=8.0, clock_skew_margin=2.0)


@dataclass
class Heard:
    """A LeaseListener that records what it was told."""

    lost: list[LeaseLostError] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    signals: list[int] = field(default_factory=list)

    def lease_lost(self, error: LeaseLostError) -> None:
        self.lost.append(error)

    def cancel_requested(self, reason: str) -> None:
        self.cancels.append(reason)

    def signals_changed(self, signal_seq: int) -> None:
        self.signals.append(signal_seq)


async def _held(store: Store) -> Lease:
    record = await store.create_session(NewSession("s-1", "p"), [NewTask("a", "agent")], owner="w1",
                                        lease_seconds=OPTIONS.lease_seconds)
    return Lease(record.session_id, "w1", record.fence, record.lease_expires_at, record.signal_seq)


async def test_a_renewal_reports_a_stored_cancel_request_and_a_newer_signal_sequence() -> None:
    clock = FakeClock()
    async with temporary_store(clock=clock) as store:
        heard = Heard()
        keeper = LeaseKeeper(store, await _held(store), OPTIONS, clock, heard)
        await store.request_cancel("s-1", "stop please")
        await store.send_signal("s-1", "a", "go", {"x": 1})
        async with anyio.create_task_group() as tg:
            await tg.start(keeper.run)
            clock.advance(OPTIONS.heartbeat_interval)
            await wait_until(lambda: bool(heard.cancels and heard.signals), what="the renewal's news")
            tg.cancel_scope.cancel()

    assert len(heard.cancels) == 1 and heard.signals == [1] and heard.lost == []
    assert keeper.lease.expires_at == clock.now() + OPTIONS.lease_seconds
    assert keeper.lease.signal_seq == 0  # still the sequence of the signals *loaded*: none yet


async def test_renewals_failing_until_the_local_deadline_report_the_lease_lost_once() -> None:
    clock = FakeClock()
    async with temporary_store(clock=clock) as store:
        faulty = FaultyStore(store, fail_on={"renew_lease"})
        heard = Heard()
        keeper = LeaseKeeper(faulty, await _held(store), OPTIONS, clock, heard)
        start = clock.now()
        async with anyio.create_task_group() as tg:
            await tg.start(keeper.run)
            for failures in (1, 2, 3):
                clock.advance(OPTIONS.heartbeat_interval)
                await wait_until(lambda n=failures: faulty.failures["renew_lease"] >= n,  # type: ignore[misc]
                                 what=f"renewal failure {failures}")
            assert heard.lost == []
            clock.set(start + OPTIONS.lease_seconds - OPTIONS.clock_skew_margin)
            await wait_until(lambda: bool(heard.lost), what="the local deadline")
            tg.cancel_scope.cancel()

    [error] = heard.lost
    assert "deadline" in str(error) and "s-1" in str(error)
    with pytest.raises(LeaseLostError):
        keeper.check()


async def test_only_the_keeper_moves_the_lease_and_loading_signals_changes_only_their_sequence() -> None:
    clock = FakeClock()
    async with temporary_store(clock=clock) as store:
        lease = await _held(store)
        keeper = LeaseKeeper(store, lease, OPTIONS, clock, Heard())

        keeper.signals_loaded(3)

    assert keeper.lease == Lease(lease.session_id, lease.owner, lease.fence, lease.expires_at, 3)
