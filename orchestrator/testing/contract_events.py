"""The operator-events part of the Store contract: what the store records of the operations
people make, with the change, and nothing when the operation is refused.

`created` (create_session), `signal` (send_signal), `cancel` (request_cancel) and
`needs_human` (set_needs_human, and a forced claim that clears the flag) are decided by
the rulebook (`rules.history`) and written by the store itself, so every caller gets them. See `orchestrator.testing.contract`.
"""

from __future__ import annotations

import pytest

from orchestrator.errors import SessionStateError, TaskNotFoundError
from orchestrator.store import ClaimPolicy, Event, NewTask, SessionStatus, Store, TaskWrite, TaskWriteKind
from orchestrator.testing.contract_base import LEASE, clock_of, make_session, start

__all__ = ["OperatorEventsContract", "history_of"]


async def history_of(store: Store, session_id: str = "s1") -> list[Event]:
    """Every event of a session, in the order the history reads them."""
    seen: list[Event] = []
    after: str | None = None
    while True:
        page = await store.read_events(session_id, after=after, limit=100)
        seen += page.items
        if page.cursor is None:
            return seen
        after = page.cursor


async def _kinds(store: Store, session_id: str = "s1") -> list[str]:
    return [e.kind for e in await history_of(store, session_id)]


class OperatorEventsContract:
    """Each operation's own event, on every backend; needs a `store` fixture opened with a FakeClock."""

    pytestmark = pytest.mark.anyio

    # -- created -------------------------------------------------------------------------------

    async def test_create_session_records_created_with_pipeline_tasks_project_and_user(self, store: Store) -> None:
        record = await make_session(store, project_id="proj-a", user_id="ann")
        [created] = await history_of(store)
        assert (created.kind, created.at, created.task_id, created.level) == ("created", record.created_at, None,
                                                                              "INFO")
        assert created.data == {"pipeline": "contract", "pipeline_version": "1", "tasks": 2, "project_id": "proj-a",
                                "user_id": "ann", "status": "PENDING", "owner": None}
        assert created.message == "session created: pipeline contract v1, 2 task(s), project proj-a, user ann"

    async def test_a_session_created_held_records_its_owner_and_fence(self, store: Store) -> None:
        await make_session(store, owner="w1", lease_seconds=LEASE)
        [created] = await history_of(store)
        assert (created.data["status"], created.data["owner"]) == ("RUNNING", "w1")
        assert created.message.endswith("held by w1 (fence 1)")

    async def test_a_refused_creation_records_nothing(self, store: Store) -> None:
        await make_session(store)
        with pytest.raises(SessionStateError):
            await make_session(store, tasks=[NewTask("other", "a")])
        assert await _kinds(store) == ["created"]  # the first creation's only

    # -- signal --------------------------------------------------------------------------------

    async def test_send_signal_records_task_name_and_sequence_but_not_the_payload(self, store: Store) -> None:
        await make_session(store)
        clock_of(store).advance(5)
        seq = await store.send_signal("s1", "t1", "approval", {"secret": "s3cr3t", "approved": True})
        [_, signal] = await history_of(store)
        assert (signal.kind, signal.task_id, signal.at) == ("signal", "t1", clock_of(store).now())
        assert signal.data == {"signal": "approval", "signal_seq": seq}
        assert signal.message == f"signal 'approval' sent to task t1 (sequence {seq})"
        assert "s3cr3t" not in signal.message + repr(signal.data)

    async def test_a_signal_to_an_unknown_task_records_nothing(self, store: Store) -> None:
        await make_session(store)
        with pytest.raises(TaskNotFoundError):
            await store.send_signal("s1", "no-such-task", "go", None)
        assert await _kinds(store) == ["created"]

    async def test_a_signal_to_a_finished_session_records_nothing(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.finish_session(lease, SessionStatus.COMPLETED)
        with pytest.raises(SessionStateError):
            await store.send_signal("s1", "t1", "late", None)
        assert await _kinds(store) == ["created"]

    # -- cancel --------------------------------------------------------------------------------

    async def test_cancel_of_a_pending_session_records_that_it_ended_at_once(self, store: Store) -> None:
        await make_session(store)
        await store.request_cancel("s1", "user asked")
        [_, cancel] = await history_of(store)
        assert (cancel.kind, cancel.level) == ("cancel", "WARNING")
        assert cancel.data == {"reason": "user asked", "was": "PENDING", "ended": True, "owner": None}
        assert cancel.message == "cancelled at once (it was PENDING, nobody held it): user asked"

    async def test_cancel_of_a_running_session_records_the_request_and_its_owner(self, store: Store) -> None:
        await make_session(store)
        await store.claim_session("s1", "w1", LEASE)
        await store.request_cancel("s1", "user asked")
        [_, cancel] = await history_of(store)
        assert cancel.data == {"reason": "user asked", "was": "RUNNING", "ended": False, "owner": "w1"}
        assert cancel.message.startswith("cancel requested (it was RUNNING, held by w1 at fence 1)")

    async def test_cancel_of_a_waiting_session_says_it_was_waiting(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.WAIT, "t1", 1)])
        assert await store.wait_session(lease, None)
        await store.request_cancel("s1", "no longer needed")
        cancel = (await history_of(store))[-1]
        assert (cancel.kind, cancel.data["was"], cancel.data["ended"]) == ("cancel", "WAITING", True)

    async def test_a_refused_cancel_records_nothing(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.finish_session(lease, SessionStatus.COMPLETED)
        with pytest.raises(SessionStateError):
            await store.request_cancel("s1", "too late")
        assert await _kinds(store) == ["created"]

    # -- needs-human ---------------------------------------------------------------------------

    async def test_setting_and_clearing_needs_human_each_record_an_event(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.finish_session(lease, SessionStatus.FAILED, "boom")
        await store.set_needs_human("s1", "look at the logs")
        await store.set_needs_human("s1", None)
        [_, flagged, cleared] = await history_of(store)
        assert (flagged.kind, flagged.level, flagged.data) == (
            "needs_human", "WARNING", {"needs_human": True, "reason": "look at the logs"})
        assert flagged.message == "flagged needs-human: look at the logs"
        assert (cleared.kind, cleared.data) == ("needs_human", {"needs_human": False, "reason": None,
                                                                "claimed_by": None})

    async def test_a_forced_claim_that_clears_needs_human_records_it(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.finish_session(lease, SessionStatus.FAILED, "boom")
        await store.set_needs_human("s1", "look")
        await store.claim_session("s1", "person", LEASE, ClaimPolicy(redrive_failed=True, force=True))
        cleared = (await history_of(store))[-1]
        assert (cleared.kind, cleared.data) == ("needs_human", {"needs_human": False, "reason": None,
                                                                "claimed_by": "person"})
        assert cleared.message == "needs-human cleared by the forced claim of person: crons may redrive it again"

    async def test_a_claim_records_nothing_itself(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.finish_session(lease, SessionStatus.FAILED, "boom")
        await store.claim_session("s1", "cron", LEASE, ClaimPolicy(redrive_failed=True))  # the runner records it
        assert await _kinds(store) == ["created"]

    async def test_a_refused_needs_human_flag_records_nothing(self, store: Store) -> None:
        await make_session(store)
        with pytest.raises(SessionStateError):
            await store.set_needs_human("s1", "not failed")
        assert await _kinds(store) == ["created"]

    # -- keys and order ------------------------------------------------------------------------

    async def test_operation_events_read_in_the_order_they_happened(self, store: Store) -> None:
        await make_session(store)
        for _ in range(3):
            await store.send_signal("s1", "t1", "ping", None)  # same time: the sequence orders them
        clock_of(store).advance(1)
        await store.request_cancel("s1", "done")
        events = await history_of(store)
        assert [e.kind for e in events] == ["created", "signal", "signal", "signal", "cancel"]
        assert [e.data["signal_seq"] for e in events[1:4]] == [1, 2, 3]
        assert len({e.cursor for e in events}) == 5
