"""A DynamoDB-compatible store that lacks features (like dynalite: no transactions, no TTL
API, no point-in-time recovery) runs every pipeline; what it lacks is a warning, and
`doctor` names it.

The store is the session's moto server behind a `FaultProxy` that answers the missing
operations with DynamoDB's 400 `UnknownOperationException`, as such a store does.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cli_helpers import cli

from orchestrator.agents import AgentContext, agent
from orchestrator.clock import SystemClock
from orchestrator.codec import default_codec
from orchestrator.graph import Pipeline
from orchestrator.scheduler import run
from orchestrator.store import DynamoDBConfig, SessionStatus
from orchestrator.store.dynamodb import DynamoDBStore
from orchestrator.store.records import NewSession, NewTask, TaskStatus, TaskWrite, TaskWriteKind, WriteOutcome
from orchestrator.testing.fault_proxy import FaultProxy

pytestmark = pytest.mark.anyio

UNKNOWN = {"__type": "com.amazon.coral.service#UnknownOperationException"}
REGION = "us-east-1"


@pytest.fixture
def proxy(moto_upstream: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_upstream) as started:
        yield started


@pytest.fixture
def table() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def store_at(endpoint: str, table: str, **kw: Any) -> DynamoDBStore:
    config = DynamoDBConfig(table=table, region=REGION, endpoint=endpoint, initial_backoff_ms=1.0, **kw)
    return DynamoDBStore(config, clock=SystemClock(), codec=default_codec)


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "has no transactions" in r.getMessage()]


# -- transactions ----------------------------------------------------------------------------------

async def test_a_pipeline_runs_on_a_store_without_transactions_and_the_fallback_is_logged_once(
    proxy: FaultProxy, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.respond("TransactWriteItems", 400, UNKNOWN)

    @agent(name="echo")
    async def echo(ctx: AgentContext) -> str:
        return ctx.task_id

    pipe = Pipeline("no-tx", agents=[echo]).task("a", "echo").task("b", "echo", depends_on="a")
    for t in ("c", "d"):
        pipe.task(t, "echo", depends_on="b")
    async with store_at(proxy.endpoint, table) as store:
        first = await run(pipe, store=store)
        second = await run(pipe, store=store)
        assert not store.transactions
    assert (first.status, second.status) == (SessionStatus.COMPLETED, SessionStatus.COMPLETED)
    assert first.outputs == {"a": "a", "b": "b", "c": "c", "d": "d"}
    assert proxy.injected["answered"] == 1  # asked once, then single-item writes only
    [warning] = fallback_warnings(caplog)
    assert "&transactions=0" in warning and "UnknownOperationException" in warning


@pytest.mark.parametrize("first_write", ["task batch", "signal"])
async def test_each_transactional_write_falls_back_to_single_items(
    proxy: FaultProxy, moto_upstream: str, table: str, first_write: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with store_at(moto_upstream, table, transactions=False) as setup:  # not through the proxy
        await setup.create_session(NewSession("s1", "p"), [NewTask("t0", "echo"), NewTask("t1", "echo")])
    proxy.respond("TransactWriteItems", 400, UNKNOWN)
    async with store_at(proxy.endpoint, table) as store:
        if first_write == "task batch":
            lease = await store.claim_session("s1", "w1", 30)
            results = await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t0", 1),
                                                      TaskWrite(TaskWriteKind.START, "t1", 1)])
            assert [r.outcome for r in results] == [WriteOutcome.APPLIED] * 2
            tasks = (await store.load_session("s1")).tasks
            assert {t.status for t in tasks.values()} == {TaskStatus.RUNNING}
        else:
            assert await store.send_signal("s1", "t0", "go", {"ok": True}) == 1
            assert ("t0", "go") in (await store.load_session("s1")).signals
    assert proxy.injected["answered"] == 1 and len(fallback_warnings(caplog)) == 1


# -- TTL and point-in-time recovery ------------------------------------------------------------------

FEATURES = {
    "TTL": ("DescribeTimeToLive", "UpdateTimeToLive"),
    "point-in-time recovery": ("DescribeContinuousBackups", "UpdateContinuousBackups"),
}


@pytest.mark.parametrize("feature", list(FEATURES))
async def test_a_store_lacking_a_table_feature_initializes_with_a_warning_and_check_names_it(
    proxy: FaultProxy, table: str, feature: str, caplog: pytest.LogCaptureFixture
) -> None:
    for op in FEATURES[feature]:
        proxy.respond(op, 400, UNKNOWN)
    async with store_at(proxy.endpoint, table) as store:
        problems = await store.check()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and feature in warnings[0] and "UnknownOperationException" in warnings[0]
    assert len(problems) == 1 and feature in problems[0] and "UnknownOperationException" in problems[0]
    assert "cannot reach" not in problems[0]


async def test_check_reports_what_a_store_answered_instead_of_cannot_reach(proxy: FaultProxy, table: str) -> None:
    async with store_at(proxy.endpoint, table) as store:
        proxy.respond("DescribeTable", 400, {"__type": "com.amazonaws.dynamodb.v20120810#AccessDeniedException",
                                             "message": "not authorized to perform dynamodb:DescribeTable"})
        [problem] = await store.check()
    assert "AccessDeniedException" in problem and "not authorized" in problem and "cannot reach" not in problem


def test_init_warns_and_doctor_names_missing_point_in_time_recovery(
    proxy: FaultProxy, table: str, tmp_path: Any
) -> None:
    for op in FEATURES["point-in-time recovery"]:
        proxy.respond(op, 400, UNKNOWN)
    url = f"dynamodb://{table}?region={REGION}&endpoint={proxy.endpoint}"
    init = cli("init", store=url, tmp=tmp_path)
    assert init.code == 0 and "warning:" in init.out and "point-in-time recovery" in init.out, init.out
    doctor = cli("doctor", store=url, tmp=tmp_path)
    assert doctor.code == 1 and "problem:" in doctor.out, doctor.out
    assert "point-in-time recovery" in doctor.out and "UnknownOperationException" in doctor.out
    assert "cannot reach" not in doctor.out
