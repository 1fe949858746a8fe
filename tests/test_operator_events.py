"""The events operations record (rules.history): their keys, their wording, and the fork's.

What each store operation records on every backend is pinned by the contract suite
(orchestrator/testing/contract_events.py); these tests pin the pure rules and the
fork, which records through the public Store protocol.
"""

from __future__ import annotations

import re

import pytest

from orchestrator.fork import fork_session
from orchestrator.store import Event, NewSession, NewTask, SessionRecord, SessionStatus, TaskWrite, TaskWriteKind
from orchestrator.store import rules
from orchestrator.testing import FakeClock, temporary_store

EPOCH = re.compile(r"\b1\d{9}(\.\d+)?\b")
NOW = 1_750_000_000.25


def record(**fields: object) -> SessionRecord:
    base: dict[str, object] = {"session_id": "s1", "pipeline": "build", "pipeline_version": "2",
                               "status": SessionStatus.RUNNING, "created_at": NOW, "lease_owner": "w-1",
                               "lease_expires_at": NOW + 30, "fence": 3, "wake_at": NOW + 60}
    base.update(fields)
    return SessionRecord(**base)  # type: ignore[arg-type]


def test_two_stores_never_share_the_writer_of_their_events() -> None:
    first, second = rules.StoreEventKeys(), rules.StoreEventKeys()
    assert first.writer != second.writer
    assert re.fullmatch(r"store-[0-9a-f]{16}", first.writer)


def test_one_store_numbers_its_events_so_two_at_the_same_time_keep_distinct_keys() -> None:
    keys = rules.StoreEventKeys()
    a = keys.stamp(Event("s1", "signal", NOW))
    b = keys.stamp(Event("s1", "signal", NOW))
    assert (a.writer, a.seq, b.seq) == (keys.writer, 1, 2)
    assert a.cursor != b.cursor


def test_operation_events_carry_their_time_in_at_never_as_an_epoch_in_the_message() -> None:
    held = record()
    events = [
        rules.created_event(held, 4),
        rules.signal_event("s1", "t1", "approval", 7, NOW),
        rules.cancel_event(held, False, "stop", NOW),
        rules.cancel_event(record(status=SessionStatus.WAITING, lease_owner=None), True, "stop", NOW),
        rules.needs_human_event("s1", "look", NOW),
        rules.needs_human_event("s1", None, NOW),
        rules.forked_event("s2", "s1", "code", 2, 5, NOW),
    ]
    assert all(e.at == NOW for e in events)
    for e in events:
        assert not EPOCH.search(e.message), e.message


def test_a_cancel_reason_is_cut_as_every_stored_reason_is() -> None:
    event = rules.cancel_event(record(), False, "x" * 10_000, NOW)
    assert len(event.data["reason"]) == 4000 and event.data["reason"].endswith("...")


@pytest.mark.anyio
async def test_a_fork_records_on_the_new_session_the_session_and_task_it_came_from() -> None:
    clock = FakeClock()
    async with temporary_store(clock=clock) as store:
        tasks = [NewTask("plan", "a"), NewTask("code", "a", depends_on=("plan",)),
                 NewTask("test", "a", depends_on=("code",))]
        await store.create_session(NewSession("orig", "build"), tasks)
        lease = await store.claim_session("orig", "w1", 30)
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "plan", 1)])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.COMPLETE, "plan", 1, output="p")])
        await store.finish_session(lease, SessionStatus.FAILED, "code broke")
        clock.advance(10)
        await fork_session(store, "orig", "code", new_session_id="copy")
        created, fork = (await store.read_events("copy")).items
        assert (created.kind, fork.kind, fork.task_id) == ("created", "fork", "code")
        assert fork.data == {"source_session": "orig", "from_task": "code", "kept": 1, "tasks": 3}
        assert fork.message == "forked from session orig at task code: kept 1 completed task(s) of 3, the rest " \
                               "runs again"
        assert [e.kind for e in (await store.read_events("orig")).items] == ["created"]
