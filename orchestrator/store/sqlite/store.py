"""`SQLiteStore`: the Store protocol on one SQLite file (WAL mode, several processes on a machine).

Each operation reads its rows inside one `BEGIN IMMEDIATE` transaction, lets the
rulebook (`orchestrator.store.rules`) decide, and writes; values are encoded and
size-checked before `BEGIN`, so nothing is half-written. Sessions live in `sessions`,
task rows in `tasks`, history in `history`, projects in `projects`, purges in
`retention`, the file in `connection` and `schema`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio.lowlevel

from orchestrator.clock import Clock
from orchestrator.codec import Codec
from orchestrator.errors import LeaseLostError, SessionNotFoundError, TaskNotFoundError
from orchestrator.store import rules
from orchestrator.store.config import SQLiteConfig
from orchestrator.store.protocol import WriteResult
from orchestrator.store.records import (
    ClaimPolicy,
    Event,
    Lease,
    MetricSummary,
    NewSession,
    NewTask,
    Page,
    PipelineDefinition,
    Progress,
    PurgeReport,
    SessionRecord,
    SessionSnapshot,
    SessionStatus,
    StoreDescription,
    TaskRecord,
    TaskWrite,
    TaskWriteKind,
    check_id,
)
from orchestrator.store.rules import Payload, SessionChange, SessionOp
from orchestrator.store.sqlite import history, sessions
from orchestrator.store.sqlite.cache import CacheOps
from orchestrator.store.sqlite.children import ChildOps
from orchestrator.store.sqlite.connection import SQLiteDatabase
from orchestrator.store.sqlite.encoding import dump
from orchestrator.store.sqlite.projects import ProjectOps
from orchestrator.store.sqlite.resources import ResourceOps
from orchestrator.store.sqlite.retention import RetentionPasses, purge
from orchestrator.store.sqlite.schedules import ScheduleOps
from orchestrator.store.sqlite.schema import file_problems, pragmas
from orchestrator.store.sqlite.tasks import EncodedWrite, TaskRow, apply_writes, read_task, stage_tasks

__all__ = ["SQLiteStore"]

T = TypeVar("T")
R = TypeVar("R")


class SQLiteStore(ChildOps, CacheOps, ResourceOps, ScheduleOps, ProjectOps):
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
        self._retention = RetentionPasses(self._db, config.retention_days)
        self._event_keys = rules.StoreEventKeys()

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
        """Create the file (0600) and tables if missing, or verify them (read-only: verify only).

        A file that is not an orchestrator store (not SQLite, other tables, a newer
        schema) raises SchemaError before anything is written to it. Opening never
        purges: writes do, at a bounded rate (`sqlite.retention`).
        """
        await self._db.open()

    async def provision(self) -> None:
        """`initialize()`: a file has no settings beyond what opening it applies."""
        await self.initialize()

    async def check(self) -> list[str]:
        return file_problems(self.path)

    async def settings(self) -> dict[str, str]:
        """The connection's journal mode, synchronous level and busy timeout, for `doctor` output."""
        return await self._run("settings", lambda conn, _: pragmas(conn), write=False)

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
        result = await self._db.run(op, fn, write=write, session_id=session_id)
        if write:
            self._retention.after_write()
        return result

    # -- shared reads and checks --------------------------------------------------------

    def _session(self, conn: sqlite3.Connection, session_id: str, now: float) -> SessionRecord:
        return sessions.read(conn, session_id, self.codec, self._where, now)

    def _settle(self, op: SessionOp[R], *, encoded: Mapping[str, str] | None = None,
                check: Callable[[sqlite3.Connection, SessionRecord], None] | None = None,
                then: Callable[[sqlite3.Connection, R, float], None] | None = None) -> Callable[
                    [sqlite3.Connection, float], R]:
        """The transaction body of a session operation (see `sqlite.sessions.settle`)."""

        def body(conn: sqlite3.Connection, now: float) -> R:
            result = sessions.settle(conn, op, now, codec=self.codec, where=self._where,
                                     default_ttl=self._default_ttl, encoded=encoded,
                                     check=None if check is None else lambda current: check(conn, current),
                                     record=lambda event: self._record(conn, event))
            if then is not None:
                then(conn, result, now)
            return result

        return body

    def _record(self, conn: sqlite3.Connection, event: Event) -> None:
        """Write an operation's own event in the operation's transaction (see `rules.history`)."""
        history.insert_events(conn, history.event_rows([self._event_keys.stamp(event)], self.codec,
                                                       self.config.retention_days))

    @property
    def _default_ttl(self) -> float:
        return self.config.retention_days * 86400.0

    # -- sessions -------------------------------------------------------------------------

    async def create_session(
        self,
        session: NewSession,
        tasks: Sequence[NewTask],
        *,
        owner: str | None = None,
        lease_seconds: float | None = None,
    ) -> SessionRecord:
        insert, sid = self._creation(session, tasks, owner=owner, lease_seconds=lease_seconds), session.session_id

        def create(conn: sqlite3.Connection, now: float) -> SessionRecord:
            insert(conn)
            return self._session(conn, sid, now)

        return await self._run("create_session", create, session_id=sid)

    def _creation(self, session: NewSession, tasks: Sequence[NewTask], *, owner: str | None = None,
                  lease_seconds: float | None = None,
                  created_event: bool = True) -> Callable[[sqlite3.Connection], None]:
        """Validate and encode a new session now; the insert it returns runs inside a transaction."""
        sid = session.session_id
        rules.check_graph(((t.task_id, t.depends_on) for t in tasks), where=f"session {sid}", session_id=sid)
        record = rules.new_session_record(session, len(tasks), owner=owner, lease_seconds=lease_seconds,
                                          now=self.clock.now())
        input_text = rules.encode(self.codec, Payload.SESSION_INPUT, session.input, session_id=sid)
        metadata_text = rules.encode(self.codec, Payload.SESSION_METADATA, dict(session.metadata), session_id=sid)
        trace_text = dump(dict(record.trace_context))
        rows: list[TaskRow] = [
            (t.task_id, t.agent, rules.encode(self.codec, Payload.TASK_INPUT, t.input, session_id=sid,
                                              task_id=t.task_id),
             t.priority, t.max_attempts, t.depends_on, t.added_by)
            for t in tasks
        ]
        ttl = session.ttl_seconds if session.ttl_seconds is not None else self._default_ttl

        def insert(conn: sqlite3.Connection) -> None:
            sessions.create(conn, record, input_text=input_text, metadata_text=metadata_text, trace_text=trace_text,
                            ttl_seconds=ttl, tasks=rows, where=self._where)
            if created_event:
                self._record(conn, rules.created_event(record, len(tasks)))

        return insert

    async def get_session(self, session_id: str) -> SessionRecord:
        return await self._run("get_session", lambda c, now: self._session(c, session_id, now), write=False,
                               session_id=session_id)

    async def load_session(self, session_id: str) -> SessionSnapshot:
        return await self._run("load_session", lambda c, now: sessions.load(c, session_id, self.codec, self._where, now),
                               write=False, session_id=session_id)

    async def get_task(self, session_id: str, task_id: str) -> TaskRecord:
        def get(conn: sqlite3.Connection, now: float) -> TaskRecord:
            task = read_task(conn, session_id, task_id, self.codec, self._where)
            if task is None:
                raise self._missing_task(conn, session_id, task_id, now)
            self._require_session(conn, session_id, now)
            return task

        return await self._run("get_task", get, write=False, session_id=session_id)

    def _require_session(self, conn: sqlite3.Connection, session_id: str, now: float) -> None:
        if not sessions.exists(conn, session_id, now):
            raise SessionNotFoundError.missing(session_id, self._where)

    def _missing_task(self, conn: sqlite3.Connection, session_id: str, task_id: str, now: float) -> Exception:
        self._require_session(conn, session_id, now)  # an unknown session says so, not "no task"
        return TaskNotFoundError.missing(session_id, task_id, self._where)

    async def claim_session(
        self,
        session_id: str,
        owner: str,
        lease_seconds: float,
        policy: ClaimPolicy = ClaimPolicy(),
        *,
        seen: SessionRecord | None = None,  # unused: the claim reads in its own transaction, at no request's cost
    ) -> Lease:
        op = rules.Claim(session_id, owner, lease_seconds, policy)
        if self._cas_claims:
            return await self._run("claim_session", self._settle(op), session_id=session_id)
        # The unsafe read-then-write of the negative control (see the class docstring).

        def decide(conn: sqlite3.Connection, now: float) -> tuple[SessionRecord, SessionChange]:
            current = self._session(conn, session_id, now)
            change = op.decide(current, now)
            return current, change

        current, change = await self._run("claim_session", decide, write=False, session_id=session_id)
        await anyio.lowlevel.checkpoint()

        def write(conn: sqlite3.Connection, _: float) -> Lease:
            new = change.apply(current, self._default_ttl)
            sessions.write(conn, new, change, {})
            return op.result(new)

        return await self._run("claim_session", write, session_id=session_id)

    async def renew_lease(self, lease: Lease, lease_seconds: float) -> tuple[Lease, SessionRecord]:
        return await self._run("renew_lease", self._settle(rules.Renew(lease.session_id, lease, lease_seconds)),
                               session_id=lease.session_id)

    async def release_lease(self, lease: Lease) -> None:
        await self._run("release_lease", self._settle(rules.Release(lease.session_id, lease)),
                        session_id=lease.session_id)

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
        op = rules.Update(sid, lease, progress, current_agents, metadata, trace_context)
        encoded = {}
        if metadata is not None:
            encoded["metadata"] = rules.encode(self.codec, Payload.SESSION_METADATA, metadata, session_id=sid)
        if trace_context is not None:
            encoded["trace_context"] = dump(dict(trace_context))
        await self._run("update_session", self._settle(op, encoded=encoded), session_id=sid)

    async def finish_session(
        self,
        lease: Lease,
        status: SessionStatus,
        reason: str | None = None,
        *,
        needs_human_reason: str | None = None,
    ) -> SessionRecord:
        op = rules.Finish(lease.session_id, lease, status, reason, needs_human_reason)
        return await self._run("finish_session", self._settle(op), session_id=lease.session_id)

    async def wait_session(self, lease: Lease, wake_at: float | None) -> bool:
        return await self._run("wait_session", self._settle(rules.Wait(lease.session_id, lease, wake_at)),
                               session_id=lease.session_id)

    async def request_cancel(self, session_id: str, reason: str) -> SessionRecord:
        return await self._run("request_cancel", self._settle(rules.Cancel(session_id, reason)),
                               session_id=session_id)

    async def set_needs_human(self, session_id: str, reason: str | None) -> SessionRecord:
        return await self._run("set_needs_human", self._settle(rules.FlagNeedsHuman(session_id, reason)),
                               session_id=session_id)

    # -- tasks ----------------------------------------------------------------------------

    async def write_tasks(self, lease: Lease, writes: Sequence[TaskWrite]) -> list[WriteResult]:
        if not writes:
            return []
        sid = lease.session_id
        encoded = [
            EncodedWrite(
                w,
                rules.encode(self.codec, Payload.OUTPUT, w.output, session_id=sid, task_id=w.task_id)
                if w.kind is TaskWriteKind.COMPLETE and w.output is not None else None,
                rules.encode(self.codec, Payload.CHECKPOINT, w.checkpoint, session_id=sid, task_id=w.task_id)
                if w.kind is TaskWriteKind.CHECKPOINT and w.checkpoint is not None else None,
            )
            for w in writes
        ]

        def write(conn: sqlite3.Connection, now: float) -> tuple[list[WriteResult], LeaseLostError | None]:
            return apply_writes(
                conn, lease, encoded, now, codec=self.codec, where=self._where,
                load_session=lambda: self._session(conn, sid, now),
                missing=lambda tid: self._missing_task(conn, sid, tid, now),
            )

        results, lost = await self._run("write_tasks", write, session_id=sid)
        if lost is not None:  # after the commit: the writes the fence allowed stay applied
            raise lost
        return results

    async def add_tasks(self, lease: Lease, parent: str, attempt: int, tasks: Sequence[NewTask]) -> None:
        sid = lease.session_id
        if not tasks:
            return
        inputs = [rules.encode(self.codec, Payload.TASK_INPUT, t.input, session_id=sid, task_id=t.task_id)
                  for t in tasks]

        def stage(conn: sqlite3.Connection, now: float) -> None:
            stage_tasks(conn, self._session(conn, sid, now), lease, parent, attempt, tasks, inputs, now, self._where)

        await self._run("add_tasks", stage, session_id=sid)

    # -- signals --------------------------------------------------------------------------

    async def send_signal(self, session_id: str, task_id: str, name: str, payload: Any) -> int:
        op = rules.Signal(session_id, task_id, name)
        text = rules.encode(self.codec, Payload.SIGNAL_PAYLOAD, payload, session_id=session_id, task_id=task_id,
                            name=name)

        def check(conn: sqlite3.Connection, _: SessionRecord) -> None:
            if conn.execute("SELECT 1 FROM tasks WHERE session_id = ? AND task_id = ?",
                            (session_id, task_id)).fetchone() is None:
                raise TaskNotFoundError.missing(session_id, task_id, self._where)

        def then(conn: sqlite3.Connection, seq: int, now: float) -> None:
            sessions.store_signal(conn, session_id, task_id, name, text, seq, now)

        return await self._run("send_signal", self._settle(op, check=check, then=then), session_id=session_id)

    # -- listing ----------------------------------------------------------------------------

    async def list_sessions(
        self,
        status: SessionStatus,
        *,
        updated_before: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[SessionRecord]:
        rules.check_page_limit(limit)
        status = SessionStatus(status)
        after = sessions.decode_cursor(cursor, float("-inf"))
        bound = float("inf") if updated_before is None else updated_before
        return await self._run(
            "list_sessions",
            lambda c, now: sessions.by_status(c, status, bound, after, limit, now, self.codec, self._where),
            write=False,
        )

    async def list_project_sessions(
        self, project_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[SessionRecord]:
        rules.check_page_limit(limit)
        check_id("project", project_id)
        before = sessions.decode_cursor(cursor, float("inf"))
        return await self._run(
            "list_project_sessions",
            lambda c, now: sessions.by_project(c, project_id, before, limit, now, self.codec, self._where),
            write=False,
        )

    async def find_sessions(
        self, *, user_id: str | None = None, pipeline_type: str | None = None, status: SessionStatus | None = None,
        limit: int = 100, cursor: str | None = None,
    ) -> Page[SessionRecord]:
        rules.check_page_limit(limit)
        flt = rules.SessionFilter(user_id, pipeline_type, status)
        before = flt.position(cursor)
        return await self._run("find_sessions", lambda c, now: sessions.by_filter(
            c, flt, before, limit, now, self.codec, self._where), write=False)

    # -- events ---------------------------------------------------------------------------

    async def append_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        # Not checked against the sessions (as on DynamoDB, where it would cost a read per
        # flush): the writer holds the session, and events expire with their retention.
        rows = history.event_rows(events, self.codec, self.config.retention_days)
        ids = {e.session_id for e in events}
        await self._run("append_events", lambda c, _: history.insert_events(c, rows),
                        session_id=ids.pop() if len(ids) == 1 else None)

    async def read_events(
        self, session_id: str, *, after: str | None = None, limit: int = 100
    ) -> Page[Event]:
        rules.check_page_limit(limit)

        def read(conn: sqlite3.Connection, now: float) -> Page[Event]:
            page = history.read_events(conn, session_id, after, limit, now, self.codec, self._where)
            if not page.items and after is None:  # as on DynamoDB: only an empty first page asks
                self._require_session(conn, session_id, now)
            return page

        return await self._run("read_events", read, write=False, session_id=session_id)

    # -- metrics --------------------------------------------------------------------------

    async def record_metrics(self, writer: str, seq: int, summaries: Sequence[MetricSummary]) -> None:
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
        return await self._run("purge", lambda c, now: purge(c, ended_before, now, retention))
