"""Pipelines the flow-control tests run in worker processes (`flow_app:<name>`).

The agents observe the fleet-wide limits themselves, in files under `$FLOW_MARK_DIR`:
`llm` counts how many of its runs are inside the agent at once across every process
(under an fcntl lock) and keeps the highest count seen; every run appends its start
time (wall clock: the processes share no injected clock) to `starts.log`. `stuck`
holds its resource until the file `release` appears (a test kills its worker first).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

import anyio

from orchestrator.agents import AgentContext, agent
from orchestrator.graph import Pipeline

_HOLD_S = 0.4  # long enough for 3 holders to overlap on the one-request-at-a-time moto server
_STUCK_LIMIT_S = 60.0


def _dir() -> Path:
    return Path(os.environ["FLOW_MARK_DIR"])


def _count(delta: int, session_id: str) -> None:
    """Add `delta` to the number of runs inside the agent; keep the highest; log the start."""
    folder = _dir()
    with open(folder / "lock", "a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        now_path, max_path = folder / "inside", folder / "max"
        inside = int(now_path.read_text() or 0) if now_path.exists() else 0
        inside += delta
        now_path.write_text(str(inside))
        highest = int(max_path.read_text() or 0) if max_path.exists() else 0
        max_path.write_text(str(max(highest, inside)))
        if delta > 0:
            with open(folder / "starts.log", "a", encoding="utf-8") as log:
                log.write(f"{time.time():.6f} {session_id} {os.getpid()}\n")
        fcntl.flock(lock, fcntl.LOCK_UN)


@agent(uses={"openai": 1})
async def call_llm(ctx: AgentContext) -> dict[str, Any]:
    """A rate-limited "LLM call": counted while inside, then returns."""
    _count(+1, ctx.session_id)
    try:
        await anyio.sleep(_HOLD_S)
    finally:
        _count(-1, ctx.session_id)
    return {"session": ctx.session_id}


@agent(uses={"openai": 1})
async def stuck(ctx: AgentContext) -> str:
    """Holds its unit of `openai` until the file `release` exists (bounded)."""
    (_dir() / f"holding-{os.getpid()}").write_text(ctx.session_id)
    with anyio.move_on_after(_STUCK_LIMIT_S):
        while not (_dir() / "release").exists():
            await anyio.sleep(0.05)
    return "released"


llm = Pipeline("llm", agents=[call_llm]).task("call", call_llm)
hold = Pipeline("hold", agents=[stuck]).task("hold", stuck)


@agent
async def tick(ctx: AgentContext) -> str:
    """What a schedule starts in the fleet test: nothing but a completed session."""
    return ctx.session_id


ticker = Pipeline("ticker", agents=[tick]).task("tick", tick)
