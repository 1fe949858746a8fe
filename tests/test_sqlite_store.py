"""What only the SQLite backend does: its file, its locking, its retention, its seams.

The protocol semantics shared with DynamoDB are proven by the contract suite
(`tests/test_contract_*.py`); these tests use real files in `tmp_path` and, for locking,
real second processes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlite_helpers import lock_held_by_another_process

from orchestrator.codec import default_codec
from orchestrator.errors import (
    ClaimRejectedError,
    SchemaError,
    SessionNotFoundError,
    StoreError,
    StoreUnavailableError,
)
from orchestrator.store import (
    Event,
    NewSession,
    NewTask,
    SQLiteConfig,
    SessionStatus,
    Store,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    UserProjectRecord,
    open_store,
)
from orchestrator.store.sqlite import SQLiteStore
from orchestrator.testing import FakeClock

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "orchestrator.db"


def make_store(path: Path, clock: FakeClock | None = None, **config: Any) -> SQLiteStore:
    return SQLiteStore(SQLiteConfig(path=path, **config), clock=clock or FakeClock(), codec=default_codec)


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    async with make_store(db_path, clock) as s:
        yield s


def chain(n: int) -> list[NewTask]:
    return [NewTask(f"t{i}", "agent", depends_on=(f"t{i - 1}",) if i else ()) for i in range(n)]


def raw_sql(path: Path, sql: str) -> Any:
    """Run one statement on the file behind the store's back; the first column of its first row."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(sql).fetchone()
        conn.commit()
    finally:
        conn.close()
    return None if row is None else row[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the file ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_store_satisfies_the_protocol(store: SQLiteStore) -> None:
    typed: Store = store
    assert isinstance(typed, Store)
    assert store.describe().backend == "sqlite"
    assert store.describe().location == str(store.path)


@pytest.mark.anyio
async def test_open_store_url_gives_a_sqlite_store(db_path: Path) -> None:
    s = open_store(f"sqlite://{db_path}")
    assert isinstance(s, SQLiteStore)
    await s.aclose()


@pytest.mark.anyio
async def test_file_directory_and_wal_files_are_private(store: SQLiteStore, db_path: Path) -> None:
    await store.create_session(NewSession("s1", "p"), chain(2))
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    for suffix in ("-wal", "-shm"):
        side = db_path.with_name(db_path.name + suffix)
        assert side.exists()
        assert stat.S_IMODE(side.stat().st_mode) == 0o600


@pytest.mark.anyio
async def test_wal_mode_and_normal_synchronous_by_default(store: SQLiteStore, db_path: Path) -> None:
    settings = await store.settings()
    assert settings["journal_mode"] == "WAL"
    assert settings["synchronous"] == "NORMAL"
    assert raw_sql(db_path, "PRAGMA journal_mode") == "wal"


@pytest.mark.anyio
async def test_synchronous_full_is_honoured(db_path: Path) -> None:
    async with make_store(db_path, synchronous="FULL") as s:
        assert (await s.settings())["synchronous"] == "FULL"


@pytest.mark.anyio
async def test_check_is_empty_for_a_healthy_store(store: SQLiteStore) -> None:
    assert await store.check() == []


@pytest.mark.anyio
async def test_check_reports_a_missing_file_without_creating_it(db_path: Path) -> None:
    s = make_store(db_path)
    problems = await s.check()
    assert len(problems) == 1 and "does not exist" in problems[0]
    assert not db_path.exists()


@pytest.mark.anyio
async def test_check_reports_a_world_readable_file(store: SQLiteStore, db_path: Path) -> None:
    db_path.chmod(0o644)
    problems = await store.check()
    assert any("chmod 600" in p for p in problems)


@pytest.mark.anyio
async def test_a_file_that_is_not_sqlite_is_refused_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"just some notes, not a database\n" * 10)
    before = digest(db_path)
    s = make_store(db_path)
    with pytest.raises(SchemaError) as err:
        await s.initialize()
    assert str(db_path) in str(err.value) and "not a SQLite database" in str(err.value)
    assert digest(db_path) == before
    assert sorted(p.name for p in db_path.parent.iterdir()) == [db_path.name]
    assert any("not a SQLite database" in p for p in await s.check())


@pytest.mark.anyio
async def test_a_foreign_sqlite_database_is_refused_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    raw_sql(db_path, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    before = digest(db_path)
    with pytest.raises(SchemaError) as err:
        await make_store(db_path).initialize()
    assert "users" in str(err.value) and "not written by this SDK" in str(err.value)
    assert digest(db_path) == before
    assert raw_sql(db_path, "PRAGMA journal_mode") == "delete"


@pytest.mark.anyio
async def test_a_store_of_a_newer_schema_is_refused_untouched(db_path: Path) -> None:
    async with make_store(db_path) as s:
        await s.create_session(NewSession("s1", "p"), chain(1))
    raw_sql(db_path, "UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    before = digest(db_path)
    with pytest.raises(SchemaError) as err:
        await make_store(db_path).initialize()
    assert "newer" in str(err.value) and str(db_path) in str(err.value)
    assert digest(db_path) == before


@pytest.mark.anyio
async def test_a_row_of_a_newer_version_is_refused(store: SQLiteStore, db_path: Path) -> None:
    await store.create_session(NewSession("s1", "p"), chain(2))
    raw_sql(db_path, "UPDATE tasks SET v = 2 WHERE task_id = 't1'")
    with pytest.raises(SchemaError) as err:
        await store.get_task("s1", "t1")
    assert err.value.session_id == "s1" and err.value.task_id == "t1"
    with pytest.raises(SchemaError):
        await store.load_session("s1")
    assert (await store.get_task("s1", "t0")).status is TaskStatus.PENDING


@pytest.mark.anyio
async def test_a_row_that_does_not_decode_names_session_and_task(store: SQLiteStore, db_path: Path) -> None:
    await store.create_session(NewSession("s1", "p"), chain(1))
    raw_sql(db_path, "UPDATE tasks SET status = 'EXPLODED' WHERE task_id = 't0'")
    with pytest.raises(SchemaError) as err:
        await store.get_task("s1", "t0")
    assert "task t0 of session s1" in str(err.value)


@pytest.mark.anyio
async def test_unknown_session_error_names_the_store(store: SQLiteStore, db_path: Path) -> None:
    with pytest.raises(SessionNotFoundError) as err:
        await store.get_session("nope")
    assert str(db_path) in str(err.value) and "orchestrator list" in str(err.value)


# -- batches -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_staged_rows_are_removed_once_adopted(store: SQLiteStore, db_path: Path) -> None:
    await store.create_session(NewSession("s1", "p"), chain(1))
    lease = await store.claim_session("s1", "w1", 30)
    await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t0", 1)])
    await store.add_tasks(lease, "t0", 1, [NewTask("sub", "agent", depends_on=("t0",))])
    await store.write_tasks(lease, [TaskWrite(TaskWriteKind.COMPLETE, "t0", 1)])
    assert (await store.get_task("s1", "sub")).added_by == "t0"
    assert raw_sql(db_path, "SELECT count(*) FROM staged_tasks") == 0


# -- retention -----------------------------------------------------------------------------


async def finished_session(s: SQLiteStore, sid: str, *, ttl_seconds: float | None = None) -> None:
    await s.create_session(NewSession(sid, "p", project_id="proj", ttl_seconds=ttl_seconds), chain(2))
    lease = await s.claim_session(sid, "w1", 30)
    await s.append_events([Event(sid, "log", s.clock.now(), message="hello", writer="w1", seq=1)])
    await s.finish_session(lease, SessionStatus.COMPLETED)


@pytest.mark.anyio
async def test_purge_deletes_ended_sessions_with_all_their_rows(store: SQLiteStore, clock: FakeClock) -> None:
    await finished_session(store, "old")
    await store.create_session(NewSession("running", "p"), chain(1))
    clock.advance(10)
    report = await store.purge(ended_before=clock.now())
    # session + 2 tasks + 1 edge + 2 events (the store's `created` and a log line)
    assert (report.sessions, report.items) == (1, 6)
    with pytest.raises(SessionNotFoundError):
        await store.get_session("old")
    assert (await store.get_session("running")).status is SessionStatus.PENDING
    assert await store.purge(ended_before=clock.now()) == type(report)(sessions=0, items=0)


@pytest.mark.anyio
async def test_purge_keeps_sessions_that_ended_after_the_bound(store: SQLiteStore, clock: FakeClock) -> None:
    bound = clock.now()
    clock.advance(1)
    await finished_session(store, "recent")
    assert (await store.purge(ended_before=bound)).sessions == 0
    assert (await store.get_session("recent")).status is SessionStatus.COMPLETED


@pytest.mark.anyio
async def test_expired_sessions_are_not_listed(store: SQLiteStore, clock: FakeClock) -> None:
    await finished_session(store, "short", ttl_seconds=60)
    listed = await store.list_sessions(SessionStatus.COMPLETED)
    assert [s.session_id for s in listed.items] == ["short"]
    clock.advance(61)
    assert (await store.list_sessions(SessionStatus.COMPLETED)).items == ()
    assert (await store.list_project_sessions("proj")).items == ()


@pytest.mark.anyio
async def test_expired_events_are_not_read(db_path: Path, clock: FakeClock) -> None:
    async with make_store(db_path, clock, retention_days=1) as s:
        await s.create_session(NewSession("s1", "p"), chain(1))
        await s.append_events([Event("s1", "log", clock.now(), writer="w", seq=1)])
        assert [e.kind for e in (await s.read_events("s1")).items] == ["created", "log"]
        clock.advance(86401)
        assert (await s.read_events("s1")).items == ()


# -- locking between processes ---------------------------------------------------------------

@pytest.mark.anyio
async def test_a_write_waits_for_another_process_to_release_its_lock(store: SQLiteStore, db_path: Path) -> None:
    created: list[str] = []

    async def create() -> None:
        created.append((await store.create_session(NewSession("s1", "p"), chain(1))).session_id)

    with lock_held_by_another_process(db_path) as release:
        async with anyio.create_task_group() as tg:
            tg.start_soon(create)
            with anyio.fail_after(10):
                while store.busy_retries == 0:
                    await anyio.sleep(0.001)
            assert created == []
            release()
    assert created == ["s1"]
    assert (await store.get_session("s1")).status is SessionStatus.PENDING


@pytest.mark.anyio
async def test_waiting_for_a_lock_is_bounded_and_writes_nothing(db_path: Path) -> None:
    async with make_store(db_path, busy_timeout_s=0.2) as s:
        with lock_held_by_another_process(db_path):
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError) as err:
                await s.create_session(NewSession("s1", "p"), chain(1))
            elapsed = time.monotonic() - started
        assert 0.2 <= elapsed < 5
        assert str(db_path) in str(err.value) and "busy_timeout" in str(err.value)
        with pytest.raises(SessionNotFoundError):
            await s.get_session("s1")


_CLAIMER = """
import json, sys
import anyio
from orchestrator.clock import SystemClock
from orchestrator.codec import default_codec
from orchestrator.errors import ClaimRejectedError
from orchestrator.store import SQLiteConfig
from orchestrator.store.sqlite import SQLiteStore

async def main(path, worker, ids):
    async with SQLiteStore(SQLiteConfig(path=path), clock=SystemClock(), codec=default_codec) as s:
        print("ready", flush=True)
        sys.stdin.readline()
        won = []
        for sid in ids:
            try:
                await s.claim_session(sid, worker, 60)
                won.append(sid)
            except ClaimRejectedError:
                pass
        print(json.dumps(won), flush=True)

anyio.run(main, sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
"""


def _race_claimers(db_path: Path, ids: list[str], count: int = 4) -> list[list[str]]:
    """Start `count` claimer processes, release them together; the ids each one won."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, str(db_path), f"w{n}", json.dumps(ids)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        for n in range(count)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        won = [json.loads(p.stdout.readline()) for p in procs if p.stdout is not None]
    finally:
        for p in procs:
            assert p.stdin is not None and p.stdout is not None
            p.stdin.close()
            p.wait(timeout=30)
            p.stdout.close()
    return won


@pytest.mark.slow
@pytest.mark.anyio
async def test_processes_racing_for_sessions_claim_each_exactly_once(store: SQLiteStore, db_path: Path) -> None:
    ids = [f"s{i}" for i in range(30)]
    for sid in ids:
        await store.create_session(NewSession(sid, "p"), chain(1))
    won = await anyio.to_thread.run_sync(_race_claimers, db_path, ids)  # blocking pipe reads off the event loop
    claimed = [sid for w in won for sid in w]
    assert sorted(claimed) == sorted(ids)
    for sid in ids:
        assert (await store.get_session(sid)).fence == 1


# -- the negative-control seam ---------------------------------------------------------------


class ReadThenWriteStore(SQLiteStore):
    """The unsafe claim: decide in one transaction, write in another."""

    _cas_claims = False


async def race_claims(db_path: Path, clock: FakeClock, cls: type[SQLiteStore]) -> list[int]:
    fences: list[int] = []
    async with cls(SQLiteConfig(path=db_path), clock=clock, codec=default_codec) as a, \
            cls(SQLiteConfig(path=db_path), clock=clock, codec=default_codec) as b:
        await a.create_session(NewSession("s1", "p"), chain(1))

        async def claim(s: SQLiteStore, owner: str) -> None:
            try:
                fences.append((await s.claim_session("s1", owner, 30)).fence)
            except ClaimRejectedError:
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(claim, a, "w1")
            tg.start_soon(claim, b, "w2")
    return fences


@pytest.mark.anyio
async def test_claims_without_the_condition_both_win(tmp_path: Path, clock: FakeClock) -> None:
    assert SQLiteStore._cas_claims is True
    assert await race_claims(tmp_path / "unsafe.db", clock, ReadThenWriteStore) == [1, 1]


@pytest.mark.anyio
async def test_claims_with_the_condition_have_one_winner(tmp_path: Path, clock: FakeClock) -> None:
    assert await race_claims(tmp_path / "safe.db", clock, SQLiteStore) == [1]


@pytest.mark.anyio
async def test_a_store_opens_itself_on_first_use_and_refuses_use_after_close(db_path: Path) -> None:
    s = make_store(db_path)
    await s.create_session(NewSession("s1", "p"), chain(1))
    await s.aclose()
    with pytest.raises(StoreError) as err:
        await s.get_session("s1")
    assert "closed" in str(err.value)


@pytest.mark.anyio
async def test_a_file_without_the_user_projects_table_gains_it_on_open(db_path: Path) -> None:
    async with make_store(db_path) as first:
        await first.create_session(NewSession("s1", "p"), chain(1))
    with sqlite3.connect(db_path) as conn:  # a file written before the project history existed
        conn.execute("DROP TABLE user_projects")
    async with make_store(db_path) as reopened:
        assert await reopened.check() == []
        stored = await reopened.put_user_project(UserProjectRecord("u-1", "p-1", "Todo"))
        assert stored.download_count == 0
        assert (await reopened.get_session("s1")).session_id == "s1"


def _drop_listing_indexes(path: Path) -> None:
    with sqlite3.connect(path) as conn:  # a file written before sessions were listed by user and type
        conn.execute("DROP INDEX sessions_by_user")
        conn.execute("DROP INDEX sessions_by_type")


def _index_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


@pytest.mark.anyio
async def test_a_file_without_the_user_and_type_indexes_gains_them_on_open(db_path: Path) -> None:
    async with make_store(db_path) as first:
        await first.create_session(NewSession("s1", "p", user_id="u-1", pipeline_type="deploy"), chain(1))
    _drop_listing_indexes(db_path)
    async with make_store(db_path) as reopened:
        assert {"sessions_by_user", "sessions_by_type"} <= _index_names(db_path)
        assert [s.session_id for s in (await reopened.find_sessions(user_id="u-1")).items] == ["s1"]
        assert [s.session_id for s in (await reopened.find_sessions(pipeline_type="deploy")).items] == ["s1"]


@pytest.mark.anyio
async def test_a_reader_of_a_file_without_the_indexes_lists_by_user_without_changing_it(db_path: Path) -> None:
    async with make_store(db_path) as first:
        await first.create_session(NewSession("s1", "p", user_id="u-1"), chain(1))
    _drop_listing_indexes(db_path)
    before = digest(db_path)
    async with make_store(db_path, read_only=True) as reader:
        assert [s.session_id for s in (await reader.find_sessions(user_id="u-1")).items] == ["s1"]
    assert digest(db_path) == before and "sessions_by_user" not in _index_names(db_path)


def _drop_waiting_for(path: Path) -> None:
    with sqlite3.connect(path) as conn:  # a file written before tasks kept the signal they wait for
        conn.execute("ALTER TABLE tasks DROP COLUMN waiting_for")


def _task_columns(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}


@pytest.mark.anyio
async def test_a_file_without_the_waiting_for_column_gains_it_on_open(db_path: Path) -> None:
    async with make_store(db_path) as first:
        await first.create_session(NewSession("s1", "p"), chain(1))
    _drop_waiting_for(db_path)
    async with make_store(db_path) as reopened:
        assert "waiting_for" in _task_columns(db_path) and await reopened.check() == []
        lease = await reopened.claim_session("s1", "w1", 60)
        await reopened.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t0", 1)])
        await reopened.write_tasks(lease, [TaskWrite(TaskWriteKind.WAIT, "t0", 1, waiting_for="approval")])
        assert (await reopened.load_session("s1")).task("t0").waiting_for == "approval"


@pytest.mark.anyio
async def test_a_reader_of_a_file_without_the_waiting_for_column_reads_tasks_without_changing_it(
    db_path: Path,
) -> None:
    async with make_store(db_path) as first:
        await first.create_session(NewSession("s1", "p"), chain(2))
    _drop_waiting_for(db_path)
    before = digest(db_path)
    async with make_store(db_path, read_only=True) as reader:
        snap = await reader.load_session("s1")
        assert [t.waiting_for for t in snap.tasks.values()] == [None, None]
        assert (await reader.get_task("s1", "t1")).waiting_for is None
    assert digest(db_path) == before and "waiting_for" not in _task_columns(db_path)
