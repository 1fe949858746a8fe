"""SQLite: cached agent outputs (`CacheStore`) in the `cache_entries` table."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from orchestrator.codec import Codec
from orchestrator.store import rules
from orchestrator.store.records import CacheEntry
from orchestrator.store.rules import Payload
from orchestrator.store.rules.cache import cacheable, readable

__all__ = ["CacheOps"]

T = TypeVar("T")


class CacheOps:
    """`get_cached` and `put_cached` for `SQLiteStore`."""

    if TYPE_CHECKING:
        codec: Codec
        _where: str

        def _run(self, op: str, fn: Callable[[sqlite3.Connection, float], T], *, write: bool = True,
                 session_id: str | None = None) -> Awaitable[T]: ...

    async def get_cached(self, key: str) -> CacheEntry | None:
        def read(conn: sqlite3.Connection, now: float) -> CacheEntry | None:
            try:
                row = conn.execute("SELECT agent, output, created_at, expires_at, session_id, task_id "
                                   "FROM cache_entries WHERE key = ?", (key,)).fetchone()
            except sqlite3.OperationalError:  # an older file opened read-only: no table, no entries
                return None
            if row is None or not readable(row[3], now):
                return None
            output = self.codec.decode(row[1])
            return CacheEntry(key, row[0], output, row[2], row[3], row[4], row[5])

        return await self._run("get_cached", read, write=False)

    async def put_cached(self, entry: CacheEntry) -> None:
        text = rules.encode(self.codec, Payload.OUTPUT, entry.output, session_id=entry.session_id,
                            task_id=entry.task_id)
        if not cacheable(text):
            return

        def write(conn: sqlite3.Connection, now: float) -> None:
            conn.execute("INSERT OR REPLACE INTO cache_entries (key, agent, output, created_at, expires_at, "
                         "session_id, task_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (entry.key, entry.agent, text, entry.created_at, entry.expires_at, entry.session_id,
                          entry.task_id))

        await self._run("put_cached", write)
