"""One attempt of one task: build its context, run its agent on its executor, report.

The outcome goes back to the session runner's dispatcher as a message; this module
writes nothing itself (checkpoints excepted, through the context).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_process
import anyio.to_thread

from agents.context import ProcessContext
from agents.errors import AgentTimeoutError, NonRetryableError
from agents.spec import AgentSpec
from orchestrator.scheduler.context import SuspendForSignal, SyncTaskContext, TaskContext
from orchestrator.errors import SerializationError
from orchestrator.store.records import NewTask

if TYPE_CHECKING:
    from orchestrator.scheduler.runner import SessionRunner

__all__ = ["AgentOutcome", "run_attempt"]


@dataclass(slots=True)
class AgentOutcome:
    task_id: str
    attempt: int
    output: Any = None
    error: BaseException | None = None
    suspended: SuspendForSignal | None = None
    cancelled: bool = False
    duration: float | None = None
    added: dict[str, NewTask] = field(default_factory=dict)


async def _invoke(spec: AgentSpec, ctx: TaskContext, runner: SessionRunner) -> Any:
    if spec.executor == "async":
        return await spec.fn(ctx)
    if spec.executor == "thread":
        return await anyio.to_thread.run_sync(spec.fn, SyncTaskContext(ctx), abandon_on_cancel=True)
    pctx = ProcessContext(
        session_id=ctx.session_id, task_id=ctx.task_id, agent=ctx.agent, attempt=ctx.attempt,
        fence=ctx.fence, input=ctx.input, session_input=ctx.session_input, deps=dict(ctx.deps), state=ctx.state,
    )
    return await anyio.to_process.run_sync(spec.fn, pctx, cancellable=True)


async def run_attempt(
    runner: SessionRunner,
    spec: AgentSpec,
    task_id: str,
    attempt: int,
    task_input: Any,
    deps: dict[str, Any],
    state: Any,
    wait_deadline: float | None,
    scope: anyio.CancelScope,
) -> None:
    """Run the agent once and send an AgentOutcome to the dispatcher."""
    ctx = TaskContext(
        runner, task_id=task_id, agent=spec.name, attempt=attempt, input=task_input, deps=deps,
        state=state, wait_deadline=wait_deadline,
    )
    outcome = AgentOutcome(task_id, attempt)
    started = runner.clock.monotonic()
    with runner.telemetry.task_span(runner.session_id, task_id, spec.name, attempt) as span:
        with scope:
            try:
                limiters = []
                if runner.limits is not None:
                    limiters.append(runner.limits.total)
                    if spec.name in runner.limits.per_agent:
                        limiters.append(runner.limits.per_agent[spec.name])
                for limiter in limiters:
                    await limiter.acquire()
                try:
                    if spec.timeout is not None:
                        with anyio.move_on_after(spec.timeout) as timer:
                            output = await _invoke(spec, ctx, runner)
                        if timer.cancelled_caught:
                            raise AgentTimeoutError(spec.name, spec.timeout)
                    else:
                        output = await _invoke(spec, ctx, runner)
                finally:
                    for limiter in reversed(limiters):
                        limiter.release()
                try:
                    runner.store.codec.to_jsonable(output, where=f"output of task {task_id!r}")
                except SerializationError as exc:
                    raise NonRetryableError(str(exc)) from exc
                outcome.output = output
                outcome.added = dict(ctx.added)
                span.set_status_ok()
            except SuspendForSignal as suspend:
                outcome.suspended = suspend
            except Exception as exc:  # noqa: BLE001 - every agent failure is recorded, then judged
                outcome.error = exc
                span.record_exception(exc)
        if scope.cancelled_caught:
            ctx._cancel()
            outcome.cancelled = True
    outcome.duration = runner.clock.monotonic() - started
    status = ("CANCELLED" if outcome.cancelled else "WAITING" if outcome.suspended else
              "FAILED" if outcome.error is not None else "COMPLETED")
    runner.telemetry.task_finished(spec.name, status, outcome.duration)
    runner.notify("outcome", outcome)
