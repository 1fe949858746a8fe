"""Limits that would let a worker claim sessions and never start an agent are refused when made."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.agents import AgentContext, agent
from orchestrator.errors import ValidationError
from orchestrator.graph import Pipeline
from orchestrator.recovery import Worker
from orchestrator.scheduler import WorkerLimits
from orchestrator.testing import temporary_store

pytestmark = pytest.mark.anyio


@agent(name="noop")
async def noop(ctx: AgentContext) -> None:
    return None


PIPELINE = Pipeline("limited", agents=[noop]).task("t", "noop")


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"concurrency": 0}, "WorkerLimits.concurrency=0"),
     ({"per_agent": {"noop": 0}}, "WorkerLimits.per_agent['noop']=0")],
    ids=["total", "per-agent"],
)
def test_limits_of_zero_are_refused_when_made(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError) as err:
        WorkerLimits(**kwargs)
    assert named in str(err.value) and "1 or more" in str(err.value)


async def test_a_worker_accepts_limits_of_one() -> None:
    async with temporary_store() as store:
        worker = Worker(store, PIPELINE, limits=WorkerLimits(concurrency=1, per_agent={"noop": 1}))
        assert worker.limits.total.total_tokens == 1
