"""`SessionRunner`: one claimed session, driven until it ends, waits, or loses its lease.

Its dispatcher is the only writer of task transitions: an agent's completion and the
starts it unlocks go to the store as one `write_tasks` batch (one request where the
backend has transactions), and agents are launched only after their START is durable.
Around it run the lease keeper (renewal, cancel requests, signals, the local deadline)
and a flusher (coalesced progress, events, metrics).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

from orchestrator.clock import Clock
from orchestrator.errors import (
    LeaseLostError,
    OrchestratorError,
)
from orchestrator.events import EventBuffer
from orchestrator.graph import DagState, Pipeline
from orchestrator.scheduler.lease_keeper import LeaseKeeper
from orchestrator.metrics import MetricsRecorder, session_sample
from orchestrator.store.protocol import Store, WriteResult
from orchestrator.store.records import (
    ErrorInfo,
    Lease,
    MetricSample,
    Progress,
    SessionRecord,
    SessionSnapshot,
    SessionStatus,
    SignalRecord,
    TaskRecord,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    WriteOutcome,
)
from orchestrator.scheduler.options import RunOptions, RunResult, WorkerLimits
from orchestrator.scheduler.attempt import AgentOutcome, run_attempt
from orchestrator.telemetry import Telemetry





__all__ = ["SessionRunner"]

_log = logging.getLogger("orchestrator.scheduler")


@dataclass(slots=True)
class _Running:
    task_id: str
    agent: str
    attempt: int
    scope: anyio.CancelScope


class SessionRunner:
    """Runs one claimed session until it ends, waits, or the lease is lost."""

    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        lease: Lease,
        snapshot: SessionSnapshot,
        *,
        options: RunOptions,
        clock: Clock,
        telemetry: Telemetry,
        limits: WorkerLimits | None = None,
        redrive: bool = False,
        abandoned: bool = False,
        metrics: MetricsRecorder | None = None,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.lease = lease
        self.clock = clock
        self.options = options
        self.telemetry = telemetry
        self.limits = limits
        self.session: SessionRecord = snapshot.session
        self.session_id = snapshot.session.session_id
        self.session_input = snapshot.session.input
        self._redrive = redrive
        # Taken over from an owner that stopped without a session write: its FAILED,
        # SKIPPED and CANCELLED task states decided nothing, so they run again.
        self._abandoned = abandoned
        self._tasks: dict[str, TaskRecord] = dict(snapshot.tasks)
        self._signals: dict[tuple[str, str], SignalRecord] = dict(snapshot.signals)
        self.dag = DagState.from_records(snapshot.tasks, snapshot.edges)
        self.outputs: dict[str, Any] = {
            tid: t.output for tid, t in snapshot.tasks.items() if t.status is TaskStatus.COMPLETED
        }
        # Event keys are (at, writer, seq): the fence keeps a later run by the same worker distinct.
        self.events = EventBuffer(store, self.session_id, f"{lease.owner}.{lease.fence}", clock)
        # Metric rows are per writer; a worker passes one recorder shared by its sessions.
        self.metrics = metrics or MetricsRecorder(store, clock=clock, flush_interval=options.flush_interval)
        self._own_metrics = metrics is None
        self._rng = random.Random(options.seed)
        self._running: dict[str, _Running] = {}
        self._agent_running: dict[str, int] = {}
        self._not_before: dict[str, float] = {}
        self._waiting: dict[str, float | None] = {}  # task -> wait deadline
        self._attempts: dict[str, int] = {tid: t.attempt for tid, t in snapshot.tasks.items()}
        self._progress_dirty: dict[str, tuple[int, Progress]] = {}
        self._session_dirty = True
        self._stop_reason: str | None = None
        self._cancel_reason: str | None = None
        self._failed: dict[str, str] = {}
        self._send, self._receive = anyio.create_memory_object_stream[tuple[Any, ...]](math.inf)
        self._pending_outcomes: list[tuple[TaskWrite, Any]] = []
        self._wait_seen: dict[str, int] = {}  # waiting task -> signal seq when it began waiting
        self._keeper = LeaseKeeper(self)
        self.stopping = False

    # -- helpers used by TaskContext ------------------------------------------------------

    @property
    def dag_known(self) -> Mapping[str, TaskRecord]:
        return self._tasks

    def snapshot_task(self, task_id: str) -> TaskRecord | None:
        return self._tasks.get(task_id)

    def signal_for(self, task_id: str, name: str) -> SignalRecord | None:
        return self._signals.get((task_id, name))

    def report_progress(self, task_id: str, attempt: int, progress: Progress) -> None:
        self._progress_dirty[task_id] = (attempt, progress)

    def touch(self, task_id: str) -> None:
        self._keeper.touch()

    async def write_now(self, write: TaskWrite) -> None:
        """A fenced write outside the dispatcher (checkpoints); raises if it did not land."""
        self._keeper.check()
        [result] = await self.store.write_tasks(self.lease, [write])
        if result.ok and write.kind is TaskWriteKind.CHECKPOINT:
            # The next attempt in this run starts from it, as one after a crash would.
            self._tasks[write.task_id] = _with(self._tasks[write.task_id], checkpoint=write.checkpoint)
        if not result.ok:
            raise LeaseLostError(
                f"task {write.task_id} of session {self.session_id}: {write.kind.value} was rejected "
                f"({result.outcome.value}); another owner has it",
                session_id=self.session_id,
                task_id=write.task_id,
            )

    def notify(self, *message: Any) -> None:
        self._send.send_nowait(message)

    def lease_lost(self, error: LeaseLostError) -> None:
        """Called by the lease keeper: stop the agents and every further write."""
        if self._stop_reason is None:
            self._stop_reason = str(error)
            self.stopping = True
            self.notify("lost", error)

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> RunResult:
        links = dict(self.session.trace_context) or None
        with self.telemetry.session_span(
            self.session_id, self.pipeline.name, resumed=links is not None, links_from=links
        ) as span:
            self._span = span
            if links is None:
                ctx = self.telemetry.inject()
                if ctx:
                    await self.store.update_session(self.lease, trace_context=ctx)
            try:
                try:
                    async with anyio.create_task_group() as tg:
                        self._tg = tg
                        await tg.start(self._keeper.run)
                        tg.start_soon(self._flush_loop)
                        try:
                            result = await self._dispatch(tg)
                        finally:
                            tg.cancel_scope.cancel()
                except BaseExceptionGroup as group:
                    raise _unwrap(group) from None
            except LeaseLostError as exc:
                span.record_exception(exc)
                raise
            finally:
                with anyio.CancelScope(shield=True):
                    await self._final_flush()
            if result.status is SessionStatus.COMPLETED:
                span.set_status_ok()
            return result

    async def _dispatch(self, tg: TaskGroup) -> RunResult:
        await self._prepare()
        while True:
            self._raise_if_lost()
            writes, after = self._pick_starts()
            if writes or self._pending_outcomes:
                await self._commit(writes, after, tg)
                continue
            if not self._running:
                ended = await self._maybe_end()
                if ended is not None:
                    return ended
                if self._pending_outcomes or self._startable():
                    continue
            message = await self._receive.receive()
            await self._handle(message, tg)
            # Drain whatever else arrived, so one batch carries many transitions.
            while True:
                try:
                    message = self._receive.receive_nowait()
                except anyio.WouldBlock:
                    break
                await self._handle(message, tg)

    # -- startup ------------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Decide what every stored task needs: keep, reset (redrive), wake or schedule."""
        resets: list[TaskWrite] = []
        for tid, task in self._tasks.items():
            if task.status in (TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED):
                if self._redrive or (self._abandoned and task.fence < self.lease.fence):
                    resets.append(TaskWrite(TaskWriteKind.RESET, tid, task.attempt))
                elif task.status is TaskStatus.FAILED:
                    # Decided by an earlier owner of this fence line; our finish records it.
                    message = task.last_error.message if task.last_error else "no error stored"
                    self._failed.setdefault(tid, f"task {tid} failed: {message}")
            elif task.status is TaskStatus.WAITING:
                self._waiting[tid] = task.not_before
                self._wait_seen[tid] = self.session.wait_seq
                self.dag.mark(tid, TaskStatus.WAITING)
                if task.not_before is not None:
                    self._tick_at(task.not_before)
            elif task.status is TaskStatus.RUNNING:
                self.dag.mark(tid, TaskStatus.PENDING)  # interrupted by a crash: run it again
            elif task.status is TaskStatus.PENDING and task.not_before is not None:
                self._schedule_wake(tid, task.not_before)
        for tid in sorted(self._failed):
            for dep in sorted(self.dag.dependents_closure(tid)):
                if not self.dag.status(dep).is_final:
                    self._queue(TaskWrite(TaskWriteKind.SKIP, dep, self._attempts[dep], reason=f"{tid} failed"),
                                self._after_final(dep))
                    self._mark_final(dep, TaskStatus.SKIPPED)
        if resets:
            results = await self.store.write_tasks(self.lease, resets)
            for write, result in zip(resets, results):
                self._check(write, result)
                if result.ok:
                    self.dag.mark(write.task_id, TaskStatus.PENDING)
                    self._tasks[write.task_id] = _with(self._tasks[write.task_id], attempt_base=write.attempt)
            self.events.add("redrive", f"redrive {self.session.redrive_count}: reset {len(resets)} task(s)")
        self._wake_due_waits()

    # -- picking and committing ---------------------------------------------------------

    def _pick_starts(self) -> tuple[list[TaskWrite], list[tuple[str, str]]]:
        if self.stopping or self._cancel_reason is not None:
            return [], []
        writes: list[TaskWrite] = []
        launches: list[tuple[str, str]] = []
        free = self.options.concurrency - len(self._running)
        if free <= 0:
            return [], []
        now = self.clock.now()
        per_agent = dict(self._agent_running)
        for tid in self._candidates(free):
            if free <= 0:
                break
            if tid in self._running:
                continue
            nb = self._not_before.get(tid)
            if nb is not None and nb > now:
                continue
            task = self._tasks[tid]
            limit = self.options.agent_concurrency.get(task.agent)
            if limit is not None and per_agent.get(task.agent, 0) >= limit:
                continue
            if tid in self._waiting:
                writes.append(TaskWrite(TaskWriteKind.WAKE, tid, self._attempts[tid]))
                launches.append((tid, "wake"))
            else:
                writes.append(TaskWrite(TaskWriteKind.START, tid, self._attempts[tid] + 1))
                launches.append((tid, "start"))
            per_agent[task.agent] = per_agent.get(task.agent, 0) + 1
            free -= 1
            self.dag.mark(tid, TaskStatus.RUNNING)
        return writes, launches

    async def _commit(self, writes: list[TaskWrite], launches: list[tuple[str, str]], tg: TaskGroup) -> None:
        """One batch: pending outcomes first, then starts; launch agents once durable."""
        outcomes = self._pending_outcomes
        self._pending_outcomes = []
        batch = [w for w, _ in outcomes] + writes
        self._raise_if_lost()
        results = await self.store.write_tasks(self.lease, batch)
        for (write, after), result in zip(outcomes, results):
            self._check(write, result)
            await after(result)
        for write, (tid, how), result in zip(writes, launches, results[len(outcomes):]):
            self._check(write, result)
            if result.outcome is WriteOutcome.COMPLETED_ELSEWHERE:
                await self._adopt(tid, result)
                continue
            self._attempts[tid] = write.attempt
            wait_deadline = self._waiting.pop(tid, None)  # a woken wait keeps its deadline
            self._wait_seen.pop(tid, None)
            self._launch(tid, write.attempt, wait_deadline, tg)

    def _queue(self, write: TaskWrite, after: Any) -> None:
        self._pending_outcomes.append((write, after))

    def _check(self, write: TaskWrite, result: WriteResult) -> None:
        if result.outcome is WriteOutcome.STALE:
            raise LeaseLostError(
                f"session {self.session_id}: {write.kind.value} of task {write.task_id} was rejected "
                f"because another writer changed it (fence {result.task.fence if result.task else '?'}, "
                f"ours {self.lease.fence}); stopping",
                session_id=self.session_id,
                task_id=write.task_id,
            )

    async def _adopt(self, tid: str, result: WriteResult) -> None:
        """The task was completed by someone else: take its output, and any tasks it added."""
        assert result.task is not None
        self._tasks[tid] = result.task
        self.outputs[tid] = result.task.output
        self._mark_final(tid, TaskStatus.COMPLETED)
        self.events.add("adopt", f"task {tid} was completed by another owner; adopted its output", task_id=tid)
        snapshot = await self.store.load_session(self.session_id)
        fresh = {k: v for k, v in snapshot.tasks.items() if k not in self._tasks}
        if fresh:
            self._add_to_dag(fresh, snapshot)

    def _add_to_dag(self, fresh: Mapping[str, TaskRecord], snapshot: SessionSnapshot | None = None) -> None:
        from orchestrator.store.records import NewTask

        self._tasks.update(fresh)
        self.dag.add_tasks(
            [
                NewTask(t.task_id, t.agent, t.input, t.priority, t.max_attempts, t.depends_on, t.added_by)
                for t in fresh.values()
            ]
        )
        for tid, t in fresh.items():
            self._attempts[tid] = t.attempt
            if t.status is TaskStatus.COMPLETED:
                self.outputs[tid] = t.output
                self.dag.mark(tid, TaskStatus.COMPLETED)
        self._session_dirty = True

    def _launch(self, tid: str, attempt: int, wait_deadline: float | None, tg: TaskGroup) -> None:
        task = self._tasks[tid]
        scope = anyio.CancelScope()
        self._running[tid] = _Running(tid, task.agent, attempt, scope)
        self._agent_running[task.agent] = self._agent_running.get(task.agent, 0) + 1
        self._session_dirty = True
        spec = self.pipeline.agents[task.agent]
        deps = self.dag.outputs_of_deps(tid, self.outputs)
        task_input = task.input if task.input is not None else self.session_input
        tg.start_soon(
            run_attempt, self, spec, tid, attempt, task_input, deps, task.checkpoint, wait_deadline, scope,
        )

    # -- handling agent outcomes ----------------------------------------------------------

    async def _handle(self, message: tuple[Any, ...], tg: TaskGroup) -> None:
        kind = message[0]
        if kind == "outcome":
            await self._on_outcome(message[1])
        elif kind == "tick":
            self._wake_due_waits()
        elif kind == "signal":
            await self._refresh_signals()
        elif kind == "cancel":
            await self._on_cancel(message[1])
        elif kind == "lost":
            raise message[1]

    async def _on_outcome(self, outcome: AgentOutcome) -> None:
        tid = outcome.task_id
        running = self._running.pop(tid, None)
        if running is not None:
            self._agent_running[running.agent] -= 1
        self._session_dirty = True
        task = self._tasks[tid]
        now = self.clock.now()
        if outcome.duration is not None:
            self.metrics.observe(MetricSample(
                "task", task.agent, now, duration_ms=outcome.duration * 1000, error=outcome.error is not None
            ))
        if self.stopping:
            return
        if outcome.suspended is not None:
            self._waiting[tid] = outcome.suspended.deadline
            self._wait_seen[tid] = self.lease.signal_seq
            write = TaskWrite(TaskWriteKind.WAIT, tid, outcome.attempt, not_before=outcome.suspended.deadline)
            self.dag.mark(tid, TaskStatus.WAITING)
            self.events.add("wait", f"task {tid} waits for signal {outcome.suspended.name!r}", task_id=tid,
                            data={"signal": outcome.suspended.name, "deadline": outcome.suspended.deadline})

            async def after_wait(result: WriteResult) -> None:
                if outcome.suspended and outcome.suspended.deadline is not None:
                    self._tick_at(outcome.suspended.deadline)

            self._queue(write, after_wait)
            return
        if outcome.cancelled:
            self._mark_final(tid, TaskStatus.CANCELLED)
            self._queue(TaskWrite(TaskWriteKind.CANCEL, tid, outcome.attempt, reason=self._cancel_reason or
                                  "cancelled"), self._after_final(tid))
            return
        if outcome.error is None:
            if outcome.added:
                await self.store.add_tasks(self.lease, tid, outcome.attempt, list(outcome.added.values()))
            last = self._progress_dirty.pop(tid, None)
            write = TaskWrite(TaskWriteKind.COMPLETE, tid, outcome.attempt, output=outcome.output,
                              progress=last[1] if last and last[0] == outcome.attempt else None)

            async def after_complete(result: WriteResult) -> None:
                if result.outcome is WriteOutcome.COMPLETED_ELSEWHERE:
                    await self._adopt(tid, result)
                    return
                self.outputs[tid] = outcome.output
                if outcome.added:
                    fresh = {}
                    for new in outcome.added.values():
                        if new.task_id in self._tasks:
                            continue
                        fresh[new.task_id] = TaskRecord(
                            task_id=new.task_id, agent=new.agent, status=TaskStatus.PENDING, input=new.input,
                            priority=new.priority, max_attempts=new.max_attempts, depends_on=new.depends_on,
                            added_by=new.added_by,
                        )
                    if fresh:
                        self._add_to_dag(fresh)

            # Optimistic: dependents become ready now, so their STARTs join this batch.
            # Agents launch only after the batch lands, by then the outcome is known.
            self._mark_final(tid, TaskStatus.COMPLETED)
            self._queue(write, after_complete)
            return
        await self._on_failure(tid, outcome)

    async def _on_failure(self, tid: str, outcome: AgentOutcome) -> None:
        assert outcome.error is not None
        task = self._tasks[tid]
        spec = self.pipeline.agents[task.agent]
        error = ErrorInfo.from_exception(outcome.error, retryable=spec.retry.is_retryable(outcome.error))
        used = outcome.attempt - task.attempt_base
        if error.retryable and used < task.max_attempts:
            delay = spec.retry.delay(used, self._rng)
            not_before = self.clock.now() + delay
            write = TaskWrite(TaskWriteKind.RETRY, tid, outcome.attempt, error=error, not_before=not_before)
            self.dag.mark(tid, TaskStatus.PENDING)
            self._not_before[tid] = not_before
            self.events.add("retry", f"task {tid} attempt {outcome.attempt} failed: {error.message}; retrying "
                            f"in {delay:.2f}s", task_id=tid, level="WARNING",
                            data={"attempt": outcome.attempt, "error": error.type, "delay": delay})
            self._span.add_event("retry", {
                "orchestrator.task.id": tid, "orchestrator.attempt": outcome.attempt,
                "orchestrator.error.type": error.type, "orchestrator.retry.delay_s": delay,
            })

            async def after_retry(result: WriteResult) -> None:
                self._schedule_wake(tid, not_before)

            self._queue(write, after_retry)
            return
        reason = f"task {tid} failed after {used} attempt(s): {error.type.rsplit('.', 1)[-1]}: {error.message}"
        self._failed[tid] = reason
        self.events.add("failed", reason, task_id=tid, level="ERROR", data={"attempt": outcome.attempt})
        self._queue(TaskWrite(TaskWriteKind.FAIL, tid, outcome.attempt, error=error),
                    self._after_final(tid))
        self._mark_final(tid, TaskStatus.FAILED)
        for dep in sorted(self.dag.dependents_closure(tid)):
            if self.dag.status(dep).is_final or dep in self._running:
                continue
            self._queue(TaskWrite(TaskWriteKind.SKIP, dep, self._attempts[dep], reason=f"{tid} failed"),
                        self._after_final(dep))
            self._mark_final(dep, TaskStatus.SKIPPED)
        if self.options.fail_fast:
            await self._cancel_all(f"fail-fast: {reason}")

    def _after_final(self, tid: str) -> Any:
        """After a FAIL/SKIP/CANCEL write: if someone completed the task meanwhile, adopt it."""
        async def after(result: WriteResult) -> None:
            if result.outcome is WriteOutcome.COMPLETED_ELSEWHERE:
                await self._adopt(tid, result)

        return after

    def _mark_final(self, tid: str, status: TaskStatus) -> None:
        self.dag.mark(tid, status)
        self._waiting.pop(tid, None)
        self._not_before.pop(tid, None)
        self._session_dirty = True

    # -- waits, timers, signals, cancellation ------------------------------------------

    def _schedule_wake(self, tid: str, at: float) -> None:
        """A retry's backoff: the task may start at `at`, not before."""
        self._not_before[tid] = at
        self._tick_at(at)

    def _tick_at(self, at: float) -> None:
        async def tick() -> None:
            await self.clock.sleep(max(0.0, at - self.clock.now()))
            self.notify("tick")

        self._tg.start_soon(tick)

    def _wake_due_waits(self) -> None:
        """Make waiting tasks runnable when their signal arrived or their deadline passed."""
        now = self.clock.now()
        for tid, deadline in list(self._waiting.items()):
            if self.dag.status(tid) is not TaskStatus.WAITING:
                continue
            seen = self._wait_seen.get(tid, 0)
            has_signal = any(key[0] == tid and sig.seq > seen for key, sig in self._signals.items())
            if has_signal or (deadline is not None and deadline <= now):
                self.dag.mark(tid, TaskStatus.PENDING)
        for tid, nb in list(self._not_before.items()):
            if nb <= now:
                self._not_before.pop(tid, None)

    async def _refresh_signals(self) -> None:
        snapshot = await self.store.load_session(self.session_id)
        self._signals = dict(snapshot.signals)
        self.lease = Lease(self.lease.session_id, self.lease.owner, self.lease.fence, self.lease.expires_at,
                           snapshot.session.signal_seq)
        self.events.add("signal", f"signal sequence now {snapshot.session.signal_seq}")
        self._wake_due_waits()

    async def _on_cancel(self, reason: str) -> None:
        if self._cancel_reason is None:
            self.events.add("cancel", f"cancel requested: {reason}", level="WARNING")
            await self._cancel_all(reason)

    async def _cancel_all(self, reason: str) -> None:
        self._cancel_reason = self._cancel_reason or reason
        for running in self._running.values():
            running.scope.cancel()
        for tid in self.dag.unfinished():
            if tid in self._running:
                continue
            self._queue(TaskWrite(TaskWriteKind.CANCEL, tid, self._attempts[tid], reason=reason),
                        self._after_final(tid))
            self._mark_final(tid, TaskStatus.CANCELLED)

    # -- ending -------------------------------------------------------------------------

    def _candidates(self, free: int) -> list[str]:
        """Ready tasks in priority order: enough to fill `free` slots past backoffs and agent limits."""
        skip = len(self._not_before) + sum(self._agent_running.values())
        limit = free + skip + 8
        while True:
            ready = self.dag.ready(limit=limit)
            if len(ready) < limit or limit >= self.dag.total:
                return ready
            usable = sum(1 for t in ready if t not in self._not_before)
            if usable >= free * 2:
                return ready
            limit *= 4

    def _startable(self) -> bool:
        now = self.clock.now()
        return any(
            self._not_before.get(t, now) <= now for t in self.dag.ready(limit=len(self._not_before) + 1)
        )

    async def _maybe_end(self) -> RunResult | None:
        """With nothing running and nothing to start: finish, go WAITING, or wait for a timer."""
        unfinished = self.dag.unfinished()
        if not unfinished:
            return await self._finish()
        if self._not_before:
            return None  # a retry's backoff is running: its timer will tick
        if self._waiting and self._cancel_reason is None:
            return await self._go_waiting()
        # Blocked for good (a dependency can never complete): skip what is left.
        for tid in sorted(unfinished):
            self._queue(TaskWrite(TaskWriteKind.SKIP, tid, self._attempts[tid], reason="blocked by an unfinished dependency"),
                        self._after_final(tid))
            self._mark_final(tid, TaskStatus.SKIPPED)
        return None

    async def _go_waiting(self) -> RunResult | None:
        deadlines = [d for d in self._waiting.values() if d is not None]
        wake_at = min(deadlines) if deadlines else None
        await self._flush_progress()
        if not await self.store.wait_session(self.lease, wake_at):
            await self._refresh_signals()
            return None
        self.events.add("wait", f"session waits for signals until {wake_at}")
        return self._result(SessionStatus.WAITING, "waiting for a signal")

    async def _finish(self) -> RunResult:
        statuses = {tid: self.dag.status(tid) for tid in self._tasks}
        if self._cancel_reason is not None and not self._failed:
            status, reason = SessionStatus.CANCELLED, self._cancel_reason
        elif self._failed or any(s is not TaskStatus.COMPLETED for s in statuses.values()):
            status = SessionStatus.FAILED
            skipped = sum(1 for s in statuses.values() if s is TaskStatus.SKIPPED)
            first = next(iter(self._failed.values()), "tasks did not complete")
            reason = first + (f"; {skipped} dependent task(s) skipped" if skipped else "")
        else:
            status, reason = SessionStatus.COMPLETED, None
        await self._flush_progress(final=True)
        flag = None
        if status is SessionStatus.FAILED and self.session.redrive_count >= self.session.max_redrives:
            # No cron retries it again: a person decides (resume --force clears the flag).
            flag = f"failed again after {self.session.redrive_count} redrive(s): {reason}"
        record = await self.store.finish_session(self.lease, status, reason, needs_human_reason=flag)
        self.session = record
        sample = session_sample(record, self.clock.now())
        if sample is not None:
            self.metrics.observe(sample)
        self.telemetry.session_finished(status.value, self.pipeline.name)
        return self._result(status, reason)

    def _result(self, status: SessionStatus, reason: str | None) -> RunResult:
        return RunResult(
            session_id=self.session_id,
            status=status,
            outputs=dict(self.outputs),
            tasks={tid: self.dag.status(tid) for tid in self._tasks},
            reason=reason,
        )

    def _raise_if_lost(self) -> None:
        self._keeper.check()

    # -- flushing -----------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        last_events = self.clock.now()
        while True:
            await self.clock.sleep(self.options.progress_interval)
            if self.stopping:
                return
            try:
                await self._flush_progress()
                if self.clock.now() - last_events >= self.options.flush_interval:
                    last_events = self.clock.now()
                    await self.events.flush()
                    if self._own_metrics:
                        await self.metrics.flush()
            except LeaseLostError as exc:
                self.lease_lost(exc)
                return
            except OrchestratorError:
                _log.warning("session %s: flush failed; will retry", self.session_id, exc_info=True)

    async def _flush_progress(self, final: bool = False) -> None:
        if self.stopping:
            return
        if self._progress_dirty:
            dirty, self._progress_dirty = self._progress_dirty, {}
            writes = [
                TaskWrite(TaskWriteKind.PROGRESS, tid, attempt, progress=progress)
                for tid, (attempt, progress) in dirty.items()
                if tid in self._running and self._running[tid].attempt == attempt
            ]
            if writes:
                await self.store.write_tasks(self.lease, writes)
        if self._session_dirty or final:
            self._session_dirty = False
            done, total = self.dag.done, self.dag.total
            agents = [] if final else sorted({r.agent for r in self._running.values()})
            await self.store.update_session(self.lease, progress=Progress(done, total), current_agents=agents)

    async def _final_flush(self) -> None:
        flushes = [self.events.flush] + ([self.metrics.flush] if self._own_metrics else [])
        for flush in flushes:
            try:
                await flush()
            except (OrchestratorError, OSError):
                _log.warning("session %s: final flush failed", self.session_id, exc_info=True)


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one meaningful error of a task group (a lost lease wins), not the group."""
    flat: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, anyio.get_cancelled_exc_class()):
            flat.append(exc)

    walk(group)
    for exc in flat:
        if isinstance(exc, LeaseLostError):
            return exc
    return flat[0] if len(flat) == 1 else group


def _with(task: TaskRecord, **changes: Any) -> TaskRecord:
    from dataclasses import replace

    return replace(task, **changes)


# -- entry points ---------------------------------------------------------------------------


