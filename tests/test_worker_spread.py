"""Workers sharing one store spread over its sessions: each session is claimed and run once."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

from orchestrator import submit
from orchestrator.agents import AgentContext, agent
from orchestrator.graph import Pipeline
from orchestrator.recovery import Worker, WorkerReport
from orchestrator.store import SessionStatus, open_store

pytestmark = pytest.mark.anyio

RUNS: list[tuple[str, str]] = []


@agent(name="note")
async def note(ctx: AgentContext) -> None:
    RUNS.append((ctx.session_id, ctx.task_id))
    await anyio.sleep(0.01)


def _pipeline() -> Pipeline:
    pipe = Pipeline("spread", agents=[note])
    pipe.task("a", "note")
    pipe.task("b", "note", depends_on=["a"])
    return pipe


async def test_four_workers_on_one_store_run_every_session_and_task_exactly_once(tmp_path: Path) -> None:
    RUNS.clear()
    pipe = _pipeline()
    async with open_store(f"sqlite://{tmp_path / 'spread.db'}") as store:
        ids = [await submit(pipe, store=store, session_id=f"s-{i:02d}") for i in range(30)]
        workers = [Worker(store, pipe, worker_id=f"w{n}", concurrency=3, poll_interval=0.05, rng=random.Random(n))
                   for n in range(4)]
        reports: list[WorkerReport] = []

        async def work(w: Worker) -> None:
            reports.append(await w.run(idle_exit=0.5))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for w in workers:
                    tg.start_soon(work, w)
        ran = [set(r.results) for r in reports]
        assert sum(len(r) for r in ran) == len(ids) and set().union(*ran) == set(ids)
        for sid in ids:
            s = await store.get_session(sid)
            assert (s.status, s.fence) == (SessionStatus.COMPLETED, 1), sid
    assert sorted(RUNS) == sorted((sid, t) for sid in ids for t in ("a", "b"))
