"""Module-level agents and pipelines for child processes (and process-executor agents).

Agents leave side-effect files in the session input's `dir`:
`<task>.<attempt>.<pid>.start` when they begin and `<task>.<attempt>.<pid>.done` when
they finish, so a test counts how often each task really ran, across processes. A
gated agent waits for `go.<task>` to exist, which lets the parent hold a child at a
chosen point and kill it there.

Child entry point (see `helpers.spawn_child`):

    python -c "import sys; from scheduler.apps import main; main(sys.argv[1:])" CMD ARGS...
      run URL SID PIPELINE DIR [OPTIONS_JSON]    run a new session, print its RunResult
      resume URL SID PIPELINE [OPTIONS_JSON]     resume a session, print its RunResult
      signal URL SID TASK NAME PAYLOAD_JSON      deliver a signal
      cancel URL SID REASON                      request cancellation
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from orchestrator.agents import AgentContext, ProcessContext, TaskSpec, agent
from orchestrator.graph import Pipeline

GATE_TIMEOUT_S = 60.0


def mark(ctx: AgentContext, what: str) -> None:
    """Leave `<dir>/<task>.<attempt>.<pid>.<what>`: proof that this attempt reached `what`."""
    directory = Path(ctx.session_input["dir"])
    (directory / f"{ctx.task_id}.{ctx.attempt}.{os.getpid()}.{what}").write_text(str(time.time()))


async def gate(ctx: AgentContext, name: str) -> None:
    """Wait (bounded) until the parent creates `<dir>/go.<name>`."""
    path = Path(ctx.session_input["dir"]) / f"go.{name}"
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gate {path} was not opened within {GATE_TIMEOUT_S}s")
        await anyio.sleep(0.01)


@agent(name="step")
async def gated_step(ctx: AgentContext) -> dict[str, Any]:
    """One chain link: waits for its gate, returns the length of the chain so far."""
    mark(ctx, "start")
    await gate(ctx, ctx.task_id)
    n = 1 + sum(int(out["n"]) for out in ctx.deps.values())
    mark(ctx, "done")
    return {"task": ctx.task_id, "n": n}


CHAIN_TASKS: tuple[str, ...] = ("t1", "t2", "t3", "t4", "t5")


def _chain() -> Pipeline:
    pipe = Pipeline("crash-chain", agents=[gated_step])
    previous: list[str] = []
    for tid in CHAIN_TASKS:
        pipe.task(tid, "step", depends_on=previous)
        previous = [tid]
    return pipe


CHAIN = _chain()

SUB_TASKS: tuple[str, ...] = ("sub-0", "sub-1", "sub-2")


@agent(name="coordinator")
async def coordinator(ctx: AgentContext) -> dict[str, Any]:
    """Decomposes its work into sub-tasks and a join, then waits for its gate."""
    mark(ctx, "start")
    for i, tid in enumerate(SUB_TASKS):
        await ctx.add_task(TaskSpec(task_id=tid, agent="sub", input={"i": i}))
    await ctx.add_task(TaskSpec(task_id="join", agent="join", depends_on=SUB_TASKS))
    mark(ctx, "added")
    await gate(ctx, ctx.task_id)
    mark(ctx, "done")
    return {"added": len(SUB_TASKS) + 1}


@agent(name="sub")
async def sub_step(ctx: AgentContext) -> dict[str, Any]:
    mark(ctx, "start")
    mark(ctx, "done")
    return {"i": ctx.input["i"]}


@agent(name="join")
async def join_step(ctx: AgentContext) -> dict[str, Any]:
    mark(ctx, "start")
    mark(ctx, "done")
    return {"sum": sum(int(out["i"]) for out in ctx.deps.values())}


DYNAMIC = Pipeline("crash-dynamic", agents=[coordinator, sub_step, join_step]).task("coord", "coordinator")

CHECKPOINT_STEPS = 5
CHECKPOINT_BLOCK_AT = 2


@agent(name="stepper")
async def stepper(ctx: AgentContext) -> dict[str, Any]:
    """Works through steps, checkpointing after each; blocks on its gate after step 2."""
    state = ctx.state or {"next": 0}
    (Path(ctx.session_input["dir"]) / f"{ctx.task_id}.{ctx.attempt}.{os.getpid()}.state").write_text(
        json.dumps(ctx.state)
    )
    mark(ctx, "start")
    first = int(state["next"])
    for k in range(first, CHECKPOINT_STEPS):
        (Path(ctx.session_input["dir"]) / f"work.{k}.{os.getpid()}").write_text(str(k))
        await ctx.checkpoint({"next": k + 1})
        if k == CHECKPOINT_BLOCK_AT:
            mark(ctx, "blocked")
            await gate(ctx, ctx.task_id)
    mark(ctx, "done")
    return {"resumed_from": first, "steps": CHECKPOINT_STEPS}


CHECKPOINT = Pipeline("crash-checkpoint", agents=[stepper]).task("steps", "stepper")


@agent(name="waiter")
async def waiter(ctx: AgentContext) -> dict[str, Any]:
    """Waits durably for the "approve" signal and returns its payload."""
    mark(ctx, "start")
    payload = await ctx.wait_for_signal("approve")
    mark(ctx, "done")
    return {"payload": payload}


@agent(name="after")
async def after(ctx: AgentContext) -> dict[str, Any]:
    return {"seen": dict(ctx.deps)}


SIGNAL = Pipeline("signal-wait", agents=[waiter, after]).task("ask", "waiter").task("then", "after", depends_on="ask")


@agent(name="square", executor="process")
def process_square(ctx: ProcessContext) -> dict[str, Any]:
    """Runs in a worker process: proves the executor crossed a process boundary."""
    return {"square": int(ctx.input["x"]) ** 2, "pid": os.getpid()}


PIPELINES: dict[str, Pipeline] = {p.name: p for p in (CHAIN, DYNAMIC, CHECKPOINT, SIGNAL)}


def _result_json(result: Any) -> dict[str, Any]:
    return {
        "status": result.status.value,
        "outputs": dict(result.outputs),
        "tasks": {tid: status.value for tid, status in result.tasks.items()},
        "reason": result.reason,
        "pid": os.getpid(),
    }


def _error_name(exc: BaseException) -> str:
    """`LeaseLostError`, or `ExceptionGroup[LeaseLostError]` for a wrapped one (reported as is)."""
    if isinstance(exc, BaseExceptionGroup):
        return f"{type(exc).__name__}[{','.join(_error_name(e) for e in exc.exceptions)}]"
    return type(exc).__name__


async def _child(argv: list[str]) -> dict[str, Any]:
    from orchestrator.errors import OrchestratorError
    from orchestrator.scheduler import RunOptions, resume, run
    from orchestrator.store import open_store

    cmd, url, sid, *rest = argv
    store = open_store(url)
    await store.initialize()
    try:
        if cmd == "run":
            name, directory, *opts = rest
            options = RunOptions(**json.loads(opts[0])) if opts else RunOptions()
            try:
                result = await run(PIPELINES[name], {"dir": directory}, store=store, session_id=sid, options=options)
            except (OrchestratorError, ExceptionGroup) as exc:
                return {"error": _error_name(exc), "message": str(exc), "pid": os.getpid()}
            return _result_json(result)
        if cmd == "resume":
            name, *opts = rest
            options = RunOptions(**json.loads(opts[0])) if opts else RunOptions()
            try:
                result = await resume(PIPELINES[name], sid, store=store, options=options)
            except (OrchestratorError, ExceptionGroup) as exc:
                return {"error": _error_name(exc), "message": str(exc), "pid": os.getpid()}
            return _result_json(result)
        if cmd == "signal":
            task, name, payload = rest
            seq = await store.send_signal(sid, task, name, json.loads(payload))
            return {"seq": seq}
        if cmd == "cancel":
            [reason] = rest
            record = await store.request_cancel(sid, reason)
            return {"status": record.status.value, "cancel_requested": record.cancel_requested}
        raise SystemExit(f"unknown command {cmd!r}; use run, resume, signal or cancel")
    finally:
        await store.aclose()


def main(argv: list[str]) -> None:
    """Child entry point: run one command, print its result as one JSON line."""
    result = anyio.run(_child, argv)
    print(json.dumps(result), flush=True)
    sys.exit(0)
