"""The one choke point to SQLite: opening the file, transactions, busy retries, error mapping.

Every SQLite call runs directly on the event loop (a WAL commit costs ~0.04 ms, a thread
hop 0.2-0.5 ms). The connection never waits inside SQLite (`busy_timeout = 0`): write
transactions open with `BEGIN IMMEDIATE`, and a locked file makes the transaction roll
back and retry after an async, jittered, exponential backoff, up to the configured
`busy_timeout_s`. A transaction body is a synchronous function with no `await` inside,
so coroutines sharing the connection never interleave within one.

A read-only store (`SQLiteConfig.read_only`) opens an existing file with `mode=ro`: it
never creates, migrates or switches the file to WAL, and refuses every write. Reads
in WAL mode never wait for a writer, so a reader is not slowed by a held write lock.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio

from orchestrator.clock import Clock
from orchestrator.errors import SchemaError, StoreError, StoreUnavailableError
from orchestrator.store.config import SQLiteConfig
from orchestrator.store.deadline import check as check_deadline
from orchestrator.store.deadline import remaining as deadline_remaining
from orchestrator.store.sqlite.schema import (
    add_missing,
    check_existing,
    connect,
    connect_read_only,
    create_file,
    inspect,
    is_busy,
    missing_additions,
    shadow_missing_columns,
    verify_or_create,
)

__all__ = ["SQLiteDatabase"]

T = TypeVar("T")

_FIRST_BACKOFF_S = 0.0005
_MAX_BACKOFF_S = 0.05


class SQLiteDatabase:
    """One connection to the store file, and the transaction runner every operation uses."""

    def __init__(self, config: SQLiteConfig, clock: Clock, where: str) -> None:
        self.config = config
        self.path = Path(config.path).expanduser()
        self.clock = clock
        #: Transactions that found the file locked and backed off (diagnostics, tests).
        self.busy_retries = 0
        self._where = where
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._rng = random.Random()

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def open(self) -> bool:
        """Create the file (0600) and tables if missing, or verify them; True if newly connected.

        A file that is not an orchestrator store (not SQLite, other tables, a newer
        schema) raises SchemaError before anything is written to it. Read-only: only
        verify an existing file (StoreUnavailableError if there is none).
        """
        if self._closed:
            raise self._closed_error()
        if self._conn is not None:
            return False
        if self.config.read_only:
            return self._adopt(await self._open_read_only())
        create_file(self.path)
        conn = connect(self.path)
        try:
            fresh = await self._retrying("initialize", lambda: inspect(conn, self.path))
            mode = await self._retrying(
                "initialize", lambda: str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            )
            if mode.lower() != "wal":
                raise StoreError(
                    f"{self.path} cannot be switched to WAL mode (it stays {mode!r}); put the store on a "
                    f"local file system (WAL does not work over NFS)",
                    path=str(self.path),
                )
            conn.execute(f"PRAGMA synchronous = {self.config.synchronous}")
            if fresh:
                await self._retrying(
                    "initialize",
                    lambda: _transaction(conn, "BEGIN IMMEDIATE", lambda: verify_or_create(conn, self.path)),
                )
            elif await self._retrying("initialize", lambda: missing_additions(conn)):
                await self._retrying(
                    "initialize", lambda: _transaction(conn, "BEGIN IMMEDIATE", lambda: add_missing(conn))
                )
        except BaseException:
            conn.close()
            raise
        return self._adopt(conn)

    async def _open_read_only(self) -> sqlite3.Connection:
        """An existing store file, opened `mode=ro` and verified with reads only."""
        check_existing(self.path)
        conn = await self._retrying("open", lambda: connect_read_only(self.path))
        try:
            if await self._retrying("open", lambda: inspect(conn, self.path)):
                raise StoreUnavailableError.no_file(str(self.path), "is empty")
            await self._retrying("open", lambda: shadow_missing_columns(conn))
        except BaseException:
            conn.close()
            raise
        return conn

    def _adopt(self, conn: sqlite3.Connection) -> bool:
        if self._conn is not None:  # another coroutine opened it meanwhile
            conn.close()
            return False
        self._conn = conn
        return True

    def _closed_error(self) -> StoreError:
        if self._closed:
            return StoreError(f"the store {self._where} is closed; open a new one with open_store()")
        return StoreError(f"the store {self._where} is not open yet; call `await store.initialize()` first")

    def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def run(
        self,
        op: str,
        fn: Callable[[sqlite3.Connection, float], T],
        *,
        write: bool = True,
        session_id: str | None = None,
    ) -> T:
        """Run `fn(conn, now)` in one transaction (BEGIN IMMEDIATE for writes), retried when locked."""
        conn = self._conn
        if conn is None:
            raise self._closed_error()
        if write and self.config.read_only:
            raise StoreError.read_only(self._where, op)
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"

        def bounded() -> T:
            # Inside the transaction, once the lock is ours: past the caller's deadline
            # (`orchestrator.store.deadline`) nothing is read or written; it rolls back.
            now = self.clock.now()
            check_deadline(now)
            return fn(conn, now)

        return await self._retrying(op, lambda: _transaction(conn, begin, bounded), session_id)

    def try_write(self, op: str, fn: Callable[[sqlite3.Connection, float], T]) -> T | None:
        """`fn(conn, now)` in one write transaction if the file is free now; None if it is locked.

        For work that can wait for a later chance (retention): it never backs off or waits.
        """
        conn = self._conn
        if conn is None:
            raise self._closed_error()
        if self.config.read_only:
            raise StoreError.read_only(self._where, op)
        try:
            return _transaction(conn, "BEGIN IMMEDIATE", lambda: fn(conn, self.clock.now()))
        except sqlite3.Error as exc:
            if is_busy(exc):
                return None
            raise self._error(exc, op, None) from exc

    async def _retrying(self, op: str, attempt: Callable[[], T], session_id: str | None = None) -> T:
        """Run `attempt`, retrying on a locked file with jittered exponential backoff.

        The budget is wall time (`time.monotonic`), not the injected clock: the lock is
        held by a real process, and a fake clock would never let the wait end.
        """
        deadline: float | None = None
        delay = _FIRST_BACKOFF_S
        while True:
            try:
                return attempt()
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    raise self._error(exc, op, session_id) from exc
                # A lock held by another real process is waited for in real time: a fake clock
                # would never end the wait.
                now = time.monotonic()  # noqa: TID251
                if deadline is None:
                    deadline = now + self.config.busy_timeout_s
                if now >= deadline:
                    raise StoreUnavailableError(
                        f"{self.path} stayed locked by another connection for {self.config.busy_timeout_s:g}s "
                        f"during {op}; find the process holding it (e.g. `fuser {self.path}`), or allow a "
                        f"longer wait with ?busy_timeout=SECONDS in the store URL {_context(self.path, op, session_id)}",
                        path=str(self.path),
                        op=op,
                        session_id=session_id,
                    ) from exc
                self.busy_retries += 1
                check_deadline(self.clock.now())  # no waiting for the lock past the caller's deadline
                left = deadline_remaining(self.clock.now())
                pause = min(delay * (0.5 + self._rng.random()), deadline - now)
                await anyio.sleep(pause if left is None else max(0.0, min(pause, left)))
                delay = min(delay * 2, _MAX_BACKOFF_S)

    def _error(self, exc: sqlite3.Error, op: str, session_id: str | None) -> StoreError:
        """Map a SQLite error, keeping it as the cause and naming file, operation and session."""
        where = _context(self.path, op, session_id)
        text = str(exc)
        ids = {"path": str(self.path), "op": op, "session_id": session_id}
        if "not a database" in text or "malformed" in text:
            return SchemaError(
                f"{self.path} is not a readable orchestrator store ({text}); restore it from a backup or "
                f"point ORCHESTRATOR_STORE at another file {where}",
                **ids,
            )
        if isinstance(exc, sqlite3.OperationalError):
            return StoreUnavailableError(
                f"SQLite failed during {op}: {text}; check that {self.path} and its directory are writable "
                f"and the disk is not full {where}",
                **ids,
            )
        return StoreError(f"SQLite failed during {op}: {text} {where}", **ids)


def _context(path: Path, op: str, session_id: str | None) -> str:
    return f"[file={path}, op={op}{f', session={session_id}' if session_id else ''}]"


def _transaction(conn: sqlite3.Connection, begin: str, body: Callable[[], T]) -> T:
    """BEGIN, run `body`, COMMIT; roll back on any error (including a busy COMMIT)."""
    conn.execute(begin)
    try:
        result = body()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the original error says more; SQLite rolls back on close anyway
        raise
    return result
