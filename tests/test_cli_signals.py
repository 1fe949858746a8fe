"""`orchestrator signal/approve/reject` say truthfully what a signal will do, and refuse one
nothing could ever read (as Temporal refuses a signal to a closed workflow).

The store's semantics are unchanged (the contract suite pins them on every backend): a
stored signal bumps the session's signal sequence. These tests check what the command
line reports, and that a refused signal writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from cli_helpers import cli

from orchestrator.store import NewSession, NewTask, SessionSnapshot, TaskWrite, TaskWriteKind, open_store

EXIT_CONFLICT = 4


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A store holding session "ap": draft COMPLETED, review WAITING for 'approval', publish PENDING."""
    store = f"sqlite://{tmp_path / 'cli.db'}"
    ran = cli("run", "demo_app:approval", "--session-id", "ap", "--json", store=store, tmp=tmp_path)
    assert ran.code == 6 and ran.json()["status"] == "WAITING", ran.err
    return store


def load(url: str) -> SessionSnapshot:
    async def go() -> SessionSnapshot:
        async with open_store(url) as store:
            return await store.load_session("ap")

    result: SessionSnapshot = anyio.run(go)
    return result


def test_a_signal_to_a_completed_task_is_refused_and_nothing_is_stored(url: str, tmp_path: Path) -> None:
    before = load(url).session.signal_seq
    result = cli("signal", "ap", "draft", "approval", store=url, tmp=tmp_path)
    assert result.code == EXIT_CONFLICT
    assert "task draft of session ap is COMPLETED: nothing will ever read a signal" in result.err
    after = load(url)
    assert after.session.signal_seq == before and ("draft", "approval") not in after.signals


def test_a_signal_to_a_cancelled_session_is_refused(url: str, tmp_path: Path) -> None:
    assert cli("cancel", "ap", store=url, tmp=tmp_path).code == 0
    result = cli("approve", "ap", "review", store=url, tmp=tmp_path)
    assert result.code == EXIT_CONFLICT
    assert "session ap is CANCELLED: nothing will ever read a signal sent to task review" in result.err


def test_approving_the_waiting_task_says_it_was_delivered(url: str, tmp_path: Path) -> None:
    result = cli("approve", "ap", "review", "--json", store=url, tmp=tmp_path)
    assert result.code == 0, result.err
    assert result.json() | {"signal_seq": 0} == {
        "session_id": "ap", "task_id": "review", "name": "approval", "signal_seq": 0, "task_status": "WAITING",
        "waiting_for": "approval", "awaited": True,
    }
    text = cli("approve", "ap", "review", store=url, tmp=tmp_path)
    assert "signal 'approval' delivered to waiting task review of session ap" in text.out


def test_a_signal_under_a_name_the_task_does_not_wait_for_says_so(url: str, tmp_path: Path) -> None:
    result = cli("signal", "ap", "review", "go", store=url, tmp=tmp_path)
    assert result.code == 0, result.err
    assert "stored for task review of session ap" in result.out
    assert "the task waits for 'approval', not 'go'" in result.out
    assert "delivered" not in result.out
    shown = cli("signal", "ap", "review", "go", "--json", store=url, tmp=tmp_path).json()
    assert (shown["awaited"], shown["waiting_for"]) == (False, "approval")


def test_a_signal_to_a_task_not_waiting_yet_is_stored_for_when_it_waits(url: str, tmp_path: Path) -> None:
    result = cli("signal", "ap", "publish", "approval", store=url, tmp=tmp_path)
    assert result.code == 0, result.err
    assert "the task is PENDING, not waiting: it gets the signal when it waits for 'approval'" in result.out
    assert ("publish", "approval") in load(url).signals


def _waiting_for_an_unnamed_signal(url: str) -> None:
    """Session "old": task t1 WAITING, its record naming no signal (a task written before the name was stored)."""
    async def go() -> None:
        async with open_store(url) as store:
            await store.create_session(NewSession("old", "p"), [NewTask("t1", "agent")])
            lease = await store.claim_session("old", "seeder", 600)
            await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t1", 1)])
            await store.write_tasks(lease, [TaskWrite(TaskWriteKind.WAIT, "t1", 1)])
            assert await store.wait_session(lease, None)

    anyio.run(go)


def test_status_of_a_task_whose_signal_is_not_recorded_says_so(url: str, tmp_path: Path) -> None:
    _waiting_for_an_unnamed_signal(url)
    result = cli("status", "old", store=url, tmp=tmp_path)
    assert result.code == 0, result.err
    assert "task t1 waits for a signal (its name is not recorded) with no deadline" in " ".join(result.out.split())


def test_a_signal_to_a_task_whose_signal_is_not_recorded_says_it_may_wake_it(url: str, tmp_path: Path) -> None:
    _waiting_for_an_unnamed_signal(url)
    result = cli("signal", "old", "t1", "go", store=url, tmp=tmp_path)
    assert result.code == 0, result.err
    assert "the task is WAITING (for which signal is not recorded): if it waits for 'go'" in result.out
    assert cli("signal", "old", "t1", "go", "--json", store=url, tmp=tmp_path).json()["awaited"] is None
