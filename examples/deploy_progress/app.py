"""A 29-step deploy, tracked two ways.

1. `run_scheduled`: each step is a `CommandAgent` task (a real subprocess) in a chain
   run by the scheduler; `CommandAgent` turns each `[n/29] phase: step` line into
   task progress and a log event, and the session's progress counts finished steps.
2. `run_external`: a plain script runs the same commands itself and records the same
   progress with the state API only (`SessionRecorder`, owner kind `external`): no
   scheduler, no worker, exactly what an existing deploy script would add.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from orchestrator.agents import AgentContext, CommandAgent
from examples.deploy_progress.steps import STEPS, TOTAL, Step, shell_argv
from orchestrator.errors import SessionNotFoundError
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, RunResult, run
from orchestrator.state import SessionRecorder
from orchestrator.store import SessionRecord, Store

__all__ = ["EXTERNAL_TASK", "ExternalDeploy", "build_pipeline", "pipeline", "run_external", "run_scheduled", "watch"]

EXTERNAL_TASK = "cdk-deploy"
_LINE = re.compile(r"\[(\d+)/(\d+)\]\s*([^:]+):\s*(.+)")


def _argv_for(step: Step) -> Any:
    def argv(ctx: AgentContext) -> Sequence[str]:
        return shell_argv(step, str(ctx.session_input["out_dir"]), float(ctx.session_input.get("step_seconds", 0)))

    return argv


def build_pipeline() -> Pipeline:
    """29 `CommandAgent` tasks, each after the previous one (a deploy is a sequence)."""
    pipe = Pipeline("deploy-progress", version="1")
    previous: str | None = None
    for step in STEPS:
        pipe.task(step.task_id, CommandAgent(step.task_id, _argv_for(step), timeout=60),
                  depends_on=[previous] if previous else [])
        previous = step.task_id
    return pipe


#: For `orchestrator worker --app examples.deploy_progress.app:pipeline`.
pipeline = build_pipeline()


async def run_scheduled(
    store: Store,
    out_dir: Path,
    *,
    step_seconds: float = 0.0,
    session_id: str | None = None,
    options: RunOptions | None = None,
) -> RunResult:
    """Run the 29 steps under the scheduler (each working `step_seconds`); markers land in `out_dir`."""
    return await run(
        pipeline, {"out_dir": str(out_dir), "step_seconds": step_seconds}, store=store, session_id=session_id,
        project_id="miyabi-webui", metadata={"task_name": "CDK Deploy - UI Improvements", "task_type": "cdk_deploy"},
        options=options,
    )


async def watch(store: Store, session_id: str, *, interval: float = 0.1) -> list[str]:
    """Poll the session as a dashboard would, printing each new progress; returns what it saw.

    Stops when the session ends. Reads the session item only (one GetItem a poll).
    """
    seen: list[str] = []
    while True:
        try:
            session = await store.get_session(session_id)
        except SessionNotFoundError:
            await anyio.sleep(interval)
            continue
        agents = ",".join(session.current_agents) or "-"
        line = f"[{session.progress.current}/{session.progress.total}] {session.status.value} running={agents}"
        if not seen or seen[-1] != line:
            seen.append(line)
            print(f"   watcher: {line}")
        if session.status.is_final:
            return seen
        await anyio.sleep(interval)


@dataclass(frozen=True, slots=True)
class ExternalDeploy:
    session: SessionRecord
    lines: tuple[str, ...]


async def run_external(store: Store, out_dir: Path) -> ExternalDeploy:
    """Run the same 29 commands from a plain loop, recording progress with the state API only."""
    lines: list[str] = []
    async with await SessionRecorder.start(
        store,
        pipeline="cdk-deploy-script",
        tasks=[EXTERNAL_TASK],
        project_id="miyabi-webui",
        metadata={"task_name": "CDK Deploy - UI Improvements", "task_type": "cdk_deploy",
                  "execution_type": "headless", "agent": "orchestrator"},
    ) as rec:
        await rec.task_started(EXTERNAL_TASK)
        for step in STEPS:
            done = await anyio.run_process(shell_argv(step, str(out_dir)))
            line = done.stdout.decode().strip()
            match = _LINE.match(line)
            if match is None:
                raise RuntimeError(f"step {step.number}: unexpected output {line!r}")
            lines.append(line)
            await rec.progress(EXTERNAL_TASK, int(match[1]), int(match[2]), phase=match[3], step=match[4])
            await rec.log(line, task_id=EXTERNAL_TASK)
        await rec.task_completed(EXTERNAL_TASK, {"steps": TOTAL, "last_line": lines[-1]})
        await rec.update(metadata={"log_stream": f"task-{rec.session_id}"})
    return ExternalDeploy(await store.get_session(rec.session_id), tuple(lines))
