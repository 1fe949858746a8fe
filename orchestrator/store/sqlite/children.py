"""SQLite: many sessions at once (`ChildStore`), each batch in one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from orchestrator.errors import SessionNotFoundError
from orchestrator.store.records import NewSession, NewTask, SessionRecord
from orchestrator.store.sqlite import sessions

__all__ = ["ChildOps"]

T = TypeVar("T")


class ChildOps:
    """`create_sessions` and `get_sessions` for `SQLiteStore` (one transaction per call)."""

    if TYPE_CHECKING:
        _where: str

        def _run(self, op: str, fn: Callable[[sqlite3.Connection, float], T], *, write: bool = True,
                 session_id: str | None = None) -> Awaitable[T]: ...

        def _creation(self, session: NewSession, tasks: Sequence[NewTask], *, owner: str | None = None,
                      lease_seconds: float | None = None,
                      created_event: bool = True) -> Callable[[sqlite3.Connection], None]: ...

        def _session(self, conn: sqlite3.Connection, session_id: str, now: float) -> SessionRecord: ...

    async def create_sessions(self, sessions_: Sequence[tuple[NewSession, Sequence[NewTask]]]) -> list[str]:
        # Validated before writing. A child records no `created` event (as on DynamoDB, where
        # that would double the items of a batch): its parent's events record children created.
        inserts = [(s.session_id, self._creation(s, tasks, created_event=False)) for s, tasks in sessions_]

        def create(conn: sqlite3.Connection, now: float) -> list[str]:
            created = []
            for sid, insert in inserts:
                if not sessions.exists(conn, sid):
                    insert(conn)
                    created.append(sid)
            return created

        return await self._run("create_sessions", create) if inserts else []

    async def get_sessions(self, session_ids: Sequence[str]) -> dict[str, SessionRecord]:
        def read(conn: sqlite3.Connection, now: float) -> dict[str, SessionRecord]:
            out = {}
            for sid in session_ids:
                try:
                    out[sid] = self._session(conn, sid, now)
                except SessionNotFoundError:
                    continue
            return out

        return await self._run("get_sessions", read, write=False) if session_ids else {}
