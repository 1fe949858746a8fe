"""The session part of the Store contract: creation, claims, leases, redrive, waits, signals,
cancellation, listing and events. See `orchestrator.testing.contract` for how to use it."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from orchestrator.errors import (
    ClaimRejectedError,
    LeaseLostError,
    SessionNotFoundError,
    SessionStateError,
)
from orchestrator.store import (
    SCHEMA_VERSION,
    ClaimPolicy,
    Edge,
    ErrorInfo,
    Event,
    Lease,
    NewSession,
    NewTask,
    OwnerKind,
    PreviousHolder,
    Progress,
    SessionRecord,
    SessionStatus,
    Store,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    WriteOutcome,
)
from orchestrator.testing.contract_base import (
    LEASE,
    _expire_and_claim,
    _one,
    _tasks,
    clock_of,
    make_session,
    start,
)

__all__ = ["SessionContract"]


class SessionContract:
    """What a runner needs of sessions; needs a `store` fixture opened with a FakeClock."""

    pytestmark = pytest.mark.anyio

    # -- setup and round trips ------------------------------------------------------------

    async def test_describe_names_backend_and_location(self, store: Store) -> None:
        desc = store.describe()
        assert desc.backend and desc.location
        assert desc.location in str(desc)

    async def test_initialize_is_idempotent_and_check_finds_no_problem(self, store: Store) -> None:
        await make_session(store)
        await store.initialize()
        assert await store.check() == []
        assert (await store.get_session("s1")).session_id == "s1"

    async def test_provision_keeps_the_data_and_is_idempotent(self, store: Store) -> None:
        await make_session(store)
        await store.provision()
        await store.provision()
        assert (await store.get_session("s1")).session_id == "s1"

    async def test_create_then_load_round_trips_session_tasks_and_edges(self, store: Store) -> None:
        now = clock_of(store).now()
        tasks = [
            NewTask("a", agent="planner", input={"goal": "ship", "n": [1, 2.5, None]}, priority=0, max_attempts=5),
            NewTask("b", agent="coder", input="text", depends_on=("a",)),
            NewTask("c", agent="tester", depends_on=("a", "b"), priority=3),
        ]
        new = NewSession(
            session_id="s-rt", pipeline="build", pipeline_version="7", input={"repo": "x/y", "é": "ü"},
            project_id="proj-1", user_id="u-1", pipeline_type="deploy", max_redrives=2,
            metadata={"k": [1, {"z": True}]}, trace_context={"traceparent": "00-abc-def-01"},
        )
        created = await store.create_session(new, tasks)
        snap = await store.load_session("s-rt")
        s = snap.session
        assert s == created == await store.get_session("s-rt")
        assert (s.pipeline, s.pipeline_version, s.input) == ("build", "7", {"repo": "x/y", "é": "ü"})
        assert (s.project_id, s.user_id, s.pipeline_type) == ("proj-1", "u-1", "deploy")
        assert (s.status, s.owner_kind, s.fence, s.max_redrives) == (SessionStatus.PENDING, OwnerKind.WORKER, 0, 2)
        assert s.metadata == {"k": [1, {"z": True}]} and s.trace_context == {"traceparent": "00-abc-def-01"}
        assert s.created_at == now and s.lease_owner is None and s.schema_version == SCHEMA_VERSION
        assert set(snap.tasks) == {"a", "b", "c"}
        a = snap.task("a")
        assert (a.agent, a.input, a.priority, a.max_attempts) == ("planner", tasks[0].input, 0, 5)
        assert (a.status, a.attempt, a.fence, a.output) == (TaskStatus.PENDING, 0, 0, None)
        assert set(snap.task("c").depends_on) == {"a", "b"}
        assert set(snap.edges) == {Edge("b", "a"), Edge("c", "a"), Edge("c", "b")}
        assert await store.get_task("s-rt", "b") == snap.task("b")

    async def test_create_with_owner_is_running_at_fence_one(self, store: Store) -> None:
        now = clock_of(store).now()
        s = await make_session(store, owner="w1", lease_seconds=LEASE)
        assert (s.status, s.fence, s.lease_owner, s.lease_expires_at) == (SessionStatus.RUNNING, 1, "w1", now + LEASE)
        lease = Lease("s1", "w1", 1, now + LEASE)
        assert (await _one(store, lease, start("t1"))).outcome is WriteOutcome.APPLIED

    async def test_external_session_is_never_claimable(self, store: Store) -> None:
        s = await make_session(store, owner_kind=OwnerKind.EXTERNAL, status=SessionStatus.RUNNING,
                               owner="external:tok", lease_seconds=None)
        assert (s.owner_kind, s.lease_expires_at) == (OwnerKind.EXTERNAL, None)
        clock_of(store).advance(10 * 365 * 86400)
        with pytest.raises(ClaimRejectedError, match="external"):
            await store.claim_session("s1", "w1", LEASE)
        lease = Lease("s1", "external:tok", s.fence, None)
        await store.update_session(lease, progress=Progress(5, 29, phase="deploy"))
        assert (await store.get_session("s1")).progress == Progress(5, 29, phase="deploy")

    # -- claims and leases -----------------------------------------------------------------

    async def test_claim_pending_sets_owner_lease_and_fence(self, store: Store) -> None:
        await make_session(store)
        now = clock_of(store).now()
        lease = await store.claim_session("s1", "w1", LEASE)
        assert (lease.session_id, lease.owner, lease.fence, lease.expires_at) == ("s1", "w1", 1, now + LEASE)
        s = await store.get_session("s1")
        assert (s.status, s.lease_owner, s.fence, s.lease_expires_at) == (SessionStatus.RUNNING, "w1", 1, now + LEASE)

    async def test_live_lease_is_not_claimable_and_message_names_owner_and_fence(self, store: Store) -> None:
        await make_session(store)
        await store.claim_session("s1", "worker-a", LEASE)
        clock_of(store).advance(LEASE - 1)
        with pytest.raises(ClaimRejectedError) as info:
            await store.claim_session("s1", "worker-b", LEASE)
        assert "worker-a" in str(info.value) and "fence 1" in str(info.value) and "s1" in str(info.value)
        assert (await store.get_session("s1")).fence == 1

    async def test_expired_lease_is_claimable_and_bumps_fence(self, store: Store) -> None:
        await make_session(store)
        await store.claim_session("s1", "worker-a", LEASE)
        b = await _expire_and_claim(store, "s1", "worker-b")
        assert (b.owner, b.fence) == ("worker-b", 2)
        assert (await store.get_session("s1")).lease_owner == "worker-b"

    async def test_a_takeover_claim_names_the_previous_owner_and_fence(self, store: Store) -> None:
        await make_session(store)
        a = await store.claim_session("s1", "worker-a", LEASE)
        b = await _expire_and_claim(store, "s1", "worker-b")
        assert b.previous == PreviousHolder("worker-a", 1, SessionStatus.RUNNING, a.expires_at)
        assert b.fence == 2

    async def test_a_claim_of_a_pending_session_names_no_previous_owner(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        assert lease.previous == PreviousHolder(None, 0, SessionStatus.PENDING, None)

    async def test_renew_lease_extends_expiry(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        clock_of(store).advance(20)
        renewed, session = await store.renew_lease(lease, LEASE)
        assert renewed.expires_at == clock_of(store).now() + LEASE == session.lease_expires_at
        assert renewed.fence == lease.fence == session.fence
        clock_of(store).advance(LEASE - 1)  # past the first lease, inside the renewed one
        with pytest.raises(ClaimRejectedError):
            await store.claim_session("s1", "w2", LEASE)

    async def test_release_lease_makes_session_claimable_at_once(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.release_lease(lease)
        s = await store.get_session("s1")
        assert (s.status, s.lease_owner) == (SessionStatus.PENDING, None)
        assert (await store.claim_session("s1", "w2", LEASE)).fence == 2
        with pytest.raises(LeaseLostError):
            await store.update_session(lease, progress=Progress(1, 2))

    async def test_session_writes_after_a_newer_claim_raise_lease_lost(self, store: Store) -> None:
        await make_session(store)
        a = await store.claim_session("s1", "worker-a", LEASE)
        await _expire_and_claim(store, "s1", "worker-b")
        before = await store.get_session("s1")
        with pytest.raises(LeaseLostError) as info:
            await store.update_session(a, progress=Progress(1, 2))
        assert info.value.session_id == "s1"
        with pytest.raises(LeaseLostError):
            await store.renew_lease(a, LEASE)
        with pytest.raises(LeaseLostError):
            await store.wait_session(a, None)
        with pytest.raises(LeaseLostError):
            await store.release_lease(a)
        with pytest.raises(LeaseLostError):
            await store.finish_session(a, SessionStatus.FAILED, "stale")
        s = await store.get_session("s1")
        assert (s.status, s.fence, s.lease_owner, s.progress) == (SessionStatus.RUNNING, 2, "worker-b", before.progress)

    async def test_update_session_stores_progress_agents_metadata_and_trace(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.update_session(lease, progress=Progress(5, 29, phase="deploy", step="cdk"),
                                   current_agents=["coder", "tester"], metadata={"pr": 42},
                                   trace_context={"traceparent": "00-1-2-01"})
        s = await store.get_session("s1")
        assert s.progress == Progress(5, 29, phase="deploy", step="cdk") and s.progress.percentage == 17.2
        assert tuple(s.current_agents) == ("coder", "tester")
        assert s.metadata == {"pr": 42} and s.trace_context == {"traceparent": "00-1-2-01"}
        await store.update_session(lease, progress=Progress(6, 29))
        s = await store.get_session("s1")
        assert s.progress == Progress(6, 29) and tuple(s.current_agents) == ("coder", "tester")

    async def test_finish_session_records_outcome_frees_lease_and_sets_expiry(self, store: Store) -> None:
        await make_session(store, ttl_seconds=3600)
        lease = await store.claim_session("s1", "w1", LEASE)
        clock_of(store).advance(5)
        now = clock_of(store).now()
        s = await store.finish_session(lease, SessionStatus.COMPLETED, "all done")
        assert s == await store.get_session("s1")
        assert (s.status, s.completed_at, s.lease_owner) == (SessionStatus.COMPLETED, now, None)
        assert s.expires_at == pytest.approx(now + 3600, abs=1)
        with pytest.raises(ClaimRejectedError):
            await store.claim_session("s1", "w2", LEASE)

    async def test_finish_without_session_ttl_uses_the_store_retention(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        s = await store.finish_session(lease, SessionStatus.CANCELLED, "stop")
        assert s.expires_at is not None and s.expires_at > clock_of(store).now() + 86400
        assert (s.status, s.reason) == (SessionStatus.CANCELLED, "stop")

    # -- redrive of failed sessions ----------------------------------------------------------

    async def _failed(self, store: Store, needs_human: str | None = None, **fields: Any) -> SessionRecord:
        await make_session(store, **fields)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.FAIL, "t1", 1, error=ErrorInfo("E", "boom"))])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.SKIP, "t2", 0, reason="t1 failed")])
        return await store.finish_session(lease, SessionStatus.FAILED, "t1 failed", needs_human_reason=needs_human)

    async def test_failed_session_is_claimable_only_under_a_redrive_policy(self, store: Store) -> None:
        failed = await self._failed(store)
        assert (failed.status, failed.reason) == (SessionStatus.FAILED, "t1 failed")
        with pytest.raises(ClaimRejectedError, match="FAILED"):
            await store.claim_session("s1", "cron", LEASE)
        clock_of(store).advance(100)
        lease = await store.claim_session("s1", "cron", LEASE, ClaimPolicy(redrive_failed=True))
        s = await store.get_session("s1")
        assert (lease.fence, s.status, s.redrive_count) == (2, SessionStatus.RUNNING, 1)

    async def test_redrive_respects_the_updated_before_bound(self, store: Store) -> None:
        failed = await self._failed(store)
        too_early = ClaimPolicy(redrive_failed=True, failed_updated_before=failed.updated_at - 1)
        with pytest.raises(ClaimRejectedError):
            await store.claim_session("s1", "cron", LEASE, too_early)
        ok = ClaimPolicy(redrive_failed=True, failed_updated_before=failed.updated_at)
        assert (await store.claim_session("s1", "cron", LEASE, ok)).fence == 2

    async def test_needs_human_blocks_redrive_until_forced(self, store: Store) -> None:
        await self._failed(store, needs_human="bad credentials")
        s = await store.get_session("s1")
        assert (s.needs_human, s.needs_human_reason) == (True, "bad credentials")
        with pytest.raises(ClaimRejectedError, match="needs-human"):
            await store.claim_session("s1", "cron", LEASE, ClaimPolicy(redrive_failed=True))
        await store.claim_session("s1", "person", LEASE, ClaimPolicy(force=True))
        s = await store.get_session("s1")
        assert (s.needs_human, s.status, s.redrive_count) == (False, SessionStatus.RUNNING, 1)

    async def test_redrive_limit_blocks_until_forced(self, store: Store) -> None:
        await self._failed(store, max_redrives=1)
        lease = await store.claim_session("s1", "cron", LEASE, ClaimPolicy(redrive_failed=True))
        await store.finish_session(lease, SessionStatus.FAILED, "again")
        with pytest.raises(ClaimRejectedError, match="redrive"):
            await store.claim_session("s1", "cron", LEASE, ClaimPolicy(redrive_failed=True))
        forced = await store.claim_session("s1", "person", LEASE, ClaimPolicy(force=True))
        assert (forced.fence, (await store.get_session("s1")).redrive_count) == (3, 2)

    async def test_set_needs_human_flags_and_clears(self, store: Store) -> None:
        await self._failed(store)
        flagged = await store.set_needs_human("s1", "look at the logs")
        assert (flagged.needs_human, flagged.needs_human_reason) == (True, "look at the logs")
        cleared = await store.set_needs_human("s1", None)
        assert (cleared.needs_human, cleared.needs_human_reason) == (False, None)
        assert (await store.get_session("s1")).needs_human is False

    async def test_reset_gives_failed_and_skipped_tasks_fresh_attempts(self, store: Store) -> None:
        await self._failed(store)
        lease = await store.claim_session("s1", "cron", LEASE, ClaimPolicy(redrive_failed=True))
        t1 = await store.get_task("s1", "t1")
        reset = [TaskWrite(TaskWriteKind.RESET, "t1", t1.attempt), TaskWrite(TaskWriteKind.RESET, "t2", 0)]
        assert all(r.ok for r in await store.write_tasks(lease, reset))
        snap = await store.load_session("s1")
        assert [snap.task(t).status for t in ("t1", "t2")] == [TaskStatus.PENDING, TaskStatus.PENDING]
        assert snap.task("t1").attempts_left == snap.task("t1").max_attempts
        assert (await _one(store, lease, start("t1", t1.attempt + 1))).outcome is WriteOutcome.APPLIED

    # -- waits, signals, cancellation -------------------------------------------------------

    async def test_wait_with_a_stale_signal_seq_returns_false_and_changes_nothing(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        assert await store.send_signal("s1", "t1", "approve", {"by": "ann"}) == 1
        assert await store.wait_session(lease, clock_of(store).now() + 600) is False
        s = await store.get_session("s1")
        assert (s.status, s.lease_owner, s.signal_seq) == (SessionStatus.RUNNING, "w1", 1)
        sig = (await store.load_session("s1")).signals[("t1", "approve")]
        assert (sig.payload, sig.seq) == ({"by": "ann"}, 1)

    async def test_wait_frees_the_lease_and_a_signal_makes_the_session_due(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.WAIT, "t1", 1)])
        assert await store.wait_session(lease, None) is True
        s = await store.get_session("s1")
        assert (s.status, s.lease_owner) == (SessionStatus.WAITING, None)
        clock_of(store).advance(365 * 86400)
        with pytest.raises(ClaimRejectedError):
            await store.claim_session("s1", "w2", LEASE)
        assert await store.send_signal("s1", "t1", "approve", True) == 1
        due = await store.list_sessions(SessionStatus.WAITING, updated_before=clock_of(store).now())
        assert [x.session_id for x in due.items] == ["s1"]
        lease2 = await store.claim_session("s1", "w2", LEASE)
        assert (lease2.fence, lease2.signal_seq) == (2, 1)
        assert (await store.load_session("s1")).task("t1").status is TaskStatus.WAITING

    async def test_wake_at_in_the_past_makes_a_waiting_session_claimable(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        wake = clock_of(store).now() + 300
        assert await store.wait_session(lease, wake) is True
        assert (await store.get_session("s1")).wake_at == wake
        not_due = await store.list_sessions(SessionStatus.WAITING, updated_before=clock_of(store).now())
        assert not_due.items == ()
        with pytest.raises(ClaimRejectedError):
            await store.claim_session("s1", "w2", LEASE)
        clock_of(store).advance(301)
        assert (await store.claim_session("s1", "w2", LEASE)).fence == 2

    async def test_signal_to_a_finished_session_is_refused(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.finish_session(lease, SessionStatus.COMPLETED)
        with pytest.raises(SessionStateError):
            await store.send_signal("s1", "t1", "late", 1)
        assert (await store.get_session("s1")).signal_seq == 0

    async def test_cancel_of_an_unowned_session_cancels_it_at_once(self, store: Store) -> None:
        await make_session(store)
        s = await store.request_cancel("s1", "user asked")
        assert (s.status, s.cancel_requested) == (SessionStatus.CANCELLED, True)
        assert s.reason == "user asked" and s.expires_at is not None
        with pytest.raises(ClaimRejectedError):
            await store.claim_session("s1", "w1", LEASE)

    async def test_cancel_of_an_owned_session_is_stored_for_the_owner(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        s = await store.request_cancel("s1", "user asked")
        assert (s.status, s.cancel_requested, s.lease_owner) == (SessionStatus.RUNNING, True, "w1")
        _, seen = await store.renew_lease(lease, LEASE)
        assert seen.cancel_requested is True
        done = await store.finish_session(lease, SessionStatus.CANCELLED, "user asked")
        assert done.status is SessionStatus.CANCELLED

    # -- listing, events -------------------------------------------------------------------

    async def _sessions(self, store: Store, n: int, project: str | None = None, prefix: str = "s") -> list[str]:
        ids = []
        for i in range(n):
            sid = f"{prefix}{i:02d}"
            await make_session(store, sid, tasks=_tasks("t1"), project_id=project)
            ids.append(sid)
            clock_of(store).advance(1)
        return ids

    async def test_list_sessions_pages_oldest_first_across_pages(self, store: Store) -> None:
        ids = await self._sessions(store, 9)
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(20):
            page = await store.list_sessions(SessionStatus.PENDING, limit=2, cursor=cursor)
            assert len(page.items) <= 2
            seen += [s.session_id for s in page.items]
            cursor = page.cursor
            if cursor is None:
                break
        assert seen == ids
        assert (await store.list_sessions(SessionStatus.RUNNING)).items == ()

    async def test_list_sessions_honours_updated_before(self, store: Store) -> None:
        t0 = clock_of(store).now()
        ids = await self._sessions(store, 5)
        page = await store.list_sessions(SessionStatus.PENDING, updated_before=t0 + 2.5)
        assert [s.session_id for s in page.items] == ids[:3]

    async def test_list_project_sessions_pages_newest_first(self, store: Store) -> None:
        ids = await self._sessions(store, 5, project="proj-a")
        await self._sessions(store, 2, project="proj-b", prefix="other")
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(20):
            page = await store.list_project_sessions("proj-a", limit=2, cursor=cursor)
            seen += [s.session_id for s in page.items]
            cursor = page.cursor
            if cursor is None:
                break
        assert seen == ids[::-1]

    async def test_events_read_in_time_order_across_pages_and_appends_are_idempotent(self, store: Store) -> None:
        await make_session(store)
        t0 = clock_of(store).now()
        events = [Event("s1", "log", t0 + i, task_id="t1", message=f"line {i}", data={"i": i}, writer="w1", seq=i)
                  for i in range(7)]
        await store.append_events(events[3:])
        await store.append_events(events[:4])  # event 3 sent twice
        seen: list[Event] = []
        after: str | None = None
        for _ in range(20):
            page = await store.read_events("s1", after=after, limit=3)
            seen += page.items
            after = page.cursor
            if after is None:
                break
        logged = [(e.message, e.data, e.seq) for e in seen if e.writer == "w1"]  # not the store's `created`
        assert logged == [(e.message, e.data, e.seq) for e in events]

    # -- atomic creation, retention ----------------------------------------------------------

    async def test_a_large_session_appears_to_a_reader_all_at_once(self, store: Store) -> None:
        ids = [f"t{i:03d}" for i in range(250)]
        tasks = [NewTask(tid, "agent", depends_on=tuple(ids[j] for j in (i - 1, i - 2) if j >= 0 and
                                                        (j == i - 1 or i <= 152)))
                 for i, tid in enumerate(ids)]
        assert sum(len(t.depends_on) for t in tasks) == 400
        seen = {"missing": 0, "whole": 0}
        done = anyio.Event()

        async def reader() -> None:
            while True:
                finished = done.is_set()
                try:
                    snap = await store.load_session("big")
                except SessionNotFoundError:
                    assert not finished
                    seen["missing"] += 1
                else:
                    assert (len(snap.tasks), len(snap.edges)) == (250, 400)
                    seen["whole"] += 1
                    return
                await anyio.sleep(0)

        async def writer() -> None:
            await make_session(store, "big", tasks=tasks)
            done.set()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                tg.start_soon(writer)
        assert seen["whole"] == 1

