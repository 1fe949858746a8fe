"""`SessionRunner`: the I/O shell around a `SessionPlan`, for one claimed session.

It performs what the plan decides and nothing else: commits each batch of task writes
through the Store (a completion and the starts it unlocks in one `write_tasks`, one
request where the backend has transactions), launches agents once their START is
durable, feeds their outcomes back, and ends the session. Around it run the
`LeaseKeeper` (renewal, cancel requests, signals, the local deadline), the timers the
plan asks for, and a flusher (coalesced progress, events, metrics). It implements the
`SessionPort` that attempts see and the `LeaseListener` the keeper reports to.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import anyio
from anyio.abc import TaskGroup

from orchestrator.agents.spec import AgentSpec
from orchestrator.clock import Clock
from orchestrator.codec import Codec
from orchestrator.errors import LeaseLostError, OrchestratorError
from orchestrator.events import EventBuffer
from orchestrator.graph import Pipeline
from orchestrator.metrics import MetricsRecorder, session_sample
from orchestrator.scheduler.attempt import run_attempt
from orchestrator.scheduler.beyond import BeyondSession
from orchestrator.scheduler.lease_keeper import LeaseKeeper
from orchestrator.scheduler.lifecycle import Lifecycle
from orchestrator.scheduler.messages import AttemptOutcome, Cancelled, Failed, Finished, Launch, TimedOut, Waiting
from orchestrator.scheduler.options import RunOptions, RunResult, WorkerLimits
from orchestrator.scheduler.plan import SessionPlan
from orchestrator.scheduler.ports import TaskOrigin
from orchestrator.scheduler.resources import SessionResources
from orchestrator.scheduler.step import Finish, Step, Suspend
from orchestrator.store.deadline import bounded_by
from orchestrator.store.protocol import Store, WriteResult
from orchestrator.store.records import (
    Lease,
    Progress,
    SessionSnapshot,
    SessionStatus,
    SignalRecord,
    TaskWrite,
    TaskWriteKind,
    WriteOutcome,
)
from orchestrator.telemetry import SpanHandle, Telemetry

__all__ = ["SessionRunner"]

_log = logging.getLogger("orchestrator.scheduler")


@dataclass(frozen=True, slots=True)
class _TimerFired:
    """A timer the plan asked for went off."""


@dataclass(frozen=True, slots=True)
class _SignalsChanged:
    signal_seq: int


@dataclass(frozen=True, slots=True)
class _CancelRequested:
    reason: str


@dataclass(frozen=True, slots=True)
class _LeaseLost:
    error: LeaseLostError


_Message: TypeAlias = AttemptOutcome | _TimerFired | _SignalsChanged | _CancelRequested | _LeaseLost


class SessionRunner(BeyondSession):
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
        self.options = options
        self.telemetry = telemetry
        self.limits = limits
        self._clock = clock
        self._session = snapshot.session
        self._session_id = snapshot.session.session_id
        self.plan = SessionPlan(
            snapshot, pipeline, fence=lease.fence, signal_seq=lease.signal_seq, concurrency=options.concurrency,
            agent_concurrency=options.agent_concurrency, fail_fast=options.fail_fast, redrive=redrive,
            abandoned=abandoned, rng=random.Random(options.seed),
        )
        self._keeper = LeaseKeeper(store, lease, options, clock, self)
        # Event keys are (at, writer, seq): the fence keeps a later run by the same worker distinct.
        self.events = EventBuffer(store, self._session_id, f"{lease.owner}.{lease.fence}", clock)
        # Metric rows are per writer; a worker passes one recorder shared by its sessions.
        self.metrics = metrics or MetricsRecorder(store, clock=clock, flush_interval=options.flush_interval)
        self._own_metrics = metrics is None
        self._scopes: dict[str, anyio.CancelScope] = {}  # the running agents' cancel handles
        self._send, self._receive = anyio.create_memory_object_stream[_Message](math.inf)
        self._tg: TaskGroup | None = None
        self._span: SpanHandle | None = None
        self._ending = False  # the session's end is being written (see _end_writing)
        self._started = clock.now()
        self.lifecycle = Lifecycle(self.events, self._session_id, pipeline.name)
        self.resources = SessionResources(self.plan, pipeline, self.events, lambda: self._post(_TimerFired()),
                                          store=store, clock=clock, options=options)
        self.lifecycle.claimed(lease, redrive=redrive, abandoned=abandoned)

    @property
    def lease(self) -> Lease:
        """The lease as its keeper last renewed it."""
        return self._keeper.lease

    # -- SessionPort: what attempts and their contexts see ----------------------------------

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def session_input(self) -> Any:
        return self._session.input

    @property
    def fence(self) -> int:
        return self._keeper.lease.fence

    @property
    def stopping(self) -> bool:
        return self.plan.halted

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def codec(self) -> Codec:
        return self.store.codec

    @property
    def agents(self) -> Mapping[str, AgentSpec]:
        return self.pipeline.agents

    def task_origin(self, task_id: str) -> TaskOrigin | None:
        task = self.plan.task(task_id)
        return TaskOrigin(task.agent, task.added_by) if task is not None else None

    def signal(self, task_id: str, name: str) -> SignalRecord | None:
        return self.plan.signal(task_id, name)

    def report_progress(self, task_id: str, attempt: int, progress: Progress) -> None:
        self.plan.report_progress(task_id, attempt, progress)

    def log(self, task_id: str, attempt: int, message: str, level: str, data: Mapping[str, Any]) -> None:
        self.events.add("log", message, task_id=task_id, level=level, data={"attempt": attempt, **data})

    def check_lease(self) -> None:
        self._keeper.check()

    def heartbeat(self, task_id: str) -> None:
        self._keeper.touch()

    async def checkpoint(self, task_id: str, attempt: int, state: Any) -> None:
        self._keeper.check()
        write = TaskWrite(TaskWriteKind.CHECKPOINT, task_id, attempt, checkpoint=state)
        [result] = await self.store.write_tasks(self.lease, [write])
        if not result.ok:
            raise LeaseLostError.write_rejected(self._session_id, task_id, write.kind.value,
                                                result.task.fence if result.task else None, self.lease.fence)
        self.plan.checkpointed(task_id, state)

    def _post(self, message: _Message) -> None:
        """Queue news for the dispatch loop; news arriving after the run ended is dropped."""
        with contextlib.suppress(anyio.ClosedResourceError):
            self._send.send_nowait(message)

    # -- LeaseListener: news from the keeper --------------------------------------------------

    def lease_lost(self, error: LeaseLostError) -> None:
        # Written by the final flush only while the local deadline holds (a newer claim
        # refused us early); past it nothing is written and the next owner's takeover says it.
        self.lifecycle.lost(self.lease, error)
        self.plan.halt()
        self._post(_LeaseLost(error))
        if self._tg is not None:  # stop at once, even a store call or an agent in progress
            self._tg.cancel_scope.cancel()

    def cancel_requested(self, reason: str) -> None:
        self._post(_CancelRequested(reason))

    def signals_changed(self, signal_seq: int) -> None:
        self._post(_SignalsChanged(signal_seq))

    # -- the run ------------------------------------------------------------------------------

    async def run(self) -> RunResult:
        # Every store call of the run, in this task and the tasks it starts, is bounded by
        # the lease's local deadline (orchestrator.store.deadline): none is sent past it.
        with bounded_by(self._keeper):
            return await self._run()

    async def _run(self) -> RunResult:
        links = dict(self._session.trace_context) or None
        with self.telemetry.session_span(
            self._session_id, self.pipeline.name, resumed=links is not None, links_from=links
        ) as span:
            self._span = span
            if links is None:
                ctx = self.telemetry.inject()
                if ctx:
                    await self.store.update_session(self.lease, trace_context=ctx)
            result: RunResult | None = None
            try:
                try:
                    async with anyio.create_task_group() as tg:
                        self._tg = tg
                        await tg.start(self._keeper.run)
                        await self._flush_claim()
                        tg.start_soon(self._flush_loop)
                        try:
                            result = await self._dispatch()
                        finally:
                            tg.cancel_scope.cancel()
                except BaseExceptionGroup as group:
                    raise _unwrap(group) from None
                if result is None:  # the lost lease cancelled the dispatch
                    self._keeper.check()
                    raise AssertionError("the run was cancelled without a lost lease")
            except LeaseLostError as exc:
                span.record_exception(exc)
                raise
            finally:
                with anyio.CancelScope(shield=True):
                    await self._final_flush()
                self._send.close()  # unclosed streams warn when collected (ResourceWarning)
                self._receive.close()
            assert result is not None
            if result.status is SessionStatus.COMPLETED:
                span.set_status_ok()
            return result

    async def _dispatch(self) -> RunResult:
        await self._perform(self.plan.open(self._clock.now()))
        while True:
            self._keeper.check()
            step = self.plan.next_step(self._clock.now())
            if step.writes:
                await self._perform(step)
                continue
            if isinstance(step.end, Finish):
                return await self._finish(step.end)
            if isinstance(step.end, Suspend):
                waiting = await self._suspend(step.end)
                if waiting is not None:
                    return waiting
                continue
            await self._handle(await self._receive.receive())
            # Drain whatever else arrived, so one batch carries many transitions.
            while True:
                try:
                    message = self._receive.receive_nowait()
                except anyio.WouldBlock:
                    break
                await self._handle(message)

    async def _handle(self, message: _Message) -> None:
        if isinstance(message, (Finished, Failed, TimedOut, Waiting, Cancelled)):
            self._scopes.pop(message.task_id, None)
            await self._perform(self.plan.attempt_ended(message, self._clock.now()))
        elif isinstance(message, _TimerFired):
            await self._perform(self.plan.timer_fired(self._clock.now()))
        elif isinstance(message, _SignalsChanged):
            await self._refresh_signals()
        elif isinstance(message, _CancelRequested):
            await self._perform(self.plan.cancel_requested(message.reason))
        else:
            raise message.error

    async def _perform(self, step: Step) -> None:
        """Do what a step says, in its order; a committed batch's consequences recursively."""
        self._record(step)
        for addition in step.stage:
            await self.store.add_tasks(self.lease, addition.parent, addition.attempt, list(addition.tasks))
        if step.writes:
            self._keeper.check()
            results = await self.store.write_tasks(self.lease, list(step.writes))
            for write, result in zip(step.writes, results, strict=True):
                self._check(write, result)
            await self._perform(self.plan.committed(step.writes, results))
        if step.adopt:
            # Completed by another owner: the tasks its attempt added are adopted with it.
            snapshot = await self.store.load_session(self._session_id)
            self.plan.tasks_loaded(snapshot.tasks)
        for launch in step.launches:
            self._launch(launch)
        for task_id in step.cancel:
            scope = self._scopes.get(task_id)
            if scope is not None:
                scope.cancel()
        for at in step.timers:
            self._group.start_soon(self._timer, at)

    def _record(self, step: Step) -> None:
        for note in step.notes:
            self.lifecycle.noted(note)
        for retry in step.retries:
            if self._span is not None:
                self._span.add_event("retry", {
                    "orchestrator.task.id": retry.task_id, "orchestrator.attempt": retry.attempt,
                    "orchestrator.error.type": retry.error_type, "orchestrator.retry.delay_s": retry.delay,
                })
        for sample in step.metrics:
            self.metrics.observe(sample)

    def _check(self, write: TaskWrite, result: WriteResult) -> None:
        if result.outcome is WriteOutcome.STALE:
            raise LeaseLostError.write_rejected(self._session_id, write.task_id, write.kind.value,
                                                result.task.fence if result.task else None, self.lease.fence)

    @property
    def _group(self) -> TaskGroup:
        assert self._tg is not None, "the runner's task group exists only inside run()"
        return self._tg

    def _launch(self, launch: Launch) -> None:
        self._keeper.check()  # no agent starts past the deadline, even after a commit that took long
        scope = anyio.CancelScope()
        self._scopes[launch.task_id] = scope
        spec = self.pipeline.agents[launch.agent]

        async def attempt() -> None:
            await run_attempt(self, spec, launch, scope, telemetry=self.telemetry, limits=self.limits,
                              report=self._report, gate=self.resources.gate,
                              needs=self.resources.needs(self._session_id, self.fence, launch))

        self._group.start_soon(attempt)

    def _report(self, outcome: AttemptOutcome) -> None:
        self._post(outcome)

    async def _timer(self, at: float) -> None:
        await self._clock.sleep(max(0.0, at - self._clock.now()))
        self._post(_TimerFired())

    async def _refresh_signals(self) -> None:
        snapshot = await self.store.load_session(self._session_id)
        seq = snapshot.session.signal_seq
        self._keeper.signals_loaded(seq)
        await self._perform(self.plan.signals_arrived(seq, snapshot.signals, self._clock.now()))

    # -- ending -------------------------------------------------------------------------------

    async def _suspend(self, end: Suspend) -> RunResult | None:
        """Put the session WAITING; None if a signal landed meanwhile (then it runs on)."""
        self._end_writing(True)
        await self._flush_progress()
        if not await self.store.wait_session(self.lease, end.wake_at):
            self._end_writing(False)  # it runs on: renewals and flushes resume
            await self._refresh_signals()
            return None
        self.lifecycle.waiting(end.wake_at)
        return self._result(SessionStatus.WAITING, "waiting for a signal")

    def _end_writing(self, value: bool) -> None:
        """While the end of the session is written, periodic renewals and flushes pause: one
        landing after the end would be refused and read as a lost lease."""
        self._ending = value
        self._keeper.ending(value)

    async def _finish(self, end: Finish) -> RunResult:
        self._end_writing(True)
        await self._flush_progress(final=True)
        record = await self.store.finish_session(self.lease, end.status, end.reason,
                                                 needs_human_reason=end.needs_human_reason)
        self.lifecycle.finished(end, self.plan.statuses(), self._clock.now() - self._started)
        sample = session_sample(record, self._clock.now())
        if sample is not None:
            self.metrics.observe(sample)
        self.telemetry.session_finished(end.status.value, self.pipeline.name)
        return self._result(end.status, end.reason)

    def _result(self, status: SessionStatus, reason: str | None) -> RunResult:
        return RunResult(self._session_id, status, self.plan.outputs(), self.plan.statuses(), reason)

    # -- flushing -----------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        last_events = self._clock.now()
        while True:
            await self._clock.sleep(self.options.progress_interval)
            if self.stopping:
                return
            if self._ending:
                continue
            try:
                await self._flush_progress()
                if self._clock.now() - last_events >= self.options.flush_interval:
                    last_events = self._clock.now()
                    await self.events.flush()
                    if self._own_metrics:
                        await self.metrics.flush()
            except LeaseLostError as exc:
                if self._ending:
                    continue  # refused by our own end write, landed meanwhile
                self._keeper.lose(exc)
                return
            except OrchestratorError:
                _log.warning("session %s: flush failed; will retry", self._session_id, exc_info=True,
                             extra={"session_id": self._session_id})

    async def _flush_claim(self) -> None:
        """Write the claim (or takeover) at once, not a flush interval later: it survives a crash."""
        try:
            await self.events.flush()
        except LeaseLostError:
            raise
        except OrchestratorError:
            _log.warning("session %s: the claim event was not written; retried with the next flush",
                         self._session_id, exc_info=True, extra={"session_id": self._session_id})

    async def _flush_progress(self, final: bool = False) -> None:
        if self.stopping:
            return
        writes = self.plan.progress_writes()
        if writes:
            await self.store.write_tasks(self.lease, writes)
        progress = self.plan.session_progress(final)
        if progress is not None:
            done, agents = progress
            await self.store.update_session(self.lease, progress=done, current_agents=agents)

    async def _final_flush(self) -> None:
        flushes = [self.events.flush] + ([self.metrics.flush] if self._own_metrics else [])
        for flush in flushes:
            try:
                await flush()
            except LeaseLostError as exc:  # past the deadline nothing more is written, history included
                _log.warning("session %s: buffered events and metrics not written: %s", self._session_id, exc,
                             extra={"session_id": self._session_id})
                return
            except (OrchestratorError, OSError):
                _log.warning("session %s: final flush failed", self._session_id, exc_info=True,
                             extra={"session_id": self._session_id})


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
