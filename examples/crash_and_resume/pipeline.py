"""The crash-and-resume pipeline: every agent leaves a side-effect line per execution.

    prepare -> slow_a, slow_b, quick_c -> combine -> publish

`runs/<task>.log` gets one line per time an agent body ran (pid, attempt, fence), so
after a crash and a resume you can count which tasks ran once and which ran again.
The slow agents hold until a gate file exists, so a test can kill the worker while
they are in flight.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio

from orchestrator.agents import AgentContext, agent
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions

__all__ = ["FAST_LEASE", "GATE", "build_pipeline", "pipeline", "side_effects"]

GATE = "gate.open"
#: A short lease so an abandoned session is claimable within ~2 s (3 heartbeats + margin).
FAST_LEASE = RunOptions(lease_seconds=1.5, heartbeat_interval=0.3, clock_skew_margin=0.3, progress_interval=0.2)


def _record(ctx: AgentContext) -> Path:
    root = Path(ctx.session_input["workdir"])
    (root / "runs").mkdir(parents=True, exist_ok=True)
    with open(root / "runs" / f"{ctx.task_id}.log", "a") as log:
        log.write(f"{ctx.task_id} pid={os.getpid()} attempt={ctx.attempt} fence={ctx.fence}\n")
    return root


@agent
async def quick(ctx: AgentContext) -> dict[str, Any]:
    _record(ctx)
    return {"task": ctx.task_id, "pid": os.getpid(), "inputs": sorted(ctx.deps)}


@agent
async def slow(ctx: AgentContext) -> dict[str, Any]:
    """Mark itself started, then hold until the gate opens (heartbeating while it holds)."""
    root = _record(ctx)
    (root / "started").mkdir(exist_ok=True)
    (root / "started" / f"{ctx.task_id}.{os.getpid()}").touch()
    while not (root / GATE).exists():
        ctx.heartbeat()
        await anyio.sleep(0.05)
    return {"task": ctx.task_id, "pid": os.getpid()}


def build_pipeline() -> Pipeline:
    return (
        Pipeline("crash-and-resume", version="1", agents=[quick, slow])
        .task("prepare", "quick", priority=0)
        .task("slow_a", "slow", depends_on=["prepare"])
        .task("slow_b", "slow", depends_on=["prepare"])
        .task("quick_c", "quick", depends_on=["prepare"])
        .task("combine", "quick", depends_on=["slow_a", "slow_b", "quick_c"])
        .task("publish", "quick", depends_on=["combine"])
    )


#: For `orchestrator worker --app examples.crash_and_resume.pipeline:pipeline`.
pipeline = build_pipeline()


def side_effects(workdir: Path) -> dict[str, list[str]]:
    """Lines each task's agent wrote, one per execution."""
    runs = workdir / "runs"
    return {p.stem: p.read_text().splitlines() for p in sorted(runs.glob("*.log"))} if runs.exists() else {}
