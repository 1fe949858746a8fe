"""`SessionRecorder`: one external session written by code that runs its own loop.

See `orchestrator.state` for the model (tokens, declared tasks, what the store holds).
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import anyio

from orchestrator.clock import Clock
from orchestrator.errors import (
    LeaseLostError,
    SessionStateError,
    TaskCompletedError,
)
from orchestrator.metrics import MetricsRecorder, session_sample
from orchestrator.store.protocol import Store, WriteResult
from orchestrator.store.records import (
    ErrorInfo,
    Event,
    Lease,
    MetricSample,
    NewSession,
    NewTask,
    OwnerKind,
    Progress,
    SessionRecord,
    SessionStatus,
    TaskRecord,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    WriteOutcome,
)

from orchestrator.state.values import (
    FINAL,
    TaskState,
    external_owner,
    final_status,
    new_tasks,
    undeclared_task,
    write_refusal,
)

__all__ = ["SessionRecorder", "external_owner"]

class SessionRecorder:
    """Writes one external session: task transitions, progress, logs, metrics, the end.

    Create it with `start()` (a new session) or `attach()` (continue one with its
    token). As an async context manager it finishes the session on exit: COMPLETED,
    FAILED with the exception, or CANCELLED when cancelled.
    """

    def __init__(
        self,
        store: Store,
        session: SessionRecord,
        token: str,
        tasks: Mapping[str, TaskState],
        *,
        clock: Clock,
        metrics: MetricsRecorder,
        owns_metrics: bool,
    ) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self._owns_metrics = owns_metrics
        self._token = token
        self._session = session
        self._lease = Lease(
            session_id=session.session_id,
            owner=external_owner(token),
            fence=session.fence,
            expires_at=None,
            signal_seq=session.signal_seq,
        )
        self._tasks = dict(tasks)
        self._metadata: dict[str, Any] = dict(session.metadata)
        self._progress = session.progress
        self._writer = f"ext-{secrets.token_hex(4)}"
        self._event_seq = 0
        self._status = session.status

    # -- construction -------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        store: Store,
        session_id: str | None = None,
        *,
        pipeline: str,
        tasks: Sequence[str | NewTask] = (),
        project_id: str | None = None,
        user_id: str | None = None,
        pipeline_type: str | None = None,
        pipeline_version: str = "1",
        input: Any = None,
        metadata: Mapping[str, Any] | None = None,
        ttl_seconds: float | None = None,
        clock: Clock | None = None,
        metrics: MetricsRecorder | None = None,
    ) -> SessionRecorder:
        """Create a RUNNING external session with all its tasks; returns its recorder.

        `tasks` are task ids (run by an agent of the same name) or `NewTask`s.
        `rec.token` is the only way to write the session from another process.
        """
        declared = new_tasks(tasks, session_id or "(new)")
        sid = session_id if session_id is not None else f"ext-{uuid.uuid4().hex}"
        new = NewSession(
            session_id=sid,
            pipeline=pipeline,
            pipeline_version=pipeline_version,
            input=input,
            project_id=project_id,
            user_id=user_id,
            pipeline_type=pipeline_type,
            owner_kind=OwnerKind.EXTERNAL,
            status=SessionStatus.RUNNING,
            metadata=dict(metadata or {}),
            ttl_seconds=ttl_seconds,
        )
        token = secrets.token_urlsafe(24)
        record = await store.create_session(new, declared, owner=external_owner(token), lease_seconds=None)
        states = {t.task_id: TaskState(t.agent, TaskStatus.PENDING, 0, None) for t in declared}
        clock = clock or store.clock
        owned = metrics is None
        return cls(
            store, record, token, states, clock=clock,
            metrics=metrics or MetricsRecorder(store, clock=clock), owns_metrics=owned,
        )

    @classmethod
    async def attach(
        cls,
        store: Store,
        session_id: str,
        token: str,
        *,
        clock: Clock | None = None,
        metrics: MetricsRecorder | None = None,
    ) -> SessionRecorder:
        """Continue an external session (e.g. in another process) with its token.

        Raises LeaseLostError for a wrong token, SessionStateError for a session that is
        not external or already finished, SessionNotFoundError for an unknown id.
        """
        snap = await store.load_session(session_id)
        session = snap.session
        if session.owner_kind is not OwnerKind.EXTERNAL:
            raise SessionStateError(
                f"session {session_id} is run by workers (owner kind {session.owner_kind.value}); only "
                f"external sessions can be attached. Use `orchestrator resume {session_id} --app APP:PIPELINE` instead",
                session_id=session_id,
            )
        if not hmac.compare_digest(session.lease_owner or "", external_owner(token)):
            raise LeaseLostError(
                f"session {session_id} was started under another token; the token given does not match. "
                f"Pass the `token` of the SessionRecorder that started it",
                session_id=session_id,
                fence=session.fence,
            )
        if session.status in FINAL:
            raise SessionStateError(
                f"session {session_id} already ended {session.status.value}"
                f"{f' ({session.reason})' if session.reason else ''}; start a new session to record more",
                session_id=session_id,
            )
        states = {
            t.task_id: TaskState(t.agent, t.status, t.attempt, t.started_at) for t in snap.tasks.values()
        }
        clock = clock or store.clock
        owned = metrics is None
        return cls(
            store, session, token, states, clock=clock,
            metrics=metrics or MetricsRecorder(store, clock=clock), owns_metrics=owned,
        )

    # -- properties ---------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def token(self) -> str:
        """The secret that lets another process `attach()`; keep it out of logs."""
        return self._token

    @property
    def project_id(self) -> str | None:
        return self._session.project_id

    @property
    def status(self) -> SessionStatus:
        return self._status

    @property
    def task_ids(self) -> tuple[str, ...]:
        return tuple(self._tasks)

    @property
    def metadata(self) -> Mapping[str, Any]:
        return dict(self._metadata)

    def task_status(self, task_id: str) -> TaskStatus:
        return self._task(task_id).status

    def __repr__(self) -> str:
        return f"SessionRecorder(session_id={self.session_id!r}, status={self._status.value})"

    # -- tasks ----------------------------------------------------------------------------

    async def task_started(self, task_id: str, *, input: Any = None) -> None:
        """Mark a declared task RUNNING (a new attempt if it ran before).

        `input` (if given) is recorded as an event of the task: a task's input is set
        when the session is created.
        """
        state = self._task(task_id)
        self._check_open()
        if state.status is TaskStatus.COMPLETED:
            raise TaskCompletedError(
                f"task {task_id!r} of session {self.session_id} is already COMPLETED; it cannot start "
                f"again (declare a new task for new work)",
                session_id=self.session_id,
                task_id=task_id,
            )
        if input is not None:
            self.store.codec.to_jsonable(input, where=f"input of task {task_id}")
        attempt = state.attempt + 1
        await self._write(TaskWrite(TaskWriteKind.START, task_id, attempt))
        state.status, state.attempt, state.started_at = TaskStatus.RUNNING, attempt, self.clock.now()
        if input is not None:
            await self.log(f"task {task_id} started", task_id=task_id, input=input)
        await self._update_session(current_agents=self._running_agents())

    async def progress(
        self,
        task_id: str | None,
        current: int,
        total: int,
        *,
        phase: str | None = None,
        step: str | None = None,
    ) -> None:
        """Report progress of a running task (if `task_id`) and, always, of the session."""
        prog = Progress(current=current, total=total, phase=phase, step=step)
        self._check_open()
        if task_id is not None:
            state = self._task(task_id)
            if state.status is not TaskStatus.RUNNING:
                raise SessionStateError(
                    f"task {task_id!r} of session {self.session_id} is {state.status.value}, not RUNNING; "
                    f"call task_started({task_id!r}) before reporting its progress",
                    session_id=self.session_id,
                    task_id=task_id,
                )
            await self._write(TaskWrite(TaskWriteKind.PROGRESS, task_id, state.attempt, progress=prog))
        await self._update_session(progress=prog)

    async def task_completed(self, task_id: str, output: Any = None) -> None:
        """Record a task's output (starting it first if it was never started); exactly once."""
        state = self._task(task_id)
        self._check_open()
        if state.status is TaskStatus.COMPLETED:
            raise TaskCompletedError(
                f"task {task_id!r} of session {self.session_id} is already COMPLETED; the second "
                f"completion is discarded",
                session_id=self.session_id,
                task_id=task_id,
            )
        self.store.codec.to_jsonable(output, where=f"output of task {task_id}")
        if state.status is not TaskStatus.RUNNING:
            await self.task_started(task_id)
        await self._write(TaskWrite(TaskWriteKind.COMPLETE, task_id, state.attempt, output=output))
        self._ended(task_id, TaskStatus.COMPLETED)
        await self._update_session(current_agents=self._running_agents())

    async def task_failed(self, task_id: str, error: BaseException | str) -> None:
        """Record a task's failure; it may be started again later (a new attempt)."""
        state = self._task(task_id)
        self._check_open()
        info = (
            ErrorInfo.from_exception(error, retryable=False)
            if isinstance(error, BaseException)
            else ErrorInfo(type="error", message=str(error), retryable=False)
        )
        if state.status is TaskStatus.COMPLETED:
            raise TaskCompletedError(
                f"task {task_id!r} of session {self.session_id} is already COMPLETED; it cannot fail",
                session_id=self.session_id,
                task_id=task_id,
            )
        if state.status is not TaskStatus.RUNNING:
            await self.task_started(task_id)
        await self._write(TaskWrite(TaskWriteKind.FAIL, task_id, state.attempt, error=info))
        self._ended(task_id, TaskStatus.FAILED)
        await self._update_session(current_agents=self._running_agents())

    async def get_task(self, task_id: str) -> TaskRecord:
        """The task as stored (status, attempts, output, progress)."""
        self._task(task_id)
        return await self.store.get_task(self.session_id, task_id)

    # -- session --------------------------------------------------------------------------

    async def update(
        self,
        *,
        progress: Progress | None = None,
        current_agents: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Set the session's progress, current agents, or merge keys into its metadata."""
        self._check_open()
        merged = None
        if metadata is not None:
            merged = {**self._metadata, **metadata}
            self.store.codec.to_jsonable(merged, where=f"metadata of session {self.session_id}")
        await self._update_session(progress=progress, current_agents=current_agents, metadata=merged)

    async def log(self, message: str, *, task_id: str | None = None, level: str = "INFO", **data: Any) -> None:
        """Append a log line to the session's event history (through the codec: secrets redacted)."""
        if task_id is not None:
            self._task(task_id)
        self.store.codec.to_jsonable(data, where=f"log data of session {self.session_id}")
        self._event_seq += 1
        await self.store.append_events([
            Event(
                session_id=self.session_id,
                kind="log",
                at=self.clock.now(),
                task_id=task_id,
                message=message,
                data=data,
                writer=self._writer,
                seq=self._event_seq,
                level=level.upper(),
            )
        ])

    async def metric(
        self,
        name: str,
        agent: str,
        *,
        duration_ms: float | None = None,
        value: float | None = None,
        error: bool = False,
        at: float | None = None,
    ) -> None:
        """Add a metric sample (buffered; flushed at `finish()` or by `flush_metrics()`)."""
        self.metrics.observe(
            MetricSample(
                name=name,
                agent=agent,
                at=self.clock.now() if at is None else at,
                duration_ms=duration_ms,
                value=value,
                error=error,
            )
        )

    async def flush_metrics(self) -> None:
        await self.metrics.flush()

    async def finish(
        self,
        status: SessionStatus | str = SessionStatus.COMPLETED,
        reason: str | None = None,
        *,
        needs_human_reason: str | None = None,
    ) -> SessionRecord:
        """End the session COMPLETED, FAILED or CANCELLED; flushes metrics.

        FAILED/CANCELLED cancel the tasks still running; COMPLETED refuses while a task
        runs (complete or fail it first).
        """
        final = final_status(status, self.session_id)
        self._check_open()
        running = [tid for tid, st in self._tasks.items() if st.status is TaskStatus.RUNNING]
        if final is SessionStatus.COMPLETED and running:
            raise SessionStateError(
                f"session {self.session_id} cannot end COMPLETED while task(s) {', '.join(running)} run; "
                f"call task_completed() or task_failed() for them first",
                session_id=self.session_id,
            )
        if running:
            why = reason or f"session ended {final.value}"
            writes = [
                TaskWrite(TaskWriteKind.CANCEL, tid, self._tasks[tid].attempt, reason=why) for tid in running
            ]
            await self._check_results(await self.store.write_tasks(self._lease, writes))
            for tid in running:
                self._tasks[tid].status = TaskStatus.CANCELLED
        record = await self.store.finish_session(
            self._lease, final, reason, needs_human_reason=needs_human_reason
        )
        self._status = record.status
        self._session = record
        sample = session_sample(record, self.clock.now())
        if sample is not None:
            self.metrics.observe(sample)
        if self._owns_metrics:
            await self.metrics.flush()
        return record

    async def __aenter__(self) -> SessionRecorder:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status in FINAL:
            if self._owns_metrics:
                with anyio.CancelScope(shield=True):
                    await self.metrics.flush()
            return
        with anyio.CancelScope(shield=True):
            if exc is None:
                await self.finish(SessionStatus.COMPLETED)
            elif isinstance(exc, Exception):
                await self.finish(SessionStatus.FAILED, f"{type(exc).__name__}: {exc}")
            else:
                await self.finish(SessionStatus.CANCELLED, f"stopped by {type(exc).__name__}")

    # -- internals ------------------------------------------------------------------------

    def _task(self, task_id: str) -> TaskState:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise undeclared_task(self.session_id, task_id, self._tasks) from None

    def _check_open(self) -> None:
        if self._status in FINAL:
            raise SessionStateError.not_allowed(self.session_id, self._status.value, "recording",
                                                "it ended; start a new session to record more")

    def _running_agents(self) -> list[str]:
        return sorted({st.agent for st in self._tasks.values() if st.status is TaskStatus.RUNNING})

    def _ended(self, task_id: str, status: TaskStatus) -> None:
        state = self._tasks[task_id]
        now = self.clock.now()
        state.status = status
        duration = None if state.started_at is None else max(0.0, now - state.started_at) * 1000.0
        self.metrics.observe(
            MetricSample(name="task", agent=state.agent, at=now, duration_ms=duration,
                         error=status is TaskStatus.FAILED)
        )

    async def _write(self, write: TaskWrite) -> None:
        await self._check_results(await self.store.write_tasks(self._lease, [write]))

    async def _check_results(self, results: Sequence[WriteResult]) -> None:
        for result in results:
            if result.outcome is WriteOutcome.COMPLETED_ELSEWHERE:
                self._tasks[result.task_id].status = TaskStatus.COMPLETED
            error = write_refusal(result, self.session_id)
            if error is not None:
                raise error

    async def _update_session(
        self,
        *,
        progress: Progress | None = None,
        current_agents: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if progress is None and current_agents is None and metadata is None:
            return
        await self.store.update_session(
            self._lease, progress=progress, current_agents=current_agents, metadata=metadata
        )
        if progress is not None:
            self._progress = progress
        if metadata is not None:
            self._metadata = metadata
