"""Pipelines the CLI, fleet and Lambda tests run in child processes (`demo_app:<name>`).

Every agent execution appends one line to `$DEMO_MARK_DIR/<session>.log` (task, attempt,
pid) when that variable is set, so tests count executions from side effects rather
than from printed text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio

from orchestrator.agents import AgentContext, ApprovalAgent, RetryPolicy, agent
from orchestrator.graph import Pipeline

_WAIT_LIMIT_S = 60.0


def _mark(ctx: AgentContext) -> None:
    folder = os.environ.get("DEMO_MARK_DIR")
    if folder:
        with open(Path(folder) / f"{ctx.session_id}.log", "a", encoding="utf-8") as f:
            f.write(f"{ctx.task_id} {ctx.attempt} {os.getpid()}\n")


@agent
async def step(ctx: AgentContext) -> dict[str, Any]:
    """Reports progress and returns its task id with the ids of its dependencies."""
    _mark(ctx)
    ctx.progress(1, 1, phase="done")
    return {"task": ctx.task_id, "deps": sorted(ctx.deps)}


@agent(retry=RetryPolicy(max_attempts=1))
async def fragile(ctx: AgentContext) -> str:
    """Fails until the file named by the session input's "marker" exists."""
    _mark(ctx)
    marker = (ctx.session_input or {}).get("marker", "")
    if not marker or not Path(marker).exists():
        raise RuntimeError(f"marker {marker!r} is missing")
    return "fixed"


@agent
async def gated(ctx: AgentContext) -> str:
    """Writes "<started>" then waits (bounded) until the "gate" file of the input exists."""
    _mark(ctx)
    spec = ctx.session_input or {}
    Path(spec["started"]).write_text(str(os.getpid()), encoding="utf-8")
    with anyio.move_on_after(_WAIT_LIMIT_S):
        while not Path(spec["gate"]).exists():
            await anyio.sleep(0.05)
    return "through"


@agent
async def two_signals(ctx: AgentContext) -> dict[str, Any]:
    """Waits for signal "go-ahead" (within an hour), then for "confirm" (no deadline)."""
    _mark(ctx)
    first = await ctx.wait_for_signal("go-ahead", timeout=3600)
    second = await ctx.wait_for_signal("confirm")
    return {"go-ahead": first, "confirm": second}


small = (
    Pipeline("small", agents=[step])
    .task("plan", "step")
    .task("code", "step", depends_on=["plan"])
    .task("docs", "step", depends_on=["plan"])
    .task("ship", "step", depends_on=["code", "docs"])
)

flaky = (
    Pipeline("flaky", agents=[step, fragile])
    .task("prep", "step")
    .task("fragile", "fragile", depends_on=["prep"])
    .task("after", "step", depends_on=["fragile"])
)

approval = (
    Pipeline("approval", agents=[step, ApprovalAgent("approval")])
    .task("draft", "step")
    .task("review", "approval", depends_on=["draft"])
    .task("publish", "step", depends_on=["review"])
)

signals = Pipeline("signals", agents=[two_signals, step]).task("hold", "two_signals").task(
    "after", "step", depends_on=["hold"])

gate = Pipeline("gate", agents=[gated, step]).task("hold", "gated").task("after", "step", depends_on=["hold"])

watched = (
    Pipeline("watched", agents=[gated, ApprovalAgent("approval")])
    .task("hold", "gated")
    .task("review", "approval", depends_on=["hold"])
)


_active = {"probe": 0}


@agent
async def probe(ctx: AgentContext) -> dict[str, Any]:
    """Counts the probes running at once in this process: waits (bounded) until "want" run, returns the peak."""
    _active["probe"] += 1
    peak = _active["probe"]
    try:
        with anyio.move_on_after(float((ctx.session_input or {}).get("wait", 1.0))):
            while peak < int((ctx.session_input or {}).get("want", 2)):
                await anyio.sleep(0.01)
                peak = max(peak, _active["probe"])
    finally:
        _active["probe"] -= 1
    return {"peak": peak}


wide = Pipeline("wide", agents=[probe]).task("p1", "probe").task("p2", "probe").task("p3", "probe")


@agent(retry=RetryPolicy(max_attempts=2, initial_backoff=0.01, jitter=0.0))
async def wobbly(ctx: AgentContext) -> str:
    """Fails its first attempt, succeeds on the retry."""
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return "steady"


retry_once = Pipeline("retry_once", agents=[wobbly]).task("wobble", "wobbly")


@agent
async def progress_probe(ctx: AgentContext) -> dict[str, Any]:
    """Reports progress, then watches the store (bounded by input "wait") until it is written there."""
    from orchestrator.store import open_store

    spec = ctx.session_input or {}
    ctx.progress(1, 2, phase="half")
    store = open_store(spec["store"])
    try:
        await store.initialize()
        with anyio.move_on_after(float(spec["wait"])):
            while (await store.get_task(ctx.session_id, ctx.task_id)).progress.current != 1:
                await anyio.sleep(0.02)
            return {"seen": True}
    finally:
        await store.aclose()
    return {"seen": False}


progress = Pipeline("progress", agents=[progress_probe]).task("watch", "progress_probe")


def make_small() -> Pipeline:
    """A zero-argument factory: APP:PIPELINE may name one."""
    return small


not_a_pipeline = 42
