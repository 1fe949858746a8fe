"""The exported IAM policy allows exactly the DynamoDB operations the SDK performs.

A representative workload (init, init repairing SSE, doctor, run with retries and a failure, waits and
signals, a worker, resume-failed, listings (by status, project, user, type), events, metrics, pipelines, fork, cancel,
the users' project history, a map of child sessions, cached outputs, purge) runs on in-process moto while a botocore hook records every request. Each
request maps to the IAM actions that authorise it (a transaction to its items'
actions); the policy must allow every one of them, nothing more, and never Scan.
"""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.fork import fork_session
from orchestrator.metrics import agent_stats, day_of, project_stats
from orchestrator.recovery import Worker, resume_failed
from orchestrator.scheduler import resume, run, submit
from orchestrator.store import NewSession, NewTask, SessionStatus, StoreConfig, UserProjectRecord, open_store
from orchestrator.store.dynamodb import DynamoDBStore, iam_policy
from orchestrator.store.records import CacheEntry

APPS = Path(__file__).resolve().parent / "apps"
_TRANSACT_ITEM_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                          "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


def _actions(op: str, params: dict[str, Any]) -> set[str]:
    if op == "CreateTable" and params.get("Tags"):
        return {"dynamodb:CreateTable", "dynamodb:TagResource"}  # IAM authorises tags on create as TagResource
    if op in ("TransactWriteItems", "TransactGetItems"):
        return {f"dynamodb:{_TRANSACT_ITEM_ACTIONS[kind]}" for item in params.get("TransactItems", [])
                for kind in item}
    return {f"dynamodb:{op}"}


@pytest.fixture
def moto() -> Iterator[None]:
    from moto import mock_aws

    with mock_aws():
        yield


async def _workload(url: str, tmp: Path) -> set[str]:
    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    demo: Any = importlib.import_module("demo_app")
    seen: set[str] = set()
    store = open_store(url)
    assert isinstance(store, DynamoDBStore)
    events: Any = getattr(store, "client_events", None)
    assert events is not None, f"{store!r} has no client_events: this test is for DynamoDB"

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        # `params` is botocore's serialized request: the operation's parameters are its JSON body.
        seen.update(_actions(model.name, json.loads(params.get("body") or b"{}")))

    def aws_owned_key(parsed: dict[str, Any], **_: Any) -> None:
        parsed.get("Table", {}).pop("SSEDescription", None)  # what DescribeTable says of an AWS owned key

    events.register("before-call.dynamodb", record)
    try:
        await store.initialize()
        events.register("after-call.dynamodb.DescribeTable", aws_owned_key)
        await store.provision()  # again, on a table with an AWS owned key: init turns on SSE (UpdateTable)
        events.unregister("after-call.dynamodb.DescribeTable", aws_owned_key)
        assert await store.check() == []
        ok = await run(demo.small, {"n": 1}, store=store, project_id="proj", session_id="iam-ok")
        assert ok.ok
        marker = tmp / "fixed"
        failed = await run(demo.flaky, {"marker": str(marker)}, store=store, session_id="iam-bad")
        assert failed.status is SessionStatus.FAILED
        marker.write_text("ok")
        report = await resume_failed(store, [demo.flaky], older_than=0)
        assert report.resumed == {"iam-bad": "COMPLETED"}
        waiting = await run(demo.approval, None, store=store, session_id="iam-wait")
        assert waiting.status is SessionStatus.WAITING
        await store.send_signal("iam-wait", "review", "approval", {"approved": True})
        await submit(demo.small, None, store=store, session_id="iam-sub")
        worker = Worker(store, [demo.small, demo.approval], poll_interval=0.05)
        await worker.run(idle_exit=0.2)
        assert (await store.get_session("iam-wait")).status is SessionStatus.COMPLETED
        fork = await fork_session(store, "iam-ok", "code", new_session_id="iam-fork")
        await resume(demo.small, fork, store=store)
        await submit(demo.small, None, store=store, session_id="iam-cancel")
        await store.request_cancel("iam-cancel", "test")
        for status in SessionStatus:
            await store.list_sessions(status, limit=5)
        await store.list_project_sessions("proj", limit=5)
        await store.create_session(NewSession("iam-user", "p", user_id="u-1", pipeline_type="deploy"),
                                   [NewTask("t", "a")])
        assert len((await store.find_sessions(user_id="u-1", limit=5)).items) == 1
        await store.find_sessions(pipeline_type="deploy", status=SessionStatus.COMPLETED, limit=5)
        await store.read_events("iam-bad")
        day = day_of(store.clock.now())[0]
        assert await agent_stats(store, day)
        await project_stats(store, "proj", [day])
        await store.get_pipeline("small", "1")
        await store.put_user_project(UserProjectRecord("u-1", "proj", "Proj", tech_stack=("React",)))
        await store.record_download("u-1", "proj", "d-1")
        await store.record_download("u-1", "proj", "d-1")  # a retry: its failed condition is read back
        assert (await store.get_user_project("u-1", "proj")).download_count == 1
        assert len((await store.list_user_projects("u-1")).items) == 1
        # A map of child sessions (batched creation and reads) and a cached output read back.
        maps: Any = importlib.import_module("map_app")
        await submit(maps.fanout, {"n": 3, "poll": 0.05}, store=store, session_id="iam-map")
        await Worker(store, [maps.fanout, maps.square], poll_interval=0.05).run(idle_exit=0.5)
        assert (await store.get_session("iam-map")).status is SessionStatus.COMPLETED
        now = store.clock.now()
        await store.put_cached(CacheEntry("iam-key", "a", {"x": 1}, now, now + 60))
        assert await store.get_cached("iam-key") is not None
        await store.purge(ended_before=store.clock.now() + 1)
    finally:
        await store.aclose()
    return seen


def test_policy_allows_exactly_the_observed_operations_and_never_scan(moto: None, tmp_path: Path) -> None:
    # connections=1: in-process moto is not thread-safe under concurrent transactions
    url = f"dynamodb://iam-{uuid.uuid4().hex[:8]}?region=us-east-1&connections=1"
    observed = anyio.run(_workload, url, tmp_path)
    config = StoreConfig.from_url(url).dynamodb
    assert config is not None
    policy = iam_policy(config)
    allowed = {a for s in policy["Statement"] for a in s["Action"]}
    assert "dynamodb:Scan" not in observed
    assert "dynamodb:Scan" not in allowed
    assert observed - allowed == set(), f"the policy misses {sorted(observed - allowed)}"
    assert allowed - observed == set(), f"the policy allows unused {sorted(allowed - observed)}"


def test_policy_resources_cover_the_table_and_its_indexes() -> None:
    config = StoreConfig.from_url("dynamodb://orders?region=eu-west-1").dynamodb
    assert config is not None
    resources = {r for s in iam_policy(config, account_id="123456789012")["Statement"] for r in s["Resource"]}
    table = "arn:aws:dynamodb:eu-west-1:123456789012:table/orders"
    assert resources == {table, f"{table}/index/*"}
