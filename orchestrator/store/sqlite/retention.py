"""Retention on SQLite, which has no TTL: what a purge deletes, and when writers run it.

Expired rows are filtered out of every read, so a late purge is never visible; deleting
them is a writer's job. `RetentionPasses` runs a bounded pass after a store's first
write and then at most once per `PASS_INTERVAL_S` of its clock, in a transaction of its
own that is tried once: a locked file postpones the pass instead of waiting, and a
failed pass is logged, never raised into the write that triggered it. Opening the file
and reading never purge, so a reader neither waits behind a writer nor needs write
access. `Store.purge` (`orchestrator purge`) deletes everything due at once.
"""

from __future__ import annotations

import logging
import sqlite3

from orchestrator.errors import StoreError
from orchestrator.store.records import PurgeReport
from orchestrator.store.sqlite.connection import SQLiteDatabase

__all__ = ["PASS_BATCH", "PASS_INTERVAL_S", "RetentionPasses", "purge"]

_log = logging.getLogger("orchestrator.store.sqlite")

#: A writer's passes are at least this far apart (store clock), unless a backlog remains.
PASS_INTERVAL_S = 3600.0
#: Sessions deleted per pass (with all their rows); expired events, metrics and staged
#: tasks: `_ROWS_PER_SESSION` times as many per table. Bounds the time a pass holds the lock.
PASS_BATCH = 100
_ROWS_PER_SESSION = 50
_LOCKED_RETRY_S = 60.0
_DAY_S = 86400.0
_ALL = -1  # SQLite's LIMIT -1: no limit


def purge(conn: sqlite3.Connection, ended_before: float | None, now: float, retention_days: float) -> PurgeReport:
    """Delete sessions that ended before the bound or expired, with all their rows, and
    expired events, metrics, cached outputs and never-adopted staged tasks. `items` counts every row deleted."""
    bound = float("-inf") if ended_before is None else ended_before
    return _delete(conn, bound, now, retention_days, _ALL)[0]


def _delete(
    conn: sqlite3.Connection, bound: float, now: float, retention_days: float, limit: int
) -> tuple[PurgeReport, bool]:
    """The purge, at most `limit` sessions (`_ALL`: no limit); True when more is due."""
    before = conn.total_changes
    doomed = conn.execute(
        "SELECT session_id FROM sessions WHERE completed_at < ? UNION SELECT session_id FROM sessions "
        "WHERE expires_at <= ? LIMIT ?",
        (bound, now, limit),
    ).fetchall()
    for table in ("tasks", "edges", "staged_tasks", "signals", "events", "sessions"):
        conn.executemany(f"DELETE FROM {table} WHERE session_id = ?", doomed)
    more = limit != _ALL and len(doomed) >= limit
    rows = _ALL if limit == _ALL else limit * _ROWS_PER_SESSION
    for table, column, cutoff in (("events", "expires_at", now), ("metrics", "expires_at", now),
                                  ("cache_entries", "expires_at", now),
                                  ("staged_tasks", "created_at", now - retention_days * _DAY_S)):
        deleted = conn.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {column} <= ? LIMIT ?)",
            (cutoff, rows),
        ).rowcount
        more = more or (rows != _ALL and deleted >= rows)
    return PurgeReport(sessions=len(doomed), items=conn.total_changes - before), more


class RetentionPasses:
    """When a writing store runs its next bounded purge pass (see the module docstring)."""

    def __init__(self, db: SQLiteDatabase, retention_days: float) -> None:
        self._db = db
        self._retention_days = retention_days
        self._due = float("-inf")  # the first write runs a pass
        #: Passes that ran (diagnostics, tests).
        self.passes = 0

    def after_write(self) -> None:
        """Called after each committed write: run a pass if one is due."""
        now = self._db.clock.now()
        if now < self._due:
            return
        self._due = now + PASS_INTERVAL_S
        try:
            done = self._db.try_write(
                "retention", lambda conn, t: _delete(conn, float("-inf"), t, self._retention_days, PASS_BATCH)
            )
        except StoreError as exc:
            _log.warning("retention pass skipped (%s); expired rows stay hidden from reads and are purged by a "
                         "later pass or `orchestrator purge`", exc)
            return
        if done is None:  # another connection holds the lock: never wait for it
            self._due = now + _LOCKED_RETRY_S
            return
        self.passes += 1
        report, more = done
        if more:
            self._due = now  # a backlog: the next write continues it
        if report.sessions or report.items:
            _log.debug("retention pass deleted %d session(s), %d row(s)", report.sessions, report.items)
