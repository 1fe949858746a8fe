"""Session operations on SQLite: read, let the rulebook decide, write, in the caller's transaction.

`BEGIN IMMEDIATE` holds the write lock from the read to the commit, so the change's
`expect` holds by construction; what remains here is encoding rows and the signal row.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from orchestrator.codec import Codec
from orchestrator.errors import SessionNotFoundError, SessionStateError, ValidationError
from orchestrator.store.records import (
    SCHEMA_VERSION,
    Edge,
    Event,
    Page,
    SessionRecord,
    SessionSnapshot,
    SessionStatus,
    SignalRecord,
)
from orchestrator.store import rules
from orchestrator.store.rules import Position, Retained, SessionChange, SessionFilter, SessionIndex, SessionOp
from orchestrator.store.sqlite.encoding import (
    SESSION_COLS,
    SESSION_INSERT,
    SESSION_UPDATE,
    SIGNAL_COLS,
    TASK_COLS,
    dump,
    session_from_row,
    session_insert_params,
    session_update_params,
    signal_from_row,
    task_from_row,
)
from orchestrator.store.sqlite.tasks import TaskRow, insert_tasks

__all__ = ["by_filter", "by_project", "by_status", "create", "decode_cursor", "exists", "load", "read", "settle",
           "store_signal", "write"]

R = TypeVar("R")

_SELECT = f"SELECT {SESSION_COLS} FROM sessions WHERE session_id = ?"
_SIGNAL_UPSERT = (
    "INSERT INTO signals (session_id, task_id, name, v, payload, seq, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (session_id, task_id, name) DO UPDATE SET v = excluded.v, payload = excluded.payload, "
    "seq = excluded.seq, sent_at = excluded.sent_at"
)


def exists(conn: sqlite3.Connection, session_id: str, now: float | None = None) -> bool:
    """Whether the id is taken; with `now`, whether the session is still readable (not expired)."""
    row = conn.execute("SELECT expires_at FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    return row is not None and (now is None or not rules.expired(row[0], now))


def read(conn: sqlite3.Connection, session_id: str, codec: Codec, where: str, now: float) -> SessionRecord:
    """The session, or SessionNotFoundError if absent or expired (`rules.expired`)."""
    row = conn.execute(_SELECT, (session_id,)).fetchone()
    record = None if row is None else session_from_row(row, codec, where)
    if record is None or rules.expired(record.expires_at, now):
        raise SessionNotFoundError.missing(session_id, where)
    return record


def load(conn: sqlite3.Connection, session_id: str, codec: Codec, where: str, now: float) -> SessionSnapshot:
    """The session with its tasks, edges and signals (one read transaction)."""
    session = read(conn, session_id, codec, where, now)
    deps: dict[str, list[str]] = {}
    edges = []
    for tid, dep in conn.execute(
        "SELECT task_id, depends_on FROM edges WHERE session_id = ? ORDER BY task_id, pos", (session_id,)
    ):
        deps.setdefault(tid, []).append(dep)
        edges.append(Edge(tid, dep))
    tasks = {}
    for row in conn.execute(f"SELECT {TASK_COLS} FROM tasks WHERE session_id = ?", (session_id,)):
        task = task_from_row(row, session_id, codec, where, tuple(deps.get(row[0], ())))
        tasks[task.task_id] = task
    signals: dict[tuple[str, str], SignalRecord] = {}
    for row in conn.execute(f"SELECT {SIGNAL_COLS} FROM signals WHERE session_id = ?", (session_id,)):
        signal = signal_from_row(row, session_id, codec, where)
        signals[(signal.task_id, signal.name)] = signal
    return SessionSnapshot(session=session, tasks=tasks, edges=tuple(edges), signals=signals)


def create(conn: sqlite3.Connection, record: SessionRecord, *, input_text: str, metadata_text: str,
           trace_text: str, ttl_seconds: float, tasks: Sequence[TaskRow], where: str) -> None:
    """Insert the session with its tasks and edges; SessionStateError if the id exists."""
    if exists(conn, record.session_id):
        raise SessionStateError.exists(record.session_id, where)
    conn.execute(SESSION_INSERT, session_insert_params(record, input_text=input_text, trace_text=trace_text,
                                                       metadata_text=metadata_text, ttl_seconds=ttl_seconds))
    insert_tasks(conn, record.session_id, tasks, record.created_at)


def settle(
    conn: sqlite3.Connection,
    op: SessionOp[R],
    now: float,
    *,
    codec: Codec,
    where: str,
    default_ttl: float,
    encoded: Mapping[str, str] | None = None,
    check: Callable[[SessionRecord], None] | None = None,
    record: Callable[[Event], None] | None = None,
) -> R:
    """Apply `op` to the stored session: decide on what is stored, write the change, return the result.

    `encoded` holds the stored text of metadata / trace context (encoded and size-checked
    before the transaction); `check` runs after the session was read, before the decision;
    `record` writes the operation's event (`op.event`), in the same transaction.
    """
    current = read(conn, op.session_id, codec, where, now)
    if check is not None:
        check(current)
    change = op.decide(current, now)
    if change is None:
        return op.result(current)
    # The stored retention is read only by a write that starts it (finish, cancel), not on the hot path.
    starts_retention = any(isinstance(v, Retained) for v in change.changes.values())
    new = change.apply(current, _ttl(conn, op.session_id, default_ttl) if starts_retention else default_ttl)
    write(conn, new, change, encoded or {})
    event = op.event(current, change, now)
    if event is not None and record is not None:
        record(event)
    return op.settled(current, new)


def write(conn: sqlite3.Connection, new: SessionRecord, change: SessionChange, encoded: Mapping[str, str]) -> None:
    conn.execute(SESSION_UPDATE, session_update_params(new))
    for name in ("metadata", "trace_context"):
        if name in change.changes:
            conn.execute(f"UPDATE sessions SET {name} = ? WHERE session_id = ?", (encoded[name], new.session_id))


def store_signal(conn: sqlite3.Connection, session_id: str, task_id: str, name: str, payload_text: str,
                 seq: int, now: float) -> None:
    conn.execute(_SIGNAL_UPSERT, (session_id, task_id, name, SCHEMA_VERSION, payload_text, seq, now))


def _ttl(conn: sqlite3.Connection, session_id: str, default_ttl: float) -> float:
    ttl = conn.execute("SELECT ttl_seconds FROM sessions WHERE session_id = ?", (session_id,)).fetchone()[0]
    return float(ttl) if ttl is not None else default_ttl


# -- listing ---------------------------------------------------------------------------------

_NOT_EXPIRED = "(expires_at IS NULL OR expires_at > ?)"


def by_status(conn: sqlite3.Connection, status: SessionStatus, bound: float, after: tuple[float, str], limit: int,
              now: float, codec: Codec, where: str) -> Page[SessionRecord]:
    """Sessions in `status`, oldest first by status time (wake-at for WAITING), after the cursor."""
    rows = conn.execute(
        f"SELECT {SESSION_COLS}, status_time FROM sessions WHERE status = ? AND status_time <= ? "
        f"AND {_NOT_EXPIRED} AND (status_time, session_id) > (?, ?) ORDER BY status_time, session_id LIMIT ?",
        (status.value, bound, now, *after, limit + 1),
    ).fetchall()
    return _page(rows, limit, codec, where)


def by_project(conn: sqlite3.Connection, project_id: str, before: tuple[float, str], limit: int, now: float,
               codec: Codec, where: str) -> Page[SessionRecord]:
    """A project's sessions, newest first, before the cursor."""
    rows = conn.execute(
        f"SELECT {SESSION_COLS}, created_at FROM sessions WHERE project_id = ? AND {_NOT_EXPIRED} "
        f"AND (created_at, session_id) < (?, ?) ORDER BY created_at DESC, session_id DESC LIMIT ?",
        (project_id, now, *before, limit + 1),
    ).fetchall()
    return _page(rows, limit, codec, where)


#: The partial index each filter reads (`INDEXED BY`: a plan that reads the table is an error, not slow).
_INDEX = {SessionIndex.USER: ("sessions_by_user", "user_id"), SessionIndex.TYPE: ("sessions_by_type", "pipeline_type")}


def by_filter(conn: sqlite3.Connection, flt: SessionFilter, before: Position | None, limit: int, now: float,
              codec: Codec, where: str) -> Page[SessionRecord]:
    """Sessions matching `flt`, newest first, older than `before`, read through its index.

    Only a reader (`mode=ro`) of a file written before the index existed reads the table.
    """
    index, column = _INDEX[flt.index]
    indexed = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (index,)).fetchone()
    clauses = [f"{column} = ?", _NOT_EXPIRED, "(created_at, session_id) < (?, ?)"]
    params: list[Any] = [flt.key, now, *(before or (float("inf"), ""))]
    for name, value in (("user_id", flt.user_id), ("pipeline_type", flt.pipeline_type),
                        ("status", flt.status and flt.status.value)):
        if value is not None and name != column:
            clauses.append(f"{name} = ?")
            params.append(value)
    rows = conn.execute(
        f"SELECT {SESSION_COLS} FROM sessions {f'INDEXED BY {index} ' if indexed else ''}"
        f"WHERE {' AND '.join(clauses)} ORDER BY created_at DESC, session_id DESC LIMIT ?",
        (*params, limit + 1),
    ).fetchall()
    items = tuple(session_from_row(row, codec, where) for row in rows[:limit])
    last = items[-1] if len(rows) > limit else None
    return Page(items, None if last is None else flt.cursor((last.created_at, last.session_id)))


def _page(rows: list[Any], limit: int, codec: Codec, where: str) -> Page[SessionRecord]:
    """Sessions from rows whose last column is the sort time; a cursor when more follow."""
    items = tuple(session_from_row(row, codec, where) for row in rows[:limit])
    cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        cursor = base64.urlsafe_b64encode(dump([last[-1], last[0]]).encode()).decode().rstrip("=")
    return Page(items, cursor)


def decode_cursor(cursor: str | None, default: float) -> tuple[float, str]:
    if cursor is None:
        return default, ""
    try:
        at, sid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(at), str(sid)
    except (ValueError, TypeError):
        raise ValidationError.bad_value("cursor", cursor, "the cursor of the previous page (or none for the first)",
                                        "a listing of this store") from None
