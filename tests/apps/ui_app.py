"""Pipelines the dashboard's tests run (`ui_app:<name>`), in a worker process or in-process.

`ui_demo`'s first task holds until the "gate" file named by the session input exists
(bounded), so a test can watch the DAG change; `flaky` fails its first attempt (a
traceback to open), `spawn` adds a task at run time, `review` waits for an approval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from orchestrator.agents import AgentContext, ApprovalAgent, RetryPolicy, TaskSpec, agent
from orchestrator.graph import Pipeline

_WAIT_LIMIT_S = 60.0


@agent
async def hold(ctx: AgentContext) -> str:
    """Waits (bounded) until the input's "gate" file exists; reports progress and a checkpoint."""
    gate = (ctx.session_input or {}).get("gate")
    ctx.progress(1, 2, phase="holding", step="waiting for the gate")
    await ctx.checkpoint({"stage": "holding"})
    with anyio.move_on_after(_WAIT_LIMIT_S):
        while gate and not Path(gate).exists():
            await anyio.sleep(0.05)
    ctx.progress(2, 2, phase="done")
    return "through"


@agent(retry=RetryPolicy(max_attempts=2, initial_backoff=0.2, jitter=0.0))
async def flaky(ctx: AgentContext) -> dict[str, Any]:
    """Fails its first attempt, then returns a long output (to be truncated on the page)."""
    if ctx.attempt == 1:
        raise RuntimeError("upstream flaked on the first attempt")
    return {"rows": [f"row {n}" for n in range(400)]}


@agent
async def spawn(ctx: AgentContext) -> str:
    """Adds the task "extra" at run time."""
    await ctx.add_task(TaskSpec("extra", "step", depends_on=["spawn"]))
    return "spawned"


@agent
async def step(ctx: AgentContext) -> str:
    ctx.progress(1, 1, phase="done")
    return ctx.task_id


@agent(retry=RetryPolicy(max_attempts=1))
async def broken(ctx: AgentContext) -> str:
    raise ValueError("this task always fails")


ui_demo = (
    Pipeline("ui_demo", agents=[hold, flaky, spawn, step, ApprovalAgent("approval")])
    .task("hold", "hold")
    .task("flaky", "flaky", depends_on=["hold"])
    .task("spawn", "spawn", depends_on=["hold"])
    .task("review", "approval", depends_on=["hold"])
    .task("publish", "step", depends_on=["flaky", "review", "spawn"])
)

failing = Pipeline("failing", agents=[step, broken]).task("prep", "step").task("boom", "broken", depends_on=["prep"])

single = Pipeline("single", agents=[step]).task("only", "step")
