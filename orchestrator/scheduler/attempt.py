"""One attempt of one task: build its context, run its agent on its executor, report.

The outcome goes back through the `report` callback as an `AttemptOutcome`; this
module writes nothing itself (checkpoints excepted, through the context), and times
the attempt with the session's injected clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_process
import anyio.to_thread

from orchestrator.agents.context import ProcessContext
from orchestrator.agents.errors import AgentTimeoutError, NonRetryableError
from orchestrator.agents.spec import AgentSpec
from orchestrator.errors import LeaseLostError, SerializationError
from orchestrator.scheduler.cache import look_up, remember
from orchestrator.scheduler.context import SuspendForSignal, SyncTaskContext, TaskContext
from orchestrator.scheduler.messages import AttemptOutcome, Cancelled, Failed, Finished, Launch, TimedOut, Waiting
from orchestrator.scheduler.options import WorkerLimits
from orchestrator.scheduler.ports import SessionPort
from orchestrator.scheduler.resources import Needs, ResourceGate
from orchestrator.telemetry import Telemetry

__all__ = ["outcome_status", "run_attempt"]


async def _invoke(spec: AgentSpec, ctx: TaskContext) -> Any:
    if spec.executor == "async":
        return await spec.fn(ctx)
    if spec.executor == "thread":
        return await anyio.to_thread.run_sync(spec.fn, SyncTaskContext(ctx), abandon_on_cancel=True)
    pctx = ProcessContext(
        session_id=ctx.session_id, task_id=ctx.task_id, agent=ctx.agent, attempt=ctx.attempt,
        fence=ctx.fence, input=ctx.input, session_input=ctx.session_input, deps=dict(ctx.deps), state=ctx.state,
    )
    return await anyio.to_process.run_sync(spec.fn, pctx, cancellable=True)


class _NotStarted(Exception):
    """The lease was lost before the agent could start: the attempt never ran."""


async def _run_agent(spec: AgentSpec, ctx: TaskContext, limits: WorkerLimits | None, port: SessionPort) -> Any:
    """The agent under the worker's shared limits and its own timeout, if the lease still holds."""
    limiters = []
    if limits is not None:
        limiters.append(limits.total)
        if spec.name in limits.per_agent:
            limiters.append(limits.per_agent[spec.name])
    for limiter in limiters:
        await limiter.acquire()
    try:
        try:  # right before the start: waiting for a slot may have outlasted the lease
            port.check_lease()
        except LeaseLostError as exc:
            raise _NotStarted() from exc
        if spec.timeout is None:
            return await _invoke(spec, ctx)
        with anyio.move_on_after(spec.timeout):
            return await _invoke(spec, ctx)
        raise AgentTimeoutError(spec.name, spec.timeout)  # reached only when the timer fired
    finally:
        for limiter in reversed(limiters):
            limiter.release()


def outcome_status(outcome: AttemptOutcome) -> str:
    """The task status an outcome stands for, as telemetry labels it."""
    if isinstance(outcome, Finished):
        return "COMPLETED"
    if isinstance(outcome, Waiting):
        return "WAITING"
    if isinstance(outcome, Cancelled):
        return "CANCELLED"
    return "FAILED"


async def run_attempt(
    port: SessionPort,
    spec: AgentSpec,
    launch: Launch,
    scope: anyio.CancelScope,
    *,
    telemetry: Telemetry,
    limits: WorkerLimits | None,
    report: Callable[[AttemptOutcome], None],
    gate: ResourceGate | None = None,
    needs: Needs | None = None,
) -> None:
    """Run the agent once inside `scope` and `report` how it ended.

    With a `gate`, the attempt first waits for its fleet-wide resources (`needs`) and a
    session slot; that wait is outside the agent's timeout and its worker limits."""
    ctx = TaskContext(port, launch)
    tid, attempt = launch.task_id, launch.attempt
    output: Any = None
    error: BaseException | None = None
    suspended: SuspendForSignal | None = None
    not_started = False
    started = port.clock.monotonic()
    with telemetry.task_span(port.session_id, tid, spec.name, attempt) as span:
        with scope:
            try:
                cached = await look_up(port, spec, tid, launch.input, launch.deps)
                if cached.hit:
                    output = cached.output
                    port.cache_hit(tid, attempt, spec.name, cached.key or "")
                elif gate is None:
                    output = await _run_agent(spec, ctx, limits, port)
                else:
                    output = await gate.run(tid, attempt, needs, lambda: _run_agent(spec, ctx, limits, port))
                try:
                    port.codec.to_jsonable(output, where=f"output of task {tid!r}")
                except SerializationError as exc:
                    raise NonRetryableError(str(exc)) from exc
                await remember(port, spec, cached, tid, output)
                span.set_status_ok()
            except SuspendForSignal as suspend:
                suspended = suspend
            except _NotStarted:
                not_started = True  # reported as cancelled: the stopping runner writes nothing for it
            except Exception as exc:  # noqa: BLE001 - every agent failure is recorded, then judged
                error = exc
                span.record_exception(exc)
        if scope.cancelled_caught:
            ctx.mark_cancelled()
    duration = port.clock.monotonic() - started
    outcome: AttemptOutcome
    if suspended is not None:
        outcome = Waiting(tid, attempt, suspended.name, suspended.deadline, duration)
    elif scope.cancelled_caught or not_started:
        outcome = Cancelled(tid, attempt, duration)
    elif isinstance(error, AgentTimeoutError):
        outcome = TimedOut(tid, attempt, error, duration)
    elif error is not None:
        outcome = Failed(tid, attempt, error, duration)
    else:
        outcome = Finished(tid, attempt, output, tuple(ctx.added.values()), duration)
    telemetry.task_finished(spec.name, outcome_status(outcome), duration)
    report(outcome)
