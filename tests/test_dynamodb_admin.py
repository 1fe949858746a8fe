"""`orchestrator init` brings an existing DynamoDB table to the SDK's definition, and is idempotent.

A first `init` interrupted after CreateTable leaves a table without TTL or point-in-time
recovery; the next `init` repairs it and `doctor` is clean again. The CLI runs as a
user would, against the session's moto server; request counts come from the public
botocore seam `DynamoDBStore.client_events` on in-process moto.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from cli_helpers import cli
from moto import mock_aws

from orchestrator.clock import SystemClock
from orchestrator.codec import default_codec
from orchestrator.errors import SchemaError
from orchestrator.store import DynamoDBConfig, NewSession, NewTask
from orchestrator.store.dynamodb import DynamoDBStore

REGION = "us-east-1"


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def make_store(table: str = "orch-admin") -> DynamoDBStore:
    return DynamoDBStore(DynamoDBConfig(table=table, region=REGION), clock=SystemClock(), codec=default_codec)


def requests_of(store: DynamoDBStore) -> Counter[str]:
    ops: Counter[str] = Counter()
    store.client_events.register("before-call.dynamodb", lambda model, **_: ops.update([model.name]))
    return ops


def test_init_repairs_ttl_and_pitr_turned_off_after_the_table_was_created(
    moto_upstream: str, tmp_path: Any
) -> None:
    table = f"t-{uuid.uuid4().hex[:12]}"
    url = f"dynamodb://{table}?region={REGION}&endpoint={moto_upstream}"
    assert cli("init", store=url, tmp=tmp_path).code == 0
    ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_upstream)
    ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": False, "AttributeName": "ttl"})
    ddb.update_continuous_backups(TableName=table,
                                  PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False})
    broken = cli("doctor", store=url, tmp=tmp_path)
    assert broken.code == 1 and "TTL DISABLED" in broken.out and "point-in-time recovery DISABLED" in broken.out

    repaired = cli("init", store=url, tmp=tmp_path)

    assert repaired.code == 0 and "warning" not in repaired.out, repaired.out
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")
    backups = ddb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    clean = cli("doctor", store=url, tmp=tmp_path)
    assert clean.code == 0 and "ok:" in clean.out, clean.out


@pytest.mark.anyio
async def test_a_second_init_only_reads(aws: None) -> None:
    async with make_store():
        pass
    store = make_store()
    ops = requests_of(store)
    async with store:
        assert await store.check() == []
    assert set(ops) == {"DescribeTable", "DescribeTimeToLive", "DescribeContinuousBackups"}


@pytest.mark.anyio
async def test_opening_an_existing_table_sends_one_describe_table_and_no_settings_read(aws: None) -> None:
    async with make_store():
        pass
    store = make_store()
    ops = requests_of(store)
    async with store:
        pass
    assert list(ops.elements()) == ["DescribeTable"]


@pytest.mark.anyio
async def test_opening_a_store_leaves_settings_changed_since_creation_to_init(aws: None) -> None:
    async with make_store() as store:
        table = store.config.table_name
    ddb = boto3.client("dynamodb", region_name=REGION)
    ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": False, "AttributeName": "ttl"})
    async with make_store() as store:
        assert any("TTL DISABLED" in p for p in await store.check())
        await store.provision()
        assert await store.check() == []


@pytest.mark.anyio
async def test_init_turns_on_sse_of_a_table_encrypted_with_an_aws_owned_key(aws: None) -> None:
    async with make_store():
        pass
    store = make_store()
    sent: list[dict[str, Any]] = []

    def aws_owned_key(parsed: dict[str, Any], **_: Any) -> None:
        parsed.get("Table", {}).pop("SSEDescription", None)  # how DescribeTable shows an AWS owned key

    def update_table(params: dict[str, Any], **_: Any) -> None:
        sent.append(params)

    store.client_events.register("after-call.dynamodb.DescribeTable", aws_owned_key)
    store.client_events.register("provide-client-params.dynamodb.UpdateTable", update_table)
    assert any("server-side encryption with an AWS owned key" in p for p in await store.check())
    await store.provision()
    await store.aclose()
    assert [p["SSESpecification"] for p in sent] == [{"Enabled": True, "SSEType": "KMS"}]


def _as_before_the_listing_indexes(table: str) -> None:
    """Make the table look as an SDK before GSI3/GSI4 left it: no such indexes, no such keys on sessions."""
    ddb = boto3.client("dynamodb", region_name=REGION)
    for name in ("GSI3", "GSI4"):
        ddb.update_table(TableName=table, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": name}}])
    for sid in ("old-1", "old-2", "old-3"):
        ddb.update_item(TableName=table, Key={"PK": {"S": f"SESSION#{sid}"}, "SK": {"S": "META"}},
                        UpdateExpression="REMOVE GSI3PK, GSI3SK, GSI4PK, GSI4SK")


@pytest.mark.anyio
async def test_init_adds_the_user_and_type_indexes_to_an_older_table_and_indexes_its_sessions(aws: None) -> None:
    async with make_store() as first:
        for i, user in enumerate(("u-1", "u-1", "u-2"), start=1):
            await first.create_session(NewSession(f"old-{i}", "p", user_id=user, pipeline_type="deploy"),
                                       [NewTask("t", "a")])
    _as_before_the_listing_indexes("orch-admin")
    store = make_store()
    problems = await store.check()
    assert [p for p in problems if "has no index GSI3" in p or "has no index GSI4" in p], problems
    assert all("orchestrator init" in p for p in problems)
    with pytest.raises(SchemaError, match=r"lacks an index .*GSI3.*orchestrator init"):
        await store.find_sessions(user_id="u-1")
    ops = requests_of(store)
    async with store:
        assert await store.check() == []
        by_user = await store.find_sessions(user_id="u-1")
        by_type = await store.find_sessions(pipeline_type="deploy")
    assert [s.session_id for s in by_user.items] == ["old-2", "old-1"]
    assert [s.session_id for s in by_type.items] == ["old-3", "old-2", "old-1"]
    assert ops["UpdateTable"] == 2 and ops["UpdateItem"] == 6 and "Scan" not in ops, ops
