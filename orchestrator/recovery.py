"""Recovery: the resume-failed sweep (a cron's job) and the worker loop (a fleet's job).

Both find candidates through the status index (never a Scan), treat what the index
says as a hint, and decide with one conditional claim on the session item, so any
number of crons and workers can run at once: each session is taken by one of them.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import anyio.abc

from orchestrator.errors import ClaimRejectedError, OrchestratorError, SessionNotFoundError, ValidationError
from orchestrator.graph import Pipeline
from orchestrator.metrics import MetricsRecorder
from orchestrator.pacing import Pacer, spread
from orchestrator.scheduler import RunOptions, RunResult, SessionRunner, WorkerLimits, default_worker_id
from orchestrator.scheduler.lifecycle import claim_kind
from orchestrator.schedules import fire_schedules
from orchestrator.store.protocol import FlowStore, Store
from orchestrator.store.records import ClaimPolicy, Lease, SessionRecord, SessionStatus
from orchestrator.telemetry import Telemetry

__all__ = ["ResumeReport", "Worker", "WorkerListener", "WorkerReport", "pipelines_by_name", "resume_failed",
           "run_batch"]

_log = logging.getLogger("orchestrator.recovery")
#: Each worker tries the oldest claimable sessions in its own random order, this many at a time.
_WINDOW = 16
#: The first idle pause; it doubles up to the poll interval.
_IDLE_FLOOR = 0.05


def pipelines_by_name(pipelines: Pipeline | Iterable[Pipeline] | Mapping[str, Pipeline]) -> dict[str, Pipeline]:
    """Index pipelines by name; two different pipelines under one name are refused."""
    if isinstance(pipelines, Pipeline):
        return {pipelines.name: pipelines}
    items = pipelines.values() if isinstance(pipelines, Mapping) else pipelines
    out: dict[str, Pipeline] = {}
    for p in items:
        if p.name in out and out[p.name] is not p:
            raise ValidationError(f"two pipelines are named {p.name!r}; give each a unique name")
        out[p.name] = p
    if not out:
        raise ValidationError("no pipelines given; pass the pipelines this process can run (APP:PIPELINE)")
    return out


@dataclass(slots=True)
class ResumeReport:
    """What one resume-failed sweep did, session by session."""

    dry_run: bool = False
    candidates: list[str] = field(default_factory=list)
    resumed: dict[str, str] = field(default_factory=dict)  # session -> final status
    skipped: dict[str, str] = field(default_factory=dict)  # session -> why
    flagged: dict[str, str] = field(default_factory=dict)  # session -> needs-human reason
    errors: dict[str, str] = field(default_factory=dict)  # session -> error

    @property
    def ok(self) -> bool:
        """False when a resume raised or a resumed session ended FAILED again."""
        return not self.errors and all(s != SessionStatus.FAILED.value for s in self.resumed.values())


def _taken_from(lease: Lease, listed: SessionRecord) -> SessionStatus:
    """The status the claim took the session from: what the claim decided on, which may be
    newer than the listing (a stale index entry is decided on a fresh read)."""
    return lease.previous.status if lease.previous is not None else listed.status


async def _candidates(store: Store, status: SessionStatus, bound: float, limit: int) -> list[SessionRecord]:
    found: list[SessionRecord] = []
    cursor: str | None = None
    while len(found) < limit:
        page = await store.list_sessions(status, updated_before=bound, limit=min(100, limit - len(found)),
                                         cursor=cursor)
        found.extend(page.items)
        cursor = page.cursor
        if cursor is None:
            break
    return found[:limit]


async def resume_failed(
    store: Store,
    pipelines: Pipeline | Iterable[Pipeline] | Mapping[str, Pipeline],
    *,
    older_than: float,
    limit: int = 100,
    concurrency: int = 4,
    max_redrives: int | None = None,
    dry_run: bool = False,
    options: RunOptions | None = None,
    telemetry: Telemetry | None = None,
) -> ResumeReport:
    """Resume FAILED sessions not updated for `older_than` seconds, and abandoned RUNNING ones.

    Each candidate is claimed with the bound re-checked in the claim's condition, so a
    session is resumed at most once even with several sweeps running at the same
    moment. A FAILED session that used `max_redrives` (default: its own limit) is
    flagged needs-human and left alone.
    """
    if older_than < 0 or limit < 1 or concurrency < 1:
        raise ValidationError(
            f"resume-failed needs older_than >= 0, limit >= 1 and concurrency >= 1 "
            f"(got {older_than}, {limit}, {concurrency})"
        )
    by_name = pipelines_by_name(pipelines)
    options = options or RunOptions()
    telemetry = telemetry or Telemetry()
    now = store.clock.now()
    bound = now - older_than
    report = ResumeReport(dry_run=dry_run)
    failed = await _candidates(store, SessionStatus.FAILED, bound, limit)
    abandoned = [
        s for s in await _candidates(store, SessionStatus.RUNNING, bound, limit)
        if s.lease_expires_at is not None and s.lease_expires_at < now
    ]
    todo: list[SessionRecord] = []
    for session in [*failed, *abandoned][:limit]:
        sid = session.session_id
        report.candidates.append(sid)
        if session.pipeline not in by_name:
            report.skipped[sid] = f"pipeline {session.pipeline!r} is not loaded by this process"
            continue
        if session.status is SessionStatus.FAILED:
            if session.needs_human:
                report.skipped[sid] = f"needs-human: {session.needs_human_reason}"
                continue
            allowed = session.max_redrives if max_redrives is None else min(max_redrives, session.max_redrives)
            if session.redrive_count >= allowed:
                reason = (
                    f"redrive limit reached ({session.redrive_count} of {allowed}); last failure: "
                    f"{session.reason or 'unknown'}"
                )
                if not dry_run:
                    try:
                        await store.set_needs_human(sid, reason)
                    except OrchestratorError as exc:
                        report.errors[sid] = str(exc)
                        continue
                report.flagged[sid] = reason
                continue
        todo.append(session)
    if dry_run:
        for session in todo:
            report.skipped[session.session_id] = "dry run: would resume"
        return report

    limiter = anyio.CapacityLimiter(concurrency)
    worker_id = options.worker_id or default_worker_id()

    async def one(session: SessionRecord) -> None:
        sid = session.session_id
        async with limiter:
            policy = ClaimPolicy(redrive_failed=True, failed_updated_before=bound)
            try:
                lease = await store.claim_session(sid, worker_id, options.lease_seconds, policy, seen=session)
            except (ClaimRejectedError, SessionNotFoundError) as exc:
                report.skipped[sid] = str(exc)
                return
            taken = _taken_from(lease, session)
            try:
                snapshot = await store.load_session(sid)
                runner = SessionRunner(
                    store, by_name[session.pipeline], lease, snapshot, options=options, clock=store.clock,
                    telemetry=telemetry, redrive=taken is SessionStatus.FAILED,
                    abandoned=taken is SessionStatus.RUNNING,
                )
                result = await runner.run()
                report.resumed[sid] = result.status.value
            except OrchestratorError as exc:
                _log.exception("resume of session %s failed", sid)
                report.errors[sid] = f"{type(exc).__name__}: {exc}"

    async with anyio.create_task_group() as tg:
        for session in todo:
            tg.start_soon(one, session)
    return report


@dataclass(slots=True)
class WorkerReport:
    """What a worker did before it stopped (or a Lambda batch ended)."""

    worker_id: str
    results: dict[str, str] = field(default_factory=dict)  # session -> status
    released: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    scheduled: list[str] = field(default_factory=list)  # sessions this worker started for schedule slots


class WorkerListener(Protocol):
    """Hears each session a worker claims and how it ends (the CLI prints a line for each)."""

    def claimed(self, lease: Lease, pipeline: str, how: str) -> None:
        """`how`: claim or takeover (from an owner whose lease expired)."""

    def finished(self, session_id: str, pipeline: str, status: str, duration: float, detail: str | None) -> None:
        """`status`: the session's status, or `released` / `error`; `duration`: seconds since the claim."""


class Worker:
    """Claims PENDING, abandoned RUNNING and due WAITING sessions and runs them.

    Up to `concurrency` sessions at once. A fleet spreads itself: each worker tries the
    oldest candidates in its own order, lists again at once while it has free slots,
    and backs off (jittered, `rng`) only when there is nothing to claim. `stop()` (SIGTERM/SIGINT in the CLI) stops
    claiming, gives running sessions `grace` seconds to finish, then cancels them and
    releases their leases so another worker can take them at once.
    """

    def __init__(
        self,
        store: Store,
        pipelines: Pipeline | Iterable[Pipeline] | Mapping[str, Pipeline],
        *,
        worker_id: str | None = None,
        concurrency: int = 4,
        options: RunOptions | None = None,
        poll_interval: float = 1.0,
        grace: float = 10.0,
        limits: WorkerLimits | None = None,
        telemetry: Telemetry | None = None,
        listener: WorkerListener | None = None,
        schedule_interval: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1 or poll_interval <= 0 or grace < 0:
            raise ValidationError("Worker needs concurrency >= 1, poll_interval > 0 and grace >= 0")
        self.store = store
        self.pipelines = pipelines_by_name(pipelines)
        self.options = options or RunOptions()
        self.worker_id = worker_id or self.options.worker_id or default_worker_id()
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.grace = grace
        self.limits = limits or WorkerLimits()
        self.telemetry = telemetry or Telemetry()
        self.listener = listener
        self.metrics = MetricsRecorder(store, clock=store.clock, flush_interval=self.options.flush_interval)
        self.report = WorkerReport(self.worker_id)
        self._stop = anyio.Event()
        self._slots = anyio.Semaphore(concurrency)
        self._running: dict[str, tuple[SessionRunner, anyio.CancelScope]] = {}
        self.schedule_interval = schedule_interval  # how often due schedule slots are started
        self._fired_at: float | None = None
        self._active: set[str] = set()  # claimed and not finished (loading, or in `_running`)
        self._cancelling = False
        self._rng = rng or random.Random()
        self._pacer = Pacer(min(_IDLE_FLOOR, poll_interval), poll_interval, self._rng)
        self._abandoned_at: float | None = None

    @property
    def abandoned_interval(self) -> float:
        """How often abandoned RUNNING sessions are listed: the heartbeat interval (a fifth of the
        lease, at most 8 s), never more often than the poll interval. A lapsed lease is thus taken
        over within one heartbeat interval of its expiry, at a fraction of the idle requests."""
        return max(self.poll_interval, self.options.heartbeat_interval)

    def stop(self) -> None:
        """Stop claiming; running sessions finish within the grace period or are released."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def _find(self, limit: int) -> list[SessionRecord]:
        """Claimable sessions, oldest first: PENDING and due WAITING on every listing, abandoned
        RUNNING once per `abandoned_interval` (a lease lapses on the scale of its heartbeats)."""
        now = self.store.clock.now()
        pending = await self.store.list_sessions(SessionStatus.PENDING, limit=limit)
        waiting = await self.store.list_sessions(SessionStatus.WAITING, updated_before=now, limit=limit)
        abandoned: list[SessionRecord] = []
        tick = self.store.clock.monotonic()
        if self._abandoned_at is None or tick - self._abandoned_at >= self.abandoned_interval:
            self._abandoned_at = tick
            running = await self.store.list_sessions(
                SessionStatus.RUNNING, updated_before=now - self.options.lease_seconds, limit=limit
            )
            abandoned = [s for s in running.items if s.lease_expires_at is not None and s.lease_expires_at < now]
        return [*pending.items, *waiting.items, *abandoned]

    async def _claim(self, session: SessionRecord) -> Lease | None:
        if session.pipeline not in self.pipelines or session.session_id in self._active:
            return None
        try:
            return await self.store.claim_session(session.session_id, self.worker_id, self.options.lease_seconds,
                                                  seen=session)
        except (ClaimRejectedError, SessionNotFoundError):
            return None

    async def _run_one(self, lease: Lease, claimed_from: SessionStatus) -> None:
        sid = lease.session_id
        scope = anyio.CancelScope()
        started = self.store.clock.now()
        pipeline = "?"
        status, detail = "error", None
        try:
            with scope:
                snapshot = await self.store.load_session(sid)
                pipeline = snapshot.session.pipeline
                abandoned = claimed_from is SessionStatus.RUNNING
                runner = SessionRunner(
                    self.store, self.pipelines[pipeline], lease, snapshot,
                    options=self.options, clock=self.store.clock, telemetry=self.telemetry,
                    limits=self.limits, metrics=self.metrics, abandoned=abandoned,
                )
                self._running[sid] = (runner, scope)
                if self._cancelling:
                    scope.cancel()
                if self.listener is not None:
                    self.listener.claimed(lease, pipeline, claim_kind(lease, redrive=False, abandoned=abandoned))
                result: RunResult = await runner.run()
                self.report.results[sid] = result.status.value
                status, detail = result.status.value, result.reason
            if scope.cancelled_caught:
                await self._release(sid)
                status, detail = "released", "stopped before it finished; another worker may take it at once"
        except OrchestratorError as exc:
            _log.warning("worker %s: session %s stopped: %s", self.worker_id, sid, exc,
                         extra={"session_id": sid, "owner": self.worker_id})
            self.report.errors[sid] = f"{type(exc).__name__}: {exc}"
            status, detail = "error", f"{type(exc).__name__}: {exc}"
        finally:
            self._running.pop(sid, None)
            self._active.discard(sid)
            self._slots.release()
            if self.listener is not None:
                self.listener.finished(sid, pipeline, status, self.store.clock.now() - started, detail)

    async def _release(self, sid: str) -> None:
        entry = self._running.get(sid)
        if entry is None:
            return
        runner = entry[0]
        with anyio.CancelScope(shield=True):
            try:
                await self.store.release_lease(runner.lease)
                self.report.released.append(sid)
            except OrchestratorError as exc:
                self.report.errors[sid] = f"release failed: {exc}"

    async def run(self, *, max_sessions: int | None = None, idle_exit: float | None = None) -> WorkerReport:
        """Claim and run sessions until `stop()`; `max_sessions` bounds how many are claimed.

        While it has free slots and finds work, the worker lists again at once; with
        nothing to claim it backs off (`Pacer`: from 0.05 s, doubling, jittered, up to
        `poll_interval`). `idle_exit`: return after that many seconds with nothing to
        claim and nothing running (a Lambda batch, a test).
        """
        claimed = 0
        idle_since: float | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.metrics.run)
            while not self.stopping and (max_sessions is None or claimed < max_sessions):
                await self._fire_schedules()
                with anyio.move_on_after(self.schedule_interval):  # busy or not, due schedules fire
                    await self._free_slot()
                if self.stopping:
                    break
                if self._slots.value == 0:
                    continue
                want = self._slots.value if max_sessions is None else min(self._slots.value, max_sessions - claimed)
                listed, took = await self._fill(tg, want)
                claimed += took
                if took:
                    self._pacer.claimed()
                    idle_since = None
                    continue  # free slots left: list again at once
                if self._active:
                    idle_since = None
                elif idle_exit is not None:
                    idle_since = idle_since if idle_since is not None else self.store.clock.monotonic()
                    if self.store.clock.monotonic() - idle_since >= idle_exit:
                        break
                pause = self._pacer.contended() if listed else self._pacer.idle()
                with anyio.move_on_after(pause):
                    await self._stop.wait()
            await self._drain()
            tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await self.metrics.flush()
        return self.report

    async def _fire_schedules(self) -> None:
        """Start the due slots of schedules this worker's pipelines serve, every `schedule_interval`."""
        now = self.store.clock.monotonic()
        if not isinstance(self.store, FlowStore) or (
                self._fired_at is not None and now - self._fired_at < self.schedule_interval):
            return
        self._fired_at = now
        try:
            fired = await fire_schedules(self.store, self.pipelines, options=self.options)
        except OrchestratorError as exc:
            _log.warning("worker %s: firing schedules failed: %s", self.worker_id, exc)
            return
        for sessions in fired.started.values():
            self.report.scheduled.extend(sessions)
    async def _free_slot(self) -> None:
        """Return once a slot is free (without taking it) or the worker is stopping."""
        if self._slots.value > 0:
            return
        async with anyio.create_task_group() as tg:
            async def slot() -> None:
                async with self._slots:
                    pass
                tg.cancel_scope.cancel()

            async def stop() -> None:
                await self._stop.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(slot)
            tg.start_soon(stop)

    async def _fill(self, tg: anyio.abc.TaskGroup, want: int) -> tuple[bool, int]:
        """List candidates and claim up to `want`, each worker in its own order (`spread`).

        Returns whether any claimable candidate was listed, and how many were claimed.
        """
        try:
            candidates = await self._find(max(self.concurrency * 2, _WINDOW))
        except OrchestratorError as exc:
            _log.warning("worker %s: listing sessions failed: %s", self.worker_id, exc)
            return False, 0
        took = 0
        for session in spread(candidates, self._rng, _WINDOW):
            if took >= want or self.stopping:
                break
            if session.pipeline not in self.pipelines or session.session_id in self._active:
                continue
            self._slots.acquire_nowait()
            lease = await self._claim(session)
            if lease is None:
                self._slots.release()
                continue
            took += 1
            self._active.add(session.session_id)
            tg.start_soon(self._run_one, lease, _taken_from(lease, session))
        listed = any(s.pipeline in self.pipelines and s.session_id not in self._active for s in candidates)
        return listed, took

    async def _drain(self) -> None:
        """Let running sessions finish within the grace period, then cancel and release them."""
        with anyio.move_on_after(self.grace):
            while self._active:
                await anyio.sleep(0.05)
        self._cancelling = True
        for _, scope in list(self._running.values()):
            scope.cancel()
        with anyio.move_on_after(max(5.0, self.grace)):
            while self._active:
                await anyio.sleep(0.05)


async def run_batch(
    store: Store,
    pipelines: Pipeline | Sequence[Pipeline] | Mapping[str, Pipeline],
    *,
    max_sessions: int = 10,
    idle_exit: float = 1.0,
    **worker_kwargs: object,
) -> WorkerReport:
    """Process a bounded batch of sessions and return (a Lambda worker invocation)."""
    worker = Worker(store, pipelines, **worker_kwargs)  # type: ignore[arg-type]
    return await worker.run(max_sessions=max_sessions, idle_exit=idle_exit)
