"""The embedded backend: one SQLite file in WAL mode, safe for several processes on a machine.

Each operation reads its rows inside one transaction, decides with
`orchestrator.store.rules`, and writes: the conditional writes of DESIGN.md §6 hold
because `BEGIN IMMEDIATE` holds the write lock from the read to the commit. Values are
encoded (and validated) before `BEGIN`, so nothing is half-written. How the file is
opened and locked lives in `sqlite_db` / `sqlite_schema`; task rows in `sqlite_tasks`;
events, metrics, pipelines and retention in `sqlite_history`; the users' project
history in `sqlite_projects`.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio.lowlevel

from orchestrator.clock import Clock
from orchestrator.codec import Codec
from orchestrator.errors import (
    ClaimRejectedError,
    SessionNotFoundError,
    SessionStateError,
    TaskNotFoundError,
    ValidationError,
)
from orchestrator.store import rules
from orchestrator.store.sqlite import history
from orchestrator.store.sqlite import projects
from orchestrator.store.config import SQLiteConfig
from orchestrator.store.protocol import WriteResult
from orchestrator.store.records import (
    SCHEMA_VERSION,
    ClaimPolicy,
    Edge,
    Event,
    Lease,
    MetricSummary,
    NewSession,
    NewTask,
    OwnerKind,
    Page,
    PipelineDefinition,
    Progress,
    PurgeReport,
    SessionRecord,
    SessionSnapshot,
    SessionStatus,
    SignalRecord,
    StoreDescription,
    TaskRecord,
    TaskWrite,
    TaskWriteKind,
    UserProjectRecord,
    check_id,
)
from orchestrator.store.sqlite.connection import SQLiteDatabase
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
from orchestrator.store.sqlite.schema import file_problems
from orchestrator.store.sqlite.tasks import (
    EncodedWrite,
    TaskRow,
    apply_writes,
    check_graph,
    insert_tasks,
    read_task,
    stage_tasks,
)

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_MAX_PAGE = 1000
_SELECT_SESSION = f"SELECT {SESSION_COLS} FROM sessions WHERE session_id = ?"
_NOT_EXPIRED = "(expires_at IS NULL OR expires_at > ?)"


class SQLiteStore:
    """The `Store` protocol on a SQLite file (see the module docstring for the locking model).

    Negative-control seam: `_cas_claims` (class attribute, True) makes `claim_session`
    read, decide and write in one `BEGIN IMMEDIATE` transaction. A test subclass that
    sets it False gets an unsafe claim: the read and decision in one transaction and
    the write in a later one, without re-checking, so a contention test can show that
    two workers both "win" without the condition, and exactly one does with it.
    """

    _cas_claims: bool = True

    def __init__(self, config: SQLiteConfig, *, clock: Clock, codec: Codec) -> None:
        self.config = config
        self.clock = clock
        self.codec = codec
        self.path = Path(config.path).expanduser()
        self._where = str(self.describe())
        self._db = SQLiteDatabase(config, clock, self._where)

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def busy_retries(self) -> int:
        """Transactions that found the file locked and backed off (diagnostics, tests)."""
        return self._db.busy_retries

    def describe(self) -> StoreDescription:
        return StoreDescription("sqlite", str(self.path))

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path})"

    async def __aenter__(self) -> SQLiteStore:
        await self.initialize()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def initialize(self) -> None:
        """Create the file (0600) and tables if missing, or verify them; then purge what expired.

        A file that is not an orchestrator store (not SQLite, other tables, a newer
        schema) raises SchemaError before anything is written to it.
        """
        if await self._db.open():
            retention = self.config.retention_days
            await self._db.run("purge", lambda c, now: history.purge(c, None, now, retention))

    async def check(self) -> list[str]:
        return file_problems(self.path)

    async def settings(self) -> dict[str, str]:
        """The connection's journal mode, synchronous level and busy timeout, for `doctor` output."""

        def read(conn: sqlite3.Connection, _: float) -> dict[str, str]:
            sync = conn.execute("PRAGMA synchronous").fetchone()[0]
            return {
                "journal_mode": str(conn.execute("PRAGMA journal_mode").fetchone()[0]).upper(),
                "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, str(sync)),
                "busy_timeout_ms": str(conn.execute("PRAGMA busy_timeout").fetchone()[0]),
            }

        return await self._run("settings", read, write=False)

    async def aclose(self) -> None:
        self._db.close()

    async def _run(
        self,
        op: str,
        fn: Callable[[sqlite3.Connection, float], T],
        *,
        write: bool = True,
        session_id: str | None = None,
    ) -> T:
        if not self._db.is_open:
            await self.initialize()
        return await self._db.run(op, fn, write=write, session_id=session_id)

    # -- shared reads and checks --------------------------------------------------------

    def _not_found(self, session_id: str) -> SessionNotFoundError:
        return SessionNotFoundError(
            f"session {session_id!r} not found in {self._where}; list sessions with `orchestrator list`, "
            f"or check that ORCHESTRATOR_STORE names the store that holds it",
            session_id=session_id,
            store=self._where,
        )

    def _session(self, conn: sqlite3.Connection, session_id: str) -> SessionRecord:
        row = conn.execute(_SELECT_SESSION, (session_id,)).fetchone()
        if row is None:
            raise self._not_found(session_id)
        return session_from_row(row, self.codec, self._where)

    def _fenced(self, conn: sqlite3.Connection, lease: Lease) -> SessionRecord:
        session = self._session(conn, lease.session_id)
        err = rules.lease_lost(session, lease)
        if err is not None:
            raise err
        return session

    def _save(self, conn: sqlite3.Connection, session: SessionRecord) -> None:
        conn.execute(SESSION_UPDATE, session_update_params(session))

    def _expiry(self, conn: sqlite3.Connection, session_id: str, now: float) -> float:
        ttl = conn.execute("SELECT ttl_seconds FROM sessions WHERE session_id = ?", (session_id,)).fetchone()[0]
        return now + (ttl if ttl is not None else self.config.retention_days * 86400.0)

    # -- sessions -------------------------------------------------------------------------

    async def create_session(
        self,
        session: NewSession,
        tasks: Sequence[NewTask],
        *,
        owner: str | None = None,
        lease_seconds: float | None = None,
    ) -> SessionRecord:
        sid = session.session_id
        check_graph(tasks, lambda _: False, f"session {sid}")
        if owner is None and session.status is SessionStatus.RUNNING:
            raise ValidationError(
                f"session {sid} is created RUNNING without an owner; pass owner= (e.g. 'external:<token>')",
                session_id=sid,
            )
        if lease_seconds is not None and lease_seconds <= 0:
            raise ValidationError(f"lease_seconds={lease_seconds} for session {sid} must be > 0", session_id=sid)
        input_text = self.codec.encode(session.input, where=f"input of session {sid}")
        metadata_text = self.codec.encode(dict(session.metadata), where=f"metadata of session {sid}")
        trace_text = _trace_json(session.trace_context, sid)
        rows: list[TaskRow] = [
            (t.task_id, t.agent, self.codec.encode(t.input, where=f"input of task {t.task_id} in session {sid}"),
             t.priority, t.max_attempts, t.depends_on, t.added_by)
            for t in tasks
        ]

        def create(conn: sqlite3.Connection, now: float) -> SessionRecord:
            if conn.execute("SELECT 1 FROM sessions WHERE session_id = ?", (sid,)).fetchone():
                raise SessionStateError(
                    f"session {sid} already exists in {self._where}; choose another id, or continue it "
                    f"with `orchestrator resume {sid}`",
                    session_id=sid,
                )
            record = SessionRecord(
                session_id=sid, pipeline=session.pipeline, pipeline_version=session.pipeline_version,
                status=SessionStatus.RUNNING if owner is not None else session.status,
                owner_kind=session.owner_kind, project_id=session.project_id, user_id=session.user_id,
                pipeline_type=session.pipeline_type, progress=Progress(0, len(rows)), created_at=now,
                updated_at=now, lease_owner=owner, fence=1 if owner is not None else 0,
                lease_expires_at=now + lease_seconds if owner is not None and lease_seconds is not None else None,
                max_redrives=session.max_redrives,
            )
            conn.execute(
                SESSION_INSERT,
                session_insert_params(record, input_text=input_text, trace_text=trace_text,
                                      metadata_text=metadata_text, ttl_seconds=session.ttl_seconds),
            )
            insert_tasks(conn, sid, rows, now)
            return self._session(conn, sid)

        return await self._run("create_session", create, session_id=sid)

    async def get_session(self, session_id: str) -> SessionRecord:
        return await self._run("get_session", lambda c, _: self._session(c, session_id), write=False,
                               session_id=session_id)

    async def load_session(self, session_id: str) -> SessionSnapshot:
        def load(conn: sqlite3.Connection, _: float) -> SessionSnapshot:
            session = self._session(conn, session_id)
            deps: dict[str, list[str]] = {}
            edges = []
            for tid, dep in conn.execute(
                "SELECT task_id, depends_on FROM edges WHERE session_id = ? ORDER BY task_id, pos", (session_id,)
            ):
                deps.setdefault(tid, []).append(dep)
                edges.append(Edge(tid, dep))
            tasks = {}
            for row in conn.execute(f"SELECT {TASK_COLS} FROM tasks WHERE session_id = ?", (session_id,)):
                task = task_from_row(row, session_id, self.codec, self._where, tuple(deps.get(row[0], ())))
                tasks[task.task_id] = task
            signals: dict[tuple[str, str], SignalRecord] = {}
            for row in conn.execute(f"SELECT {SIGNAL_COLS} FROM signals WHERE session_id = ?", (session_id,)):
                signal = signal_from_row(row, session_id, self.codec, self._where)
                signals[(signal.task_id, signal.name)] = signal
            return SessionSnapshot(session=session, tasks=tasks, edges=tuple(edges), signals=signals)

        return await self._run("load_session", load, write=False, session_id=session_id)

    async def get_task(self, session_id: str, task_id: str) -> TaskRecord:
        def get(conn: sqlite3.Connection, _: float) -> TaskRecord:
            task = read_task(conn, session_id, task_id, self.codec, self._where)
            if task is None:
                raise self._missing_task(conn, session_id, task_id)
            return task

        return await self._run("get_task", get, write=False, session_id=session_id)

    def _require_session(self, conn: sqlite3.Connection, session_id: str) -> None:
        if conn.execute("SELECT 1 FROM sessions WHERE session_id = ?", (session_id,)).fetchone() is None:
            raise self._not_found(session_id)

    def _missing_task(self, conn: sqlite3.Connection, session_id: str, task_id: str) -> Exception:
        self._require_session(conn, session_id)
        return TaskNotFoundError(
            f"session {session_id} has no task {task_id!r} in {self._where}; see its tasks with "
            f"`orchestrator show {session_id}`",
            session_id=session_id,
            task_id=task_id,
        )

    async def claim_session(
        self,
        session_id: str,
        owner: str,
        lease_seconds: float,
        policy: ClaimPolicy = ClaimPolicy(),
    ) -> Lease:
        if not owner:
            raise ValidationError(f"claim of session {session_id} names no owner", session_id=session_id)
        if lease_seconds <= 0:
            raise ValidationError(f"lease_seconds={lease_seconds} must be > 0", session_id=session_id)

        def decide(conn: sqlite3.Connection, now: float) -> SessionRecord:
            session = self._session(conn, session_id)
            refusal = rules.claim_refusal(session, now, policy)
            if refusal is not None:
                raise ClaimRejectedError(refusal, session_id=session_id, owner=session.lease_owner,
                                         fence=session.fence, status=session.status.value)
            return rules.claimed(session, owner, lease_seconds, now, policy)

        def write(conn: sqlite3.Connection, now: float, new: SessionRecord) -> Lease:
            self._save(conn, new)
            return Lease(session_id, owner, new.fence, new.lease_expires_at, signal_seq=new.signal_seq)

        if self._cas_claims:
            return await self._run("claim_session", lambda c, now: write(c, now, decide(c, now)),
                                   session_id=session_id)
        # The unsafe read-then-write of the negative control (see the class docstring).
        stale = await self._run("claim_session", decide, write=False, session_id=session_id)
        await anyio.lowlevel.checkpoint()
        return await self._run("claim_session", lambda c, now: write(c, now, stale), session_id=session_id)

    async def renew_lease(self, lease: Lease, lease_seconds: float) -> tuple[Lease, SessionRecord]:
        def renew(conn: sqlite3.Connection, now: float) -> tuple[Lease, SessionRecord]:
            session = self._fenced(conn, lease)
            expires = None if session.owner_kind is OwnerKind.EXTERNAL else now + lease_seconds
            new = replace(session, lease_expires_at=expires, updated_at=now)
            self._save(conn, new)
            return replace(lease, expires_at=expires, signal_seq=new.signal_seq), new

        return await self._run("renew_lease", renew, session_id=lease.session_id)

    async def release_lease(self, lease: Lease) -> None:
        def release(conn: sqlite3.Connection, now: float) -> None:
            session = self._session(conn, lease.session_id)
            if session.status is SessionStatus.PENDING and session.fence == lease.fence:
                return  # a retry of a release that landed
            self._fenced(conn, lease)
            self._save(conn, replace(session, status=SessionStatus.PENDING, lease_owner=None,
                                     lease_expires_at=None, updated_at=now))

        await self._run("release_lease", release, session_id=lease.session_id)

    async def update_session(
        self,
        lease: Lease,
        *,
        progress: Progress | None = None,
        current_agents: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        sid = lease.session_id
        metadata_text = None if metadata is None else self.codec.encode(metadata, where=f"metadata of session {sid}")
        trace_text = None if trace_context is None else _trace_json(trace_context, sid)

        def update(conn: sqlite3.Connection, now: float) -> None:
            session = self._fenced(conn, lease)
            self._save(conn, replace(
                session,
                progress=session.progress if progress is None else progress,
                current_agents=session.current_agents if current_agents is None else tuple(current_agents),
                updated_at=now,
            ))
            if metadata_text is not None:
                conn.execute("UPDATE sessions SET metadata = ? WHERE session_id = ?", (metadata_text, sid))
            if trace_text is not None:
                conn.execute("UPDATE sessions SET trace_context = ? WHERE session_id = ?", (trace_text, sid))

        await self._run("update_session", update, session_id=sid)

    async def finish_session(
        self,
        lease: Lease,
        status: SessionStatus,
        reason: str | None = None,
        *,
        needs_human_reason: str | None = None,
    ) -> SessionRecord:
        sid = lease.session_id
        if not status.is_final:
            raise ValidationError(
                f"finish_session({sid}) takes COMPLETED, FAILED or CANCELLED, not {status.value}", session_id=sid
            )
        if needs_human_reason is not None and status is not SessionStatus.FAILED:
            raise ValidationError(
                f"session {sid}: only a FAILED session can be flagged needs-human (got {status.value})",
                session_id=sid,
            )

        def finish(conn: sqlite3.Connection, now: float) -> SessionRecord:
            session = self._session(conn, sid)
            if session.status is status and session.fence == lease.fence and session.completed_at is not None:
                return session  # a retry of a finish that landed
            self._fenced(conn, lease)
            new = replace(
                session, status=status, reason=reason, completed_at=now, updated_at=now, lease_owner=None,
                lease_expires_at=None, wake_at=None, current_agents=(),
                needs_human=needs_human_reason is not None, needs_human_reason=needs_human_reason,
                expires_at=self._expiry(conn, sid, now),
            )
            self._save(conn, new)
            return new

        return await self._run("finish_session", finish, session_id=sid)

    async def wait_session(self, lease: Lease, wake_at: float | None) -> bool:
        def wait(conn: sqlite3.Connection, now: float) -> bool:
            session = self._session(conn, lease.session_id)
            if session.status is SessionStatus.WAITING and session.fence == lease.fence:
                return True  # a retry of a wait that landed
            self._fenced(conn, lease)
            if session.signal_seq != lease.signal_seq:
                return False
            self._save(conn, replace(session, status=SessionStatus.WAITING, wake_at=wake_at,
                                     wait_seq=session.signal_seq, lease_owner=None, lease_expires_at=None,
                                     updated_at=now))
            return True

        return await self._run("wait_session", wait, session_id=lease.session_id)

    async def request_cancel(self, session_id: str, reason: str) -> SessionRecord:
        def cancel(conn: sqlite3.Connection, now: float) -> SessionRecord:
            session = self._session(conn, session_id)
            if session.status in (SessionStatus.COMPLETED, SessionStatus.CANCELLED):
                raise SessionStateError(
                    f"session {session_id} is already {session.status.value}; there is nothing to cancel",
                    session_id=session_id,
                    status=session.status.value,
                )
            expired = session.lease_expires_at is not None and session.lease_expires_at < now
            if session.status is SessionStatus.RUNNING and not expired:
                new = replace(session, cancel_requested=True, reason=reason, updated_at=now)
            else:  # nobody holds it: cancel now, and fence out a stale owner
                new = replace(
                    session, status=SessionStatus.CANCELLED, fence=session.fence + 1, cancel_requested=True,
                    reason=reason, lease_owner=None, lease_expires_at=None, wake_at=None, completed_at=now,
                    updated_at=now, expires_at=self._expiry(conn, session_id, now),
                )
            self._save(conn, new)
            return new

        return await self._run("request_cancel", cancel, session_id=session_id)

    async def set_needs_human(self, session_id: str, reason: str | None) -> SessionRecord:
        def flag(conn: sqlite3.Connection, _: float) -> SessionRecord:
            session = self._session(conn, session_id)
            if session.status is not SessionStatus.FAILED:
                raise SessionStateError(
                    f"session {session_id} is {session.status.value}; only a FAILED session can be flagged "
                    f"or cleared for a person",
                    session_id=session_id,
                    status=session.status.value,
                )
            # updated_at is kept: clearing the flag must not push back the cron's "failed before" bound.
            new = replace(session, needs_human=reason is not None, needs_human_reason=reason)
            self._save(conn, new)
            return new

        return await self._run("set_needs_human", flag, session_id=session_id)

    # -- tasks ----------------------------------------------------------------------------

    async def write_tasks(self, lease: Lease, writes: Sequence[TaskWrite]) -> list[WriteResult]:
        if not writes:
            return []
        sid = lease.session_id
        encoded = [
            EncodedWrite(
                w,
                self.codec.encode(w.output, where=f"output of task {w.task_id} in session {sid}")
                if w.kind is TaskWriteKind.COMPLETE and w.output is not None else None,
                self.codec.encode(w.checkpoint, where=f"checkpoint of task {w.task_id} in session {sid}")
                if w.kind is TaskWriteKind.CHECKPOINT and w.checkpoint is not None else None,
            )
            for w in writes
        ]

        def write(conn: sqlite3.Connection, now: float) -> list[WriteResult]:
            return apply_writes(
                conn, lease, encoded, now, codec=self.codec, where=self._where,
                load_session=lambda: self._session(conn, sid),
                missing=lambda tid: self._missing_task(conn, sid, tid),
            )

        return await self._run("write_tasks", write, session_id=sid)

    async def add_tasks(self, lease: Lease, parent: str, attempt: int, tasks: Sequence[NewTask]) -> None:
        sid = lease.session_id
        if not tasks:
            return
        where = f"the tasks added by {parent} (attempt {attempt}) to session {sid}"
        check_graph(tasks, lambda _: True, where)  # dependencies outside the batch are checked in the transaction
        inputs = [self.codec.encode(t.input, where=f"input of task {t.task_id} in session {sid}") for t in tasks]

        def stage(conn: sqlite3.Connection, now: float) -> None:
            if conn.execute("SELECT 1 FROM tasks WHERE session_id = ? AND task_id = ?", (sid, parent)).fetchone() is None:
                raise self._missing_task(conn, sid, parent)
            stage_tasks(conn, lease, parent, attempt, tasks, inputs, now)

        await self._run("add_tasks", stage, session_id=sid)

    # -- signals --------------------------------------------------------------------------

    async def send_signal(self, session_id: str, task_id: str, name: str, payload: Any) -> int:
        if not isinstance(name, str) or not name:
            raise ValidationError(f"signal for task {task_id} of session {session_id} has no name",
                                  session_id=session_id, task_id=task_id)
        text = self.codec.encode(payload, where=f"payload of signal {name!r} for task {task_id}")

        def send(conn: sqlite3.Connection, now: float) -> int:
            session = self._session(conn, session_id)
            if session.status.is_final:
                raise SessionStateError(
                    f"session {session_id} is {session.status.value}; a signal to a finished session would "
                    f"never be read. Resume the session first (`orchestrator resume {session_id}`)",
                    session_id=session_id,
                    task_id=task_id,
                    status=session.status.value,
                )
            if conn.execute("SELECT 1 FROM tasks WHERE session_id = ? AND task_id = ?",
                            (session_id, task_id)).fetchone() is None:
                raise self._missing_task(conn, session_id, task_id)
            seq = session.signal_seq + 1
            conn.execute(
                "INSERT INTO signals (session_id, task_id, name, v, payload, seq, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (session_id, task_id, name) DO UPDATE SET v = excluded.v, payload = excluded.payload, "
                "seq = excluded.seq, sent_at = excluded.sent_at",
                (session_id, task_id, name, SCHEMA_VERSION, text, seq, now),
            )
            wake_at = session.wake_at
            if session.status is SessionStatus.WAITING:
                wake_at = now if wake_at is None else min(wake_at, now)
            self._save(conn, replace(session, signal_seq=seq, wake_at=wake_at, updated_at=now))
            return seq

        return await self._run("send_signal", send, session_id=session_id)

    # -- listing ----------------------------------------------------------------------------

    async def list_sessions(
        self,
        status: SessionStatus,
        *,
        updated_before: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[SessionRecord]:
        _check_limit(limit)
        status = SessionStatus(status)
        after_time, after_id = _decode_cursor(cursor, float("-inf"))
        bound = float("inf") if updated_before is None else updated_before

        def query(conn: sqlite3.Connection, now: float) -> Page[SessionRecord]:
            rows = conn.execute(
                f"SELECT {SESSION_COLS}, status_time FROM sessions WHERE status = ? AND status_time <= ? "
                f"AND {_NOT_EXPIRED} AND (status_time, session_id) > (?, ?) "
                f"ORDER BY status_time, session_id LIMIT ?",
                (status.value, bound, now, after_time, after_id, limit + 1),
            ).fetchall()
            return self._page(rows, limit)

        return await self._run("list_sessions", query, write=False)

    async def list_project_sessions(
        self, project_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[SessionRecord]:
        _check_limit(limit)
        check_id("project", project_id)
        before_time, before_id = _decode_cursor(cursor, float("inf"))

        def query(conn: sqlite3.Connection, now: float) -> Page[SessionRecord]:
            rows = conn.execute(
                f"SELECT {SESSION_COLS}, created_at FROM sessions WHERE project_id = ? AND {_NOT_EXPIRED} "
                f"AND (created_at, session_id) < (?, ?) ORDER BY created_at DESC, session_id DESC LIMIT ?",
                (project_id, now, before_time, before_id, limit + 1),
            ).fetchall()
            return self._page(rows, limit)

        return await self._run("list_project_sessions", query, write=False)

    def _page(self, rows: list[Any], limit: int) -> Page[SessionRecord]:
        """Sessions from rows whose last column is the sort time; a cursor when more follow."""
        items = tuple(session_from_row(row, self.codec, self._where) for row in rows[:limit])
        cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            cursor = _encode_cursor(last[-1], last[0])
        return Page(items, cursor)

    # -- events ---------------------------------------------------------------------------

    async def append_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        rows = history.event_rows(events, self.codec, self.config.retention_days)
        sessions = sorted({e.session_id for e in events})

        def append(conn: sqlite3.Connection, _: float) -> None:
            for sid in sessions:
                self._require_session(conn, sid)
            history.insert_events(conn, rows)

        await self._run("append_events", append, session_id=sessions[0] if len(sessions) == 1 else None)

    async def read_events(
        self, session_id: str, *, after: str | None = None, limit: int = 100
    ) -> Page[Event]:
        _check_limit(limit)

        def read(conn: sqlite3.Connection, now: float) -> Page[Event]:
            self._require_session(conn, session_id)
            return history.read_events(conn, session_id, after, limit, now, self.codec, self._where)

        return await self._run("read_events", read, write=False, session_id=session_id)

    # -- metrics --------------------------------------------------------------------------

    async def record_metrics(self, writer: str, seq: int, summaries: Sequence[MetricSummary]) -> None:
        if not writer:
            raise ValidationError("record_metrics needs a writer id (one per process)")
        rows = history.metric_rows(writer, seq, summaries, self.config.retention_days)
        if rows:
            await self._run("record_metrics", lambda c, _: history.upsert_metrics(c, rows))

    async def read_metrics(
        self, day: str, *, name: str | None = None, agent: str | None = None
    ) -> list[MetricSummary]:
        history.hour_start(day, 0)
        return await self._run(
            "read_metrics", lambda c, now: history.read_metrics(c, day, name, agent, now, self._where), write=False
        )

    # -- user project history ---------------------------------------------------------------

    async def put_user_project(self, record: UserProjectRecord) -> UserProjectRecord:
        what = f"metadata of project {record.project_id} of user {record.user_id}"
        metadata_text = self.codec.encode(dict(record.metadata), where=what)
        return await self._run(
            "put_user_project",
            lambda c, now: projects.put_project(c, record, metadata_text, now, self.codec, self._where),
        )

    async def get_user_project(self, user_id: str, project_id: str) -> UserProjectRecord:
        check_id("user", user_id)
        check_id("project", project_id)
        return await self._run(
            "get_user_project",
            lambda c, _: projects.get_project(c, user_id, project_id, self.codec, self._where), write=False,
        )

    async def list_user_projects(
        self, user_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[UserProjectRecord]:
        _check_limit(limit)
        check_id("user", user_id)
        after = "" if cursor is None else check_id("project", cursor, where="the cursor of list_user_projects")
        return await self._run(
            "list_user_projects",
            lambda c, _: projects.list_projects(c, user_id, after, limit, self.codec, self._where), write=False,
        )

    async def record_download(self, user_id: str, project_id: str, download_id: str) -> UserProjectRecord:
        check_id("user", user_id)
        check_id("project", project_id)
        check_id("download", download_id)
        return await self._run(
            "record_download",
            lambda c, now: projects.record_download(c, user_id, project_id, download_id, now, self.codec,
                                                    self._where),
        )

    # -- pipelines and retention ------------------------------------------------------------

    async def put_pipeline(self, definition: PipelineDefinition) -> None:
        text = history.pipeline_text(definition, self.codec)
        await self._run("put_pipeline", lambda c, now: history.put_pipeline(c, definition, text, now))

    async def get_pipeline(self, name: str, version: str) -> PipelineDefinition:
        return await self._run(
            "get_pipeline", lambda c, _: history.get_pipeline(c, name, version, self.codec, self._where), write=False
        )

    async def purge(self, *, ended_before: float) -> PurgeReport:
        retention = self.config.retention_days
        return await self._run("purge", lambda c, now: history.purge(c, ended_before, now, retention))


# -- helpers ---------------------------------------------------------------------------------


def _trace_json(trace_context: Any, session_id: str) -> str:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(trace_context).items()):
        raise ValidationError(f"trace_context of session {session_id} must map strings to strings",
                              session_id=session_id)
    return dump(dict(trace_context))


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= _MAX_PAGE:
        raise ValidationError(f"limit={limit!r} is out of range; pass 1..{_MAX_PAGE} and page with the cursor")


def _encode_cursor(at: float, session_id: str) -> str:
    return base64.urlsafe_b64encode(dump([at, session_id]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None, default: float) -> tuple[float, str]:
    if cursor is None:
        return default, ""
    try:
        at, sid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(at), str(sid)
    except (ValueError, TypeError):
        raise ValidationError(
            f"cursor {cursor!r} was not returned by this store's listing; pass the cursor of the previous page, "
            f"or none for the first"
        ) from None
