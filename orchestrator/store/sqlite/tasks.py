"""Task rows of the SQLite store: creation, fenced writes, staging and adoption.

Every function here runs inside a transaction the caller opened; values were encoded
before it began. Decisions come from `orchestrator.store.rules`, so the SQLite and
DynamoDB backends decide alike.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.codec import Codec
from orchestrator.errors import LeaseLostError, SchemaError
from orchestrator.store import rules
from orchestrator.store.protocol import WriteResult
from orchestrator.store.records import (
    SCHEMA_VERSION,
    Lease,
    NewTask,
    SessionRecord,
    TaskRecord,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    WriteOutcome,
)
from orchestrator.store.sqlite.encoding import (
    TASK_COLS,
    TASK_INSERT,
    RawJSON,
    dump,
    error_to_json,
    history_to_json,
    progress_to_json,
    task_from_row,
)

__all__ = [
    "EncodedWrite",
    "TaskRow",
    "adopt",
    "apply_writes",
    "insert_tasks",
    "read_task",
    "stage_tasks",
]

_SELECT_TASK = f"SELECT {TASK_COLS} FROM tasks WHERE session_id = ? AND task_id = ?"
_SELECT_DEPS = "SELECT depends_on FROM edges WHERE session_id = ? AND task_id = ? ORDER BY pos"
_TASK_UPDATE = (
    "UPDATE tasks SET v = ?, status = ?, fence = ?, attempt = ?, attempt_base = ?, not_before = ?, "
    "last_error = ?, history = ?, started_at = ?, ended_at = ?, output = ?, progress = ?, checkpoint = ?, "
    "updated_at = ?, waiting_for = ? WHERE session_id = ? AND task_id = ?"
)
_EDGE_INSERT = "INSERT OR IGNORE INTO edges (session_id, task_id, depends_on, pos, v) VALUES (?, ?, ?, ?, ?)"
_STAGED_FOR_ATTEMPT = (
    "SELECT task_id, v, agent, input, priority, max_attempts, depends_on, created_at FROM staged_tasks "
    "WHERE session_id = ? AND parent = ? AND fence = ? AND attempt = ?"
)


#: A task as inserted: (task_id, agent, input_text, priority, max_attempts, depends_on, added_by).
TaskRow = tuple[str, str, str | None, int, int, Sequence[str], str | None]


@dataclass(frozen=True, slots=True)
class EncodedWrite:
    """A `TaskWrite` with its user values already encoded (before the transaction began)."""

    write: TaskWrite
    output: str | None
    checkpoint: str | None


def insert_tasks(
    conn: sqlite3.Connection,
    session_id: str,
    rows: Sequence[TaskRow],
    now: float,
) -> None:
    """Insert PENDING tasks and their edges.

    Existing ids are left as they are (adoption of a definition that is already there).
    """
    conn.executemany(
        TASK_INSERT,
        [(session_id, tid, SCHEMA_VERSION, agent, text, prio, max_att, added_by, now)
         for tid, agent, text, prio, max_att, _, added_by in rows],
    )
    conn.executemany(
        _EDGE_INSERT,
        [(session_id, tid, dep, pos, SCHEMA_VERSION)
         for tid, _, _, _, _, deps, _ in rows for pos, dep in enumerate(deps)],
    )


def read_task(conn: sqlite3.Connection, session_id: str, task_id: str, codec: Codec, where: str) -> TaskRecord | None:
    """One adopted task, fully decoded, with its dependencies; None if absent."""
    row = conn.execute(_SELECT_TASK, (session_id, task_id)).fetchone()
    if row is None:
        return None
    deps = tuple(r[0] for r in conn.execute(_SELECT_DEPS, (session_id, task_id)))
    return task_from_row(row, session_id, codec, where, deps)


def _json_column(value: Any, write_value: Any, write_text: str | None) -> str | None:
    if isinstance(value, RawJSON):
        return value.text
    if value is None:
        return None
    if value is write_value:
        return write_text
    raise AssertionError("a task write produced a value that was not encoded before the transaction")


def apply_writes(
    conn: sqlite3.Connection,
    lease: Lease,
    writes: Sequence[EncodedWrite],
    now: float,
    *,
    codec: Codec,
    where: str,
    load_session: Callable[[], SessionRecord],
    missing: Callable[[str], Exception],
) -> tuple[list[WriteResult], LeaseLostError | None]:
    """Apply each fenced write in order; the caller commits them together.

    Each write is decided alone, as on DynamoDB (where a batch is not atomic without
    transactions): a rejection explained by a lost lease does not undo the writes the
    fence still allows. It is returned (the first one), for the caller to raise after
    the commit. An unknown task raises before anything is written.
    """
    sid = lease.session_id
    rows = []
    for enc in writes:
        row = conn.execute(_SELECT_TASK, (sid, enc.write.task_id)).fetchone()
        if row is None:
            raise missing(enc.write.task_id)
        rows.append(row)
    results: list[WriteResult] = []
    lost: LeaseLostError | None = None
    session: SessionRecord | None = None
    written: set[str] = set()
    for enc, first_row in zip(writes, rows, strict=True):
        w = enc.write
        # A task already written by this batch is read again.
        row = conn.execute(_SELECT_TASK, (sid, w.task_id)).fetchone() if w.task_id in written else first_row
        written.add(w.task_id)
        task = task_from_row(row, sid, codec, where, raw=True)
        if not rules.task_write_allowed(task, lease, w):
            if session is None:
                session = load_session()
            try:
                outcome = rules.classify_rejection(task, session, lease, w)
            except LeaseLostError as exc:
                lost = lost or exc
                outcome = WriteOutcome.STALE
            results.append(WriteResult(w.task_id, outcome, read_task(conn, sid, w.task_id, codec, where)))
            continue
        new = rules.apply_task_write(task, lease, w, now)
        conn.execute(
            _TASK_UPDATE,
            (
                SCHEMA_VERSION, new.status.value, new.fence, new.attempt, new.attempt_base, new.not_before,
                row[11] if new.last_error is task.last_error else error_to_json(new.last_error),
                row[12] if new.history is task.history else history_to_json(new.history),
                new.started_at, new.ended_at,
                _json_column(new.output, w.output, enc.output),
                row[16] if new.progress is task.progress else progress_to_json(new.progress),
                _json_column(new.checkpoint, w.checkpoint, enc.checkpoint),
                now, new.waiting_for, sid, w.task_id,
            ),
        )
        if w.kind is TaskWriteKind.COMPLETE:
            adopt(conn, sid, w.task_id, lease.fence, w.attempt, where)
        results.append(WriteResult(w.task_id, WriteOutcome.APPLIED))
    return results, lost


def adopt(conn: sqlite3.Connection, session_id: str, parent: str, fence: int, attempt: int, where: str) -> None:
    """Make the tasks staged by `parent`'s (fence, attempt) real, with its completion."""
    staged = conn.execute(_STAGED_FOR_ATTEMPT, (session_id, parent, fence, attempt)).fetchall()
    if not staged:
        return
    # An adopted task keeps its staging time as `updated_at`, as on DynamoDB, where
    # adoption is visibility and the staged item is not written again.
    batches: dict[float, list[TaskRow]] = {}
    for tid, v, agent, text, prio, max_att, deps, staged_at in staged:
        if v > SCHEMA_VERSION:
            raise SchemaError.newer(f"task {tid} staged by {parent} in session {session_id} in {where}", v,
                                    SCHEMA_VERSION, session_id=session_id, task_id=tid)
        batches.setdefault(staged_at, []).append((tid, agent, text, prio, max_att, json.loads(deps), parent))
    for staged_at, rows in batches.items():
        insert_tasks(conn, session_id, rows, staged_at)
    # The parent is COMPLETED for good: other attempts' staged tasks can never be adopted.
    conn.execute("DELETE FROM staged_tasks WHERE session_id = ? AND parent = ?", (session_id, parent))


def stage_tasks(
    conn: sqlite3.Connection,
    session: SessionRecord,
    lease: Lease,
    parent: str,
    attempt: int,
    tasks: Sequence[NewTask],
    inputs: Sequence[str],
    now: float,
    where: str,
) -> None:
    """Stage `tasks` under (parent, fence, attempt) once `rules.check_added` allows them.

    An id already adopted, or staged by this attempt, is a no-op (a re-run agent adds
    the same tasks).
    """
    sid = lease.session_id
    key = (sid, parent, lease.fence, attempt)
    staged_here = {
        r[0]
        for r in conn.execute(
            "SELECT task_id FROM staged_tasks WHERE session_id = ? AND parent = ? AND fence = ? AND attempt = ?",
            key,
        )
    }
    statuses = dict(conn.execute("SELECT task_id, status FROM tasks WHERE session_id = ?", (sid,)).fetchall())
    adopted = set(statuses)

    def stored(tid: str) -> list[rules.Definition]:
        found: list[rules.Definition] = []
        row = conn.execute(
            "SELECT agent, input, priority, max_attempts FROM tasks WHERE session_id = ? AND task_id = ?", (sid, tid)
        ).fetchone()
        if row is not None:
            found.append((*row, [r[0] for r in conn.execute(_SELECT_DEPS, (sid, tid))]))
        found.extend(
            (agent, inp, prio, max_att, json.loads(deps_text))
            for agent, inp, prio, max_att, deps_text in conn.execute(
                "SELECT agent, input, priority, max_attempts, depends_on FROM staged_tasks "
                "WHERE session_id = ? AND task_id = ?",
                (sid, tid),
            )
        )
        return found

    rules.check_added(session, lease, parent, attempt, tasks, inputs, parent_status=TaskStatus(statuses[parent]) if parent in statuses else None,
                      known=adopted | staged_here, stored=stored, store=where)
    conn.executemany(
        "INSERT OR IGNORE INTO staged_tasks (session_id, parent, fence, attempt, task_id, v, agent, input, "
        "priority, max_attempts, depends_on, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(*key, t.task_id, SCHEMA_VERSION, t.agent, text, t.priority, t.max_attempts, dump(list(t.depends_on)), now)
         for t, text in zip(tasks, inputs, strict=True) if t.task_id not in adopted],
    )
