"""The pure core of one claimed session: what happened goes in, a `Step` comes out (sans-I/O).

`SessionPlan` keeps one `TaskState` per task (in a `TaskTable`, with the `DagState`
that indexes which tasks are ready). The runner tells it what happened (an attempt's outcome, a timer, new
signals, a cancel request, the results of a committed batch) and performs the `Step`
it gets back. The plan never touches a store, a clock or an event loop: time comes in
as `now`, jitter from a seeded `random.Random`, so every decision is a unit test away.

Outcome decisions are queued, not returned, so one batch carries many transitions:
`next_step` returns them together with the STARTs they unlock (marked RUNNING at once,
optimistically; agents launch only after the batch lands, via `committed`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from orchestrator.errors import StoreUnavailableError, ValidationError
from orchestrator.graph import Pipeline
from orchestrator.scheduler.messages import AttemptOutcome, Cancelled, Failed, Finished, Launch, TimedOut, Waiting
from orchestrator.scheduler.step import Addition, Draft, Finish, Retry, Step, Suspend
from orchestrator.scheduler.tasks import TaskState, TaskTable, Wait, pending_record
from orchestrator.store.protocol import WriteResult
from orchestrator.store.records import (
    PROJECT_TASK_METRIC,
    TASK_METRIC,
    ErrorInfo,
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
    project_task_agent,
)

__all__ = ["SessionPlan"]

_RESETTABLE = (TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED)


class SessionPlan:
    """Decides the task transitions of one claimed session; performs none of them."""

    def __init__(
        self,
        snapshot: SessionSnapshot,
        pipeline: Pipeline,
        *,
        fence: int,
        signal_seq: int,
        concurrency: int = 16,
        agent_concurrency: Mapping[str, int] | None = None,
        fail_fast: bool = False,
        redrive: bool = False,
        abandoned: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._session: SessionRecord = snapshot.session
        self._pipeline = pipeline
        self._fence = fence
        self._project_id = snapshot.session.project_id
        self._signal_seq = signal_seq  # of the signals loaded: a wait begun now has seen these
        self._concurrency = concurrency
        self._parked: set[str] = set()  # launched attempts waiting for a fleet-wide resource
        self._agent_concurrency = dict(agent_concurrency or {})
        self._fail_fast = fail_fast
        self._redrive = redrive
        # Taken over from an owner that stopped without a session write: its FAILED,
        # SKIPPED and CANCELLED task states decided nothing, so they run again.
        self._abandoned = abandoned
        self._rng = rng or random.Random()
        self._tasks = TaskTable(snapshot)
        self._progressed: dict[str, None] = {}  # tasks with unwritten progress, in report order
        self._queue: list[TaskWrite] = []  # decided, not yet committed
        self._first_failure: str | None = None
        self._cancel_reason: str | None = None
        self._halted = False

    # -- queries ------------------------------------------------------------------------

    def task(self, task_id: str) -> TaskState | None:
        """The record of `task_id` (read it, do not change it), or None if unknown."""
        return self._tasks.get(task_id)

    def signal(self, task_id: str, name: str) -> SignalRecord | None:
        task = self._tasks.get(task_id)
        return task.signals.get(name) if task is not None else None

    def statuses(self) -> dict[str, TaskStatus]:
        return {t.task_id: t.status for t in self._tasks}

    def outputs(self) -> dict[str, Any]:
        return {t.task_id: t.output for t in self._tasks if t.status is TaskStatus.COMPLETED}

    @property
    def halted(self) -> bool:
        return self._halted

    # -- startup ------------------------------------------------------------------------

    def open(self, now: float) -> Step:
        """Decide what every stored task needs: keep, reset (redrive), skip, wake or schedule.

        Returns the RESETs as their own batch; the SKIPs of failures decided earlier are
        queued for the first `next_step`.
        """
        d = Draft()
        failed: list[str] = []
        for task in self._tasks:
            tid, record = task.task_id, self._snapshot.tasks[task.task_id]
            if task.status in _RESETTABLE:
                if self._redrive or (self._abandoned and record.fence < self._fence):
                    d.writes.append(TaskWrite(TaskWriteKind.RESET, tid, task.attempt))
                elif task.status is TaskStatus.FAILED:
                    # Decided by an earlier owner of this fence line; our finish records it.
                    message = record.last_error.message if record.last_error else "no error stored"
                    self._fail(f"task {tid} failed: {message}")
                    failed.append(tid)
            elif task.status is TaskStatus.WAITING:
                self._tasks.set_wait(task, Wait(record.not_before, self._session.wait_seq, record.waiting_for))
                if record.not_before is not None:
                    d.timers.append(record.not_before)
            elif task.status is TaskStatus.RUNNING:
                # Interrupted (a crash, a lost lease): its attempt gets a history entry saying
                # so, and the task runs again.
                self._tasks.move(task, TaskStatus.PENDING)
                d.writes.append(TaskWrite(TaskWriteKind.ABANDON, tid, task.attempt, error=ErrorInfo(
                    "orchestrator.Interrupted", f"attempt {task.attempt} was interrupted: its worker (fence "
                    f"{record.fence}) stopped before recording an outcome", retryable=True)))
            elif task.status is TaskStatus.PENDING and record.not_before is not None:
                self._tasks.set_backoff(task, record.not_before)
                d.timers.append(record.not_before)
        for tid in sorted(failed):
            self._skip_dependents(tid)
        self._wake_due(now, d)
        return d.step()

    # -- dispatching ----------------------------------------------------------------------

    def next_step(self, now: float) -> Step:
        """The next batch (queued outcomes plus the starts they allow), or how the session ends.

        An idle step means: wait for an outcome, a timer or news, then ask again.
        """
        if self._halted:
            return Step()
        writes = self._queue + self._pick(now)
        self._queue = []
        if writes:
            return Step(writes=tuple(writes))
        if self._tasks.running:
            return Step()
        unfinished = self._tasks.dag.unfinished()
        if not unfinished:
            return Step(end=self._finish())
        if self._tasks.backoff:
            return Step()  # a retry's backoff is running: its timer will fire
        if self._tasks.waiting and self._cancel_reason is None:
            deadlines: list[float] = []
            for tid in self._tasks.waiting:
                wait = self._tasks[tid].wait
                if wait is not None and wait.deadline is not None:
                    deadlines.append(wait.deadline)
            return Step(end=Suspend(min(deadlines) if deadlines else None))
        # Blocked for good (a dependency can never complete): skip what is left.
        for tid in sorted(unfinished):
            task = self._tasks[tid]
            self._queue.append(TaskWrite(TaskWriteKind.SKIP, tid, task.attempt,
                                         reason="blocked by an unfinished dependency"))
            self._tasks.finalize(task, TaskStatus.SKIPPED)
        writes, self._queue = self._queue, []
        return Step(writes=tuple(writes))

    def committed(self, writes: Sequence[TaskWrite], results: Sequence[WriteResult]) -> Step:
        """A batch landed: launch what started, adopt what others completed, arm timers.

        `results` hold no STALE outcome: the runner stops on one before calling this.
        """
        d = Draft()
        resets = 0
        for write, result in zip(writes, results, strict=True):
            task = self._tasks[write.task_id]
            kind = write.kind
            if kind is TaskWriteKind.RESET:
                resets += 1
                if result.ok:
                    self._tasks.move(task, TaskStatus.PENDING)
                    task.attempt_base = write.attempt
            elif result.outcome is WriteOutcome.COMPLETED_ELSEWHERE:
                assert result.task is not None, "a COMPLETED_ELSEWHERE result carries the stored task"
                self._adopt(task, result.task, d)
            elif kind in (TaskWriteKind.START, TaskWriteKind.WAKE):
                d.launches.append(self._launched(task, write.attempt))
            elif kind is TaskWriteKind.COMPLETE and task.staged:
                fresh = [pending_record(t) for t in task.staged if t.task_id not in self._tasks]
                task.staged = ()
                self._tasks.add(fresh)
            elif kind in (TaskWriteKind.WAIT, TaskWriteKind.RETRY, TaskWriteKind.REQUEUE) and write.not_before is not None:
                d.timers.append(write.not_before)
        if resets:
            d.note("redrive", f"redrive {self._session.redrive_count}: reset {resets} task(s)")
        return d.step()

    def tasks_loaded(self, tasks: Mapping[str, TaskRecord]) -> None:
        """The session was reloaded after an adoption: take in the tasks its completer added."""
        self._tasks.add(tasks.values())

    # -- outcomes and news ----------------------------------------------------------------

    def attempt_ended(self, outcome: AttemptOutcome, now: float) -> Step:
        """An attempt finished, failed, timed out, began waiting or was cancelled."""
        task = self._tasks[outcome.task_id]
        self._tasks.set_running(task, False)
        self._parked.discard(outcome.task_id)
        d = Draft()
        if outcome.duration is not None:
            sample = MetricSample(TASK_METRIC, task.agent, now, duration_ms=outcome.duration * 1000,
                                  error=isinstance(outcome, (Failed, TimedOut)))
            d.metrics.append(sample)
            if self._project_id is not None:  # counted again under the project, for `metrics --project`
                d.metrics.append(replace(sample, name=PROJECT_TASK_METRIC,
                                         agent=project_task_agent(self._project_id, task.agent)))
        if self._halted:
            return d.step()
        if isinstance(outcome, Waiting):
            self._began_waiting(task, outcome, d)
        elif isinstance(outcome, Cancelled):
            self._tasks.finalize(task, TaskStatus.CANCELLED)
            self._queue.append(TaskWrite(TaskWriteKind.CANCEL, task.task_id, outcome.attempt,
                                         reason=self._cancel_reason or "cancelled"))
        elif isinstance(outcome, Finished):
            self._completed(task, outcome, d)
        else:
            self._failed(task, outcome.attempt, outcome.error, now, d)
        return d.step()

    def signals_arrived(self, signal_seq: int, signals: Mapping[tuple[str, str], SignalRecord], now: float) -> Step:
        """Signals were reloaded up to `signal_seq`: wake the waits they answer."""
        self._signal_seq = signal_seq
        self._tasks.add_signals(signals)
        d = Draft()
        self._wake_due(now, d)
        return d.step()

    def timer_fired(self, now: float) -> Step:
        """A backoff or wait deadline may have passed: make those tasks runnable."""
        d = Draft()
        self._wake_due(now, d)
        return d.step()

    def cancel_requested(self, reason: str) -> Step:
        """A stored cancel request: cancel running agents, CANCEL everything not started."""
        d = Draft()
        if self._cancel_reason is None:
            d.note("cancel", f"cancel requested: {reason}", level="WARNING")
            self._cancel_all(reason, d)
        return d.step()

    def checkpointed(self, task_id: str, state: Any) -> None:
        """A checkpoint landed: the next attempt in this run starts from it, as one after a crash would."""
        self._tasks[task_id].checkpoint = state

    def report_progress(self, task_id: str, attempt: int, progress: Progress) -> None:
        task = self._tasks[task_id]
        task.progress, task.progress_attempt = progress, attempt
        self._progressed[task_id] = None

    def park(self, task_id: str, parked: bool) -> None:
        """A launched attempt waits for a fleet-wide resource (True) or holds it (False); waiting,
        it holds no session slot, so other ready tasks may start."""
        (self._parked.add if parked else self._parked.discard)(task_id)

    def priority(self, task_id: str) -> int:
        return self._tasks.dag.priority_of(task_id)

    def halt(self) -> None:
        """The lease is lost: decide nothing more (outcomes still free their slots)."""
        self._halted = True

    # -- progress -------------------------------------------------------------------------

    def progress_writes(self) -> list[TaskWrite]:
        """PROGRESS writes for what running attempts reported since the last call."""
        if self._halted:
            return []
        progressed, self._progressed = self._progressed, {}
        writes = []
        for tid in progressed:
            task = self._tasks[tid]
            if task.progress is not None and task.running and task.attempt == task.progress_attempt:
                writes.append(TaskWrite(TaskWriteKind.PROGRESS, tid, task.attempt, progress=task.progress))
            task.progress = None
        return writes

    def session_progress(self, final: bool = False) -> tuple[Progress, list[str]] | None:
        """The session's (completed/total, running agents) if it changed since the last call."""
        if self._halted or not (self._tasks.changed or final):
            return None
        self._tasks.changed = False
        agents = [] if final else sorted({self._tasks[t].agent for t in self._tasks.running})
        return Progress.of_tasks(self._tasks.dag.counts()), agents

    # -- decisions --------------------------------------------------------------------------

    def _pick(self, now: float) -> list[TaskWrite]:
        """START (or WAKE) ready tasks in priority order, within the session's limits."""
        free = self._concurrency - len(self._tasks.running - self._parked)
        if self._cancel_reason is not None or free <= 0:
            return []
        load = Counter(self._tasks.load)
        writes: list[TaskWrite] = []
        for tid in self._candidates(free):
            if free <= 0:
                break
            task = self._tasks[tid]
            if task.running or (task.not_before is not None and task.not_before > now):
                continue
            limit = self._agent_concurrency.get(task.agent)
            if limit is not None and load[task.agent] >= limit:
                continue
            if task.wait is not None:
                writes.append(TaskWrite(TaskWriteKind.WAKE, tid, task.attempt))
            else:
                writes.append(TaskWrite(TaskWriteKind.START, tid, task.attempt + 1))
            load[task.agent] += 1
            free -= 1
            self._tasks.move(task, TaskStatus.RUNNING)
        return writes

    def _candidates(self, free: int) -> list[str]:
        """Ready tasks in priority order: enough to fill `free` slots past backoffs and agent limits."""
        limit = free + len(self._tasks.backoff) + len(self._tasks.running) + 8
        while True:
            ready = self._tasks.dag.ready(limit=limit)
            if len(ready) < limit or limit >= self._tasks.dag.total:
                return ready
            if sum(1 for t in ready if t not in self._tasks.backoff) >= free * 2:
                return ready
            limit *= 4

    def _launched(self, task: TaskState, attempt: int) -> Launch:
        task.attempt = attempt
        wait = self._tasks.set_wait(task, None)  # a woken wait keeps its deadline
        self._tasks.set_running(task, True)
        deps = {dep: self._tasks[dep].output for dep in self._tasks.dag.deps_of(task.task_id)}
        task_input = task.input if task.input is not None else self._session.input
        return Launch(task.task_id, task.agent, attempt, task_input, deps, task.checkpoint,
                      wait.deadline if wait is not None else None, wait.signal if wait is not None else None)

    def _completed(self, task: TaskState, outcome: Finished, d: Draft) -> None:
        if outcome.added:
            d.stage.append(Addition(task.task_id, outcome.attempt, outcome.added))
            task.staged = outcome.added
        progress = task.progress if task.progress_attempt == outcome.attempt else None
        task.progress = None
        self._progressed.pop(task.task_id, None)
        self._queue.append(TaskWrite(TaskWriteKind.COMPLETE, task.task_id, outcome.attempt,
                                     output=outcome.output, progress=progress))
        # Optimistic: dependents become ready now, so their STARTs join this batch. Agents
        # launch only after the batch lands, by then the outcome is known.
        task.output = outcome.output
        self._tasks.finalize(task, TaskStatus.COMPLETED)

    def _began_waiting(self, task: TaskState, outcome: Waiting, d: Draft) -> None:
        self._tasks.set_wait(task, Wait(outcome.deadline, self._signal_seq, outcome.signal))
        self._queue.append(TaskWrite(TaskWriteKind.WAIT, task.task_id, outcome.attempt, not_before=outcome.deadline,
                                     waiting_for=outcome.signal))
        self._tasks.move(task, TaskStatus.WAITING)
        d.note("wait", f"task {task.task_id} waits for signal {outcome.signal!r}", task_id=task.task_id,
               data={"signal": outcome.signal, "deadline": outcome.deadline})

    def _failed(self, task: TaskState, attempt: int, error: BaseException, now: float, d: Draft) -> None:
        """Retry with backoff while the agent's policy allows; else FAIL and skip dependents."""
        tid = task.task_id
        policy = self._pipeline.agents[task.agent].retry
        # Bad input from the agent to the engine (a checkpoint over its size limit, a value
        # the codec cannot encode, an invalid added task) fails the same way every time.
        retryable = policy.is_retryable(error) and not isinstance(error, ValidationError)
        info = ErrorInfo.from_exception(error, retryable=retryable)
        if isinstance(error, StoreUnavailableError):
            # The store failed under the agent (in ctx.checkpoint), not the agent: run it
            # again after a pause, without counting the attempt against its budget.
            delay = policy.delay(1, self._rng)
            self._queue.append(TaskWrite(TaskWriteKind.REQUEUE, tid, attempt, error=info, not_before=now + delay))
            task.attempt_base += 1
            self._tasks.move(task, TaskStatus.PENDING)
            self._tasks.set_backoff(task, now + delay)
            d.note("requeue", f"task {tid} attempt {attempt} stopped because the store failed ({info.message}); "
                   f"run again in {delay:.2f}s, not counted as an attempt", task_id=tid, level="WARNING",
                   data={"attempt": attempt, "error": info.type, "delay": delay})
            return
        used = attempt - task.attempt_base
        if info.retryable and used < task.max_attempts:
            delay = policy.delay(used, self._rng)
            not_before = now + delay
            self._queue.append(TaskWrite(TaskWriteKind.RETRY, tid, attempt, error=info, not_before=not_before))
            self._tasks.move(task, TaskStatus.PENDING)
            self._tasks.set_backoff(task, not_before)
            d.note("retry", f"task {tid} attempt {attempt} failed: {info.message}; retrying in {delay:.2f}s",
                   task_id=tid, level="WARNING", data={"attempt": attempt, "error": info.type, "delay": delay})
            d.retries.append(Retry(tid, attempt, info.type, delay))
            return
        reason = f"task {tid} failed after {used} attempt(s): {info.type.rsplit('.', 1)[-1]}: {info.message}"
        self._fail(reason)
        d.note("failed", reason, task_id=tid, level="ERROR", data={"attempt": attempt, "error": info.type})
        self._queue.append(TaskWrite(TaskWriteKind.FAIL, tid, attempt, error=info))
        self._tasks.finalize(task, TaskStatus.FAILED)
        self._skip_dependents(tid)
        if self._fail_fast:
            self._cancel_all(f"fail-fast: {reason}", d)

    def _skip_dependents(self, tid: str) -> None:
        for dep in sorted(self._tasks.dag.dependents_closure(tid)):
            task = self._tasks[dep]
            if task.status.is_final or task.running:
                continue
            self._queue.append(TaskWrite(TaskWriteKind.SKIP, dep, task.attempt, reason=f"{tid} failed"))
            self._tasks.finalize(task, TaskStatus.SKIPPED)

    def _cancel_all(self, reason: str, d: Draft) -> None:
        self._cancel_reason = self._cancel_reason or reason
        d.cancel.extend(sorted(self._tasks.running))
        for tid in self._tasks.dag.unfinished():
            task = self._tasks[tid]
            if task.running:
                continue  # its Cancelled outcome writes the CANCEL
            self._queue.append(TaskWrite(TaskWriteKind.CANCEL, tid, task.attempt, reason=reason))
            self._tasks.finalize(task, TaskStatus.CANCELLED)

    def _adopt(self, task: TaskState, record: TaskRecord, d: Draft) -> None:
        """Another owner completed the task: take its output and state, and (via a load) its additions."""
        task.output, task.checkpoint = record.output, record.checkpoint
        task.attempt, task.attempt_base, task.staged = record.attempt, record.attempt_base, ()
        self._tasks.finalize(task, TaskStatus.COMPLETED)
        d.note("adopt", f"task {task.task_id} was completed by another owner; adopted its output",
               task_id=task.task_id)
        d.adopt.append(task.task_id)

    def _finish(self) -> Finish:
        statuses = [t.status for t in self._tasks]
        status: SessionStatus
        reason: str | None
        if self._cancel_reason is not None and self._first_failure is None:
            status, reason = SessionStatus.CANCELLED, self._cancel_reason
        elif self._first_failure is not None or any(s is not TaskStatus.COMPLETED for s in statuses):
            status = SessionStatus.FAILED
            skipped = statuses.count(TaskStatus.SKIPPED)
            reason = (self._first_failure or "tasks did not complete") + (
                f"; {skipped} dependent task(s) skipped" if skipped else "")
        else:
            status, reason = SessionStatus.COMPLETED, None
        flag = None
        session = self._session
        if status is SessionStatus.FAILED and session.redrive_count >= session.max_redrives:
            # No cron retries it again: a person decides (resume --force clears the flag).
            flag = f"failed again after {session.redrive_count} redrive(s): {reason}"
        return Finish(status, reason, flag)

    def _wake_due(self, now: float, d: Draft) -> None:
        """Make waiting tasks runnable when a newer signal arrived or their deadline passed."""
        for tid in sorted(self._tasks.waiting):
            task = self._tasks[tid]
            wait = task.wait
            if task.status is not TaskStatus.WAITING or wait is None:
                continue
            woken_by = sorted(name for name, sig in task.signals.items() if sig.seq > wait.seen)
            if woken_by:
                self._tasks.move(task, TaskStatus.PENDING)
                d.note("wake", f"task {tid} woken by signal {woken_by[0]!r}", task_id=tid,
                       data={"signal": woken_by[0], "signals": woken_by, "attempt": task.attempt})
            elif wait.deadline is not None and wait.deadline <= now:
                self._tasks.move(task, TaskStatus.PENDING)
                d.note("wake", f"task {tid} woken: its wait deadline passed", task_id=tid,
                       data={"signal": None, "deadline": wait.deadline, "attempt": task.attempt})
        for tid in [t for t in self._tasks.backoff if (self._tasks[t].not_before or 0.0) <= now]:
            self._tasks.set_backoff(self._tasks[tid], None)

    def _fail(self, reason: str) -> None:
        self._first_failure = self._first_failure or reason
