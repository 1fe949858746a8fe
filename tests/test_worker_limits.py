"""A worker refuses limits that would let it claim sessions and never start an agent."""

from __future__ import annotations

import pytest

from agents import AgentContext, agent
from orchestrator.errors import ValidationError
from orchestrator.graph import Pipeline
from orchestrator.recovery import Worker
from orchestrator.scheduler import WorkerLimits, submit
from orchestrator.store import SessionStatus
from orchestrator.testing import temporary_store

pytestmark = pytest.mark.anyio


@agent(name="noop")
async def noop(ctx: AgentContext) -> None:
    return None


PIPELINE = Pipeline("limited", agents=[noop]).task("t", "noop")


@pytest.mark.parametrize(
    ("limits", "named"),
    [(WorkerLimits(concurrency=0), "WorkerLimits.concurrency=0"),
     (WorkerLimits(per_agent={"noop": 0}), "WorkerLimits.per_agent['noop']=0")],
    ids=["total", "per-agent"],
)
async def test_a_worker_refuses_a_limit_of_zero_before_claiming_anything(limits: WorkerLimits, named: str) -> None:
    async with temporary_store() as store:
        sid = await submit(PIPELINE, None, store=store)
        with pytest.raises(ValidationError) as err:
            Worker(store, PIPELINE, worker_id="w-1", limits=limits)
        assert named in str(err.value) and "worker w-1" in str(err.value) and "1 or more" in str(err.value)
        assert (await store.get_session(sid)).status is SessionStatus.PENDING


async def test_a_worker_accepts_limits_of_one() -> None:
    async with temporary_store() as store:
        worker = Worker(store, PIPELINE, limits=WorkerLimits(concurrency=1, per_agent={"noop": 1}))
        assert worker.limits.total.total_tokens == 1
