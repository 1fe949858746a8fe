"""Reading a SQLite store never writes: not when it opens, not in a read, not to purge.

Retention runs in writers (a bounded pass after a store's first write, then at most
once an hour) and in `purge`; readers open the file `mode=ro`, so they need no write
access and never wait for another process's write lock. Real files, real processes.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_helpers import cli
from sqlite_helpers import lock_held_by_another_process, made_read_only, without_write_access

from orchestrator.codec import default_codec
from orchestrator.errors import SessionNotFoundError, StoreError, StoreUnavailableError
from orchestrator.store import Event, NewSession, NewTask, SessionStatus, SQLiteConfig, open_store
from orchestrator.store.sqlite import SQLiteStore
from orchestrator.store.sqlite.connection import SQLiteDatabase
from orchestrator.store.sqlite.retention import PASS_BATCH, PASS_INTERVAL_S, RetentionPasses
from orchestrator.testing import FakeClock


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "orchestrator.db"


def make_store(path: Path, clock: FakeClock, **config: Any) -> SQLiteStore:
    return SQLiteStore(SQLiteConfig(path=path, **config), clock=clock, codec=default_codec)


def count(path: Path, table: str, session_id: str | None = None) -> int:
    """Rows as they are on disk (expired ones included), read by a plain read-only connection."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        if session_id is None:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        return int(conn.execute(f"SELECT count(*) FROM {table} WHERE session_id = ?", (session_id,)).fetchone()[0])
    finally:
        conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def ended(store: SQLiteStore, sid: str, *, ttl_seconds: float = 60) -> None:
    """A COMPLETED session with one event, expiring `ttl_seconds` after it ended."""
    await store.create_session(NewSession(sid, "p", ttl_seconds=ttl_seconds), [NewTask("t", "a")])
    lease = await store.claim_session(sid, "w1", 30)
    await store.append_events([Event(sid, "log", store.clock.now(), message="hi", writer="w1", seq=1)])
    await store.finish_session(lease, SessionStatus.COMPLETED)


# -- retention runs in writers ---------------------------------------------------------------


@pytest.mark.anyio
async def test_opening_and_reading_leave_expired_rows_in_place(db_path: Path) -> None:
    clock = FakeClock()
    async with make_store(db_path, clock) as writer:
        await ended(writer, "short")
    clock.advance(61)
    for config in ({}, {"read_only": True}):
        async with make_store(db_path, clock, **config) as reader:
            with pytest.raises(SessionNotFoundError):
                await reader.get_session("short")
            assert (await reader.list_sessions(SessionStatus.COMPLETED)).items == ()
    assert count(db_path, "sessions", "short") == 1
    assert count(db_path, "events", "short") == 2  # the store's `created` and the log line


@pytest.mark.anyio
async def test_the_first_write_of_a_store_purges_what_expired(db_path: Path) -> None:
    clock = FakeClock()
    async with make_store(db_path, clock) as first:
        await ended(first, "short")
    clock.advance(61)
    async with make_store(db_path, clock) as writer:
        await writer.create_session(NewSession("new", "p"), [NewTask("t", "a")])
    assert count(db_path, "sessions", "short") == 0
    assert count(db_path, "events", "short") == 0
    assert count(db_path, "tasks", "short") == 0
    assert count(db_path, "sessions", "new") == 1


@pytest.mark.anyio
async def test_retention_passes_of_a_writer_are_an_interval_apart(db_path: Path) -> None:
    clock = FakeClock()
    async with make_store(db_path, clock) as writer:
        await ended(writer, "short")  # its first write ran the first pass
        clock.advance(61)
        await writer.create_session(NewSession("s2", "p"), [NewTask("t", "a")])
        assert count(db_path, "sessions", "short") == 1  # expired, hidden, not yet due for deletion
        clock.advance(PASS_INTERVAL_S)
        await writer.create_session(NewSession("s3", "p"), [NewTask("t", "a")])
        assert count(db_path, "sessions", "short") == 0


@pytest.mark.anyio
async def test_a_backlog_is_purged_in_bounded_passes_one_per_write(db_path: Path) -> None:
    clock = FakeClock()
    async with make_store(db_path, clock) as writer:
        for i in range(PASS_BATCH + 10):
            await ended(writer, f"s{i:03d}")
        clock.advance(PASS_INTERVAL_S + 61)
        await writer.create_session(NewSession("a", "p"), [NewTask("t", "a")])
        assert count(db_path, "sessions") == 10 + 1
        await writer.create_session(NewSession("b", "p"), [NewTask("t", "a")])
        assert count(db_path, "sessions") == 2


@pytest.mark.anyio
async def test_a_retention_pass_skips_a_locked_file_without_waiting(db_path: Path) -> None:
    clock = FakeClock()
    async with make_store(db_path, clock) as first:
        await ended(first, "short")
    clock.advance(61)
    db = SQLiteDatabase(SQLiteConfig(path=db_path), clock, str(db_path))
    await db.open()
    passes = RetentionPasses(db, retention_days=90)
    try:
        with lock_held_by_another_process(db_path):
            started = time.monotonic()
            passes.after_write()
            assert time.monotonic() - started < 0.5
        assert (passes.passes, db.busy_retries) == (0, 0)
        passes.after_write()  # the lock is free now, but the retry is not due yet
        assert passes.passes == 0
        clock.advance(60)
        passes.after_write()
        assert passes.passes == 1
        assert count(db_path, "sessions", "short") == 0
    finally:
        db.close()


# -- readers never wait and never write --------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
async def test_reads_do_not_wait_for_another_process_holding_the_write_lock(db_path: Path, read_only: bool) -> None:
    clock = FakeClock()
    async with make_store(db_path, clock) as writer:
        await ended(writer, "s1")
    with lock_held_by_another_process(db_path):
        with anyio.fail_after(2):
            async with make_store(db_path, clock, read_only=read_only) as reader:
                assert (await reader.get_session("s1")).status is SessionStatus.COMPLETED
                assert set((await reader.load_session("s1")).tasks) == {"t"}
                assert len((await reader.list_sessions(SessionStatus.COMPLETED)).items) == 1
                assert len((await reader.read_events("s1")).items) == 2  # `created` and the log line
                assert reader.busy_retries == 0


@pytest.mark.anyio
async def test_a_paused_process_holding_the_lock_delays_writers_up_to_busy_timeout_and_readers_not_at_all(
    db_path: Path,
) -> None:
    clock = FakeClock()
    async with make_store(db_path, clock) as first:
        await ended(first, "s1")
    async with make_store(db_path, clock, busy_timeout_s=0.5) as writer:
        await writer.get_session("s1")
        with lock_held_by_another_process(db_path, paused=True) as release:
            with anyio.fail_after(1):
                assert (await writer.get_session("s1")).status is SessionStatus.COMPLETED
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match="busy_timeout") as err:
                await writer.create_session(NewSession("s2", "p"), [NewTask("t", "a")])
            assert 0.5 <= time.monotonic() - started < 5
            assert str(db_path) in str(err.value)
            release()
        await writer.create_session(NewSession("s2", "p"), [NewTask("t", "a")])


@pytest.mark.anyio
async def test_a_read_only_url_refuses_every_write_naming_the_store(db_path: Path) -> None:
    clock = FakeClock()
    async with make_store(db_path, clock) as writer:
        await ended(writer, "s1")
    before = digest(db_path)
    async with open_store(f"sqlite://{db_path}?mode=ro", clock=clock) as reader:
        assert (await reader.get_session("s1")).status is SessionStatus.COMPLETED
        with pytest.raises(StoreError, match="read-only") as err:
            await reader.request_cancel("s1", "no")
        assert str(db_path) in str(err.value) and "request_cancel" in str(err.value)
    assert digest(db_path) == before


@pytest.mark.anyio
async def test_a_read_only_store_never_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "state.db"
    with pytest.raises(StoreUnavailableError, match="does not exist") as err:
        async with make_store(path, FakeClock(), read_only=True):
            pass
    assert "orchestrator init" in str(err.value)
    assert not path.parent.exists()


# -- the command line -----------------------------------------------------------------------


def test_reading_commands_work_on_a_store_the_user_cannot_write(tmp_path: Path) -> None:
    db = tmp_path / "store" / "cli.db"
    url = f"sqlite://{db}"
    assert cli("run", "demo_app:small", "--session-id", "s1", "--json", store=url, tmp=tmp_path).code == 0
    files = sorted(p.name for p in db.parent.iterdir())
    before = digest(db)
    reader = without_write_access()
    with made_read_only(db):
        listed = cli("list", "--json", store=url, tmp=tmp_path, wrapper=reader)
        assert listed.code == 0, listed.err
        assert [s["session_id"] for s in listed.json()["sessions"]] == ["s1"]
        status = cli("status", "s1", "--json", store=url, tmp=tmp_path, wrapper=reader)
        assert status.code == 0, status.err
        assert status.json()["session"]["status"] == "COMPLETED"
        for args in (("events", "s1", "--json"), ("graph", "s1"), ("metrics", "--json")):
            shown = cli(*args, store=url, tmp=tmp_path, wrapper=reader)
            assert shown.code == 0, (args, shown.err)
    assert sorted(p.name for p in db.parent.iterdir()) == files
    assert digest(db) == before


def test_reading_commands_do_not_wait_for_a_held_write_lock(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    url = f"sqlite://{db}?busy_timeout=30"
    assert cli("run", "demo_app:small", "--session-id", "s1", store=url, tmp=tmp_path).code == 0
    with lock_held_by_another_process(db):
        for args in (("status", "s1", "--json"), ("list", "--json")):
            started = time.monotonic()
            result = cli(*args, store=url, tmp=tmp_path)
            elapsed = time.monotonic() - started
            assert result.code == 0, result.err
            assert elapsed < 10, f"{args[0]} took {elapsed:.1f}s behind the lock"
