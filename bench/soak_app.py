"""The soak's app: its pipeline, its agents, and the worker process (see bench/soak.py).

Every agent start leaves `<dir>/starts/<session>.<task>.<fence>.<attempt>.<pid>.json`
(task, fence, attempt, wall time, pid) and every claim a worker wins a line in
`<dir>/claims.<pid>.jsonl` (session, fence, wall time when the claim returned), so the
parent can check after the run that no agent started after its fence was taken over.

    python bench/soak_app.py worker STORE_URL DIR    run a Worker until SIGTERM
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from orchestrator.agents import AgentContext, agent
from orchestrator import RunOptions, SystemClock, Worker
from orchestrator.codec import default_codec
from orchestrator.graph import Pipeline
from orchestrator.store.config import StoreConfig
from orchestrator.store.dynamodb import DynamoDBStore
from orchestrator.store.records import ClaimPolicy, Lease, SessionRecord

#: Short leases so takeovers happen within seconds (lease >= 3 x heartbeat + margin).
OPTIONS = RunOptions(lease_seconds=6.0, heartbeat_interval=1.5, clock_skew_margin=1.0, concurrency=4,
                     progress_interval=1.0, flush_interval=2.0)
#: The pipeline: a -> b -> c1..c4 (fan-out) -> d (fan-in) -> e -> f -> g; each depends on the last.
TASKS: dict[str, tuple[str, ...]] = {
    "a": (), "b": ("a",), "c1": ("b",), "c2": ("b",), "c3": ("b",), "c4": ("b",),
    "d": ("c1", "c2", "c3", "c4"), "e": ("d",), "f": ("e",), "g": ("f",),
}
WORK_S = (0.5, 2.0)  # each agent sleeps this long (uniform), so kills land mid-task


def record_start(ctx: AgentContext) -> None:
    """Leave one file per agent start: the side effect the soak counts."""
    starts = Path(ctx.session_input["dir"]) / "starts"
    entry = {"session": ctx.session_id, "task": ctx.task_id, "fence": ctx.fence, "attempt": ctx.attempt,
             "at": time.time(), "pid": os.getpid()}
    name = f"{ctx.session_id}.{ctx.task_id}.{ctx.fence}.{ctx.attempt}.{os.getpid()}.json"
    (starts / name).write_text(json.dumps(entry))


def value(salt: int, task: str, deps: Mapping[str, int]) -> int:
    """A task's output: its own number plus its dependencies' (so a wrong input shows)."""
    return salt * 1000 + list(TASKS).index(task) + 1 + sum(deps.values())


def expected(salt: int) -> dict[str, int]:
    """Every task's correct output for a session with this salt."""
    out: dict[str, int] = {}
    for task, deps in TASKS.items():  # TASKS is in topological order
        out[task] = value(salt, task, {d: out[d] for d in deps})
    return out


@agent(name="work")
async def work(ctx: AgentContext) -> dict[str, Any]:
    """Records its start, sleeps a little, returns its value."""
    record_start(ctx)
    await anyio.sleep(random.uniform(*WORK_S))
    deps = {name: int(out["v"]) for name, out in ctx.deps.items()}
    return {"v": value(int(ctx.session_input["salt"]), ctx.task_id, deps)}


def _pipeline() -> Pipeline:
    pipe = Pipeline("soak", agents=[work])
    for task, deps in TASKS.items():
        pipe.task(task, "work", depends_on=list(deps))
    return pipe


PIPELINE = _pipeline()


class ClaimLog(DynamoDBStore):
    """The DynamoDB store, logging each claim it wins (session, fence, time) to a file."""

    log_path: Path

    async def claim_session(self, session_id: str, owner: str, lease_seconds: float,
                            policy: ClaimPolicy = ClaimPolicy(), *, seen: SessionRecord | None = None) -> Lease:
        lease = await super().claim_session(session_id, owner, lease_seconds, policy, seen=seen)
        line = json.dumps({"session": session_id, "fence": lease.fence, "at": time.time(), "pid": os.getpid()})
        async with await anyio.open_file(self.log_path, "a") as f:
            await f.write(line + "\n")
        return lease


async def run_worker(url: str, directory: Path) -> None:
    """Run a Worker on the soak pipeline until SIGTERM/SIGINT."""
    config = StoreConfig.from_url(url).dynamodb
    assert config is not None, "the soak runs on DynamoDB (a dynamodb:// URL)"
    store = ClaimLog(config, clock=SystemClock(), codec=default_codec)
    store.log_path = directory / f"claims.{os.getpid()}.jsonl"
    async with store:
        worker = Worker(store, PIPELINE, concurrency=4, options=OPTIONS, poll_interval=0.5, grace=2.0)
        async with anyio.create_task_group() as tg:
            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        worker.stop()
                        return

            tg.start_soon(on_signal)
            await worker.run()
            tg.cancel_scope.cancel()


def main(argv: list[str]) -> None:
    if len(argv) != 3 or argv[0] != "worker":
        sys.exit(__doc__)
    anyio.run(run_worker, argv[1], Path(argv[2]))


if __name__ == "__main__":
    main(sys.argv[1:])
