"""DynamoDB-specific behaviour of `DynamoDBStore` (the contract suite covers the protocol).

Most tests run against in-process moto (`mock_aws`); one runs against a moto server
over HTTP started here on a free 127.0.0.1 port. Requests are counted and faults
injected through the public botocore seam `DynamoDBStore.client_events`.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.from_thread
import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from moto import mock_aws

from orchestrator.agents import AgentContext, agent
from orchestrator.clock import SystemClock
from orchestrator.codec import default_codec
from orchestrator.errors import (
    ClaimRejectedError,
    PayloadTooLargeError,
    SchemaError,
    SessionNotFoundError,
    StoreUnavailableError,
)
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, resume, run
from orchestrator.store import DynamoDBConfig, open_store
from orchestrator.store.dynamodb import DynamoDBStore
from orchestrator.store.dynamodb import DATA_ACTIONS, cloudformation, iam_policy, table_definition, terraform
from orchestrator.testing.moto_server import moto_server
from orchestrator.store.records import (
    ClaimPolicy,
    NewSession,
    NewTask,
    SessionStatus,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    WriteOutcome,
)
from orchestrator.testing import FakeClock

REGION = "us-east-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_SESSION_TOKEN", "testing"), ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield


def make_store(table: str = "orch-test", clock: Any = None, **kw: Any) -> DynamoDBStore:
    kw.setdefault("initial_backoff_ms", 1.0)
    config = DynamoDBConfig(table=table, region=REGION, **kw)
    return DynamoDBStore(config, clock=clock or SystemClock(), codec=default_codec)


class Requests:
    """Counts requests by operation name (and a sum of consumed capacity) from botocore events."""

    def __init__(self, store: DynamoDBStore) -> None:
        self.ops: Counter[str] = Counter()
        self.capacity = 0.0
        # after-call fires for every answer, also one a before-call hook made up (throttling)
        store.client_events.register("after-call.dynamodb", self._after)

    def _after(self, model: Any, parsed: Any = None, **_: Any) -> None:
        self.ops[model.name] += 1
        consumed = (parsed or {}).get("ConsumedCapacity")
        for c in consumed if isinstance(consumed, list) else [consumed] if consumed else []:
            self.capacity += float(c.get("CapacityUnits", 0.0))

    def reset(self) -> None:
        self.ops.clear()


def chain(n: int) -> list[NewTask]:
    return [NewTask(f"t{i}", "echo", depends_on=(f"t{i - 1}",) if i else ()) for i in range(n)]


@pytest.mark.anyio
async def test_two_stores_with_different_tables_live_in_one_process(aws: None) -> None:
    async with make_store("orch-one") as one, make_store("orch-two") as two:
        await one.create_session(NewSession("s1", "p"), chain(2))
        await two.create_session(NewSession("s2", "p"), chain(3))
        assert len((await one.load_session("s1")).tasks) == 2
        assert len((await two.load_session("s2")).tasks) == 3
        with pytest.raises(SessionNotFoundError):
            await one.get_session("s2")
        assert one.models.session.Meta.table_name == "orch-one"
        assert two.models.session.Meta.table_name == "orch-two"


@pytest.mark.anyio
async def test_initialize_creates_table_with_indexes_ttl_sse_and_billing(aws: None) -> None:
    async with make_store("orch-prov", billing_mode="PROVISIONED", read_capacity=7, write_capacity=3) as store:
        assert await store.check() == []
    client = boto3.client("dynamodb", region_name=REGION)
    table = client.describe_table(TableName="orch-prov")["Table"]
    assert {i["IndexName"]: i["Projection"]["ProjectionType"] for i in table["GlobalSecondaryIndexes"]} == {
        "GSI1": "ALL", "GSI2": "ALL", "GSI3": "KEYS_ONLY", "GSI4": "KEYS_ONLY"}
    assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 7
    assert table["SSEDescription"]["Status"] == "ENABLED"
    ttl = client.describe_time_to_live(TableName="orch-prov")["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")
    assert table_definition(make_store("orch-x").config)["BillingMode"] == "PAY_PER_REQUEST"


@pytest.mark.anyio
async def test_wrong_key_schema_raises_schema_error_and_writes_nothing(aws: None) -> None:
    client = boto3.client("dynamodb", region_name=REGION)
    client.create_table(TableName="orch-wrong", BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    store = make_store("orch-wrong")
    with pytest.raises(SchemaError, match=r"orch-wrong.*PK"):
        await store.initialize()
    assert any("key schema" in p for p in await store.check())
    assert client.describe_table(TableName="orch-wrong")["Table"]["ItemCount"] == 0
    await store.aclose()


@pytest.mark.anyio
async def test_missing_table_is_a_schema_error_naming_init(aws: None) -> None:
    store = make_store("orch-missing")
    with pytest.raises(SchemaError, match=r"orch-missing does not exist in region us-east-1.*orchestrator init"):
        await store.get_session("s1")
    await store.aclose()


@pytest.mark.anyio
async def test_foreign_item_in_a_session_partition_is_refused(aws: None) -> None:
    async with make_store() as store:
        await store.create_session(NewSession("s1", "p"), chain(2))
        boto3.client("dynamodb", region_name=REGION).put_item(
            TableName="orch-test", Item={"PK": {"S": "SESSION#s1"}, "SK": {"S": "TASK#t9"}, "x": {"S": "y"}})
        with pytest.raises(SchemaError, match="not written by this SDK") as info:
            await store.load_session("s1")
        assert info.value.session_id == "s1"


@pytest.mark.anyio
async def test_item_of_a_newer_schema_version_is_refused(aws: None) -> None:
    async with make_store() as store:
        await store.create_session(NewSession("s1", "p"), chain(1))
        boto3.client("dynamodb", region_name=REGION).update_item(
            TableName="orch-test", Key={"PK": {"S": "SESSION#s1"}, "SK": {"S": "META"}},
            UpdateExpression="SET v = :v", ExpressionAttributeValues={":v": {"N": "99"}})
        with pytest.raises(SchemaError, match="schema version 99, newer"):
            await store.get_session("s1")


@pytest.mark.anyio
async def test_a_five_megabyte_static_task_input_is_a_size_error_before_anything_is_written(aws: None) -> None:
    @agent(name="echo")
    async def echo(ctx: AgentContext) -> None:
        return None

    pipe = Pipeline("big-input", agents=[echo]).task("a", "echo", input={"text": "y" * 5_000_000})
    async with make_store() as store:
        requests = Requests(store)
        with pytest.raises(PayloadTooLargeError, match=r"input of task a is [\d,]+ bytes, over the limit") as info:
            await run(pipe, store=store)
        assert info.value.task_id == "a"
        assert not {"PutItem", "TransactWriteItems", "BatchWriteItem"} & set(requests.ops)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.anyio
async def test_unreachable_endpoint_fails_fast_with_store_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    endpoint = f"http://127.0.0.1:{free_port()}"  # closed: nothing listens there
    store = make_store(endpoint=endpoint, max_attempts=3, timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=f"{endpoint}.*3 attempts"):
        await store.get_session("s1")
    assert time.monotonic() - started < 10
    await store.aclose()


@pytest.mark.anyio
async def test_throttling_is_retried_by_the_store_and_succeeds(aws: None) -> None:
    async with make_store() as store:
        await store.create_session(NewSession("s1", "p"), chain(1))
        requests = Requests(store)
        throttles = [2]

        def throttle(**_: Any) -> Any:
            if throttles[0]:
                throttles[0] -= 1
                error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"},
                         "ResponseMetadata": {"HTTPStatusCode": 400}}
                return SimpleNamespace(status_code=400, headers={}), error
            return None

        store.client_events.register("before-call.dynamodb.UpdateItem", throttle)
        lease = await store.claim_session("s1", "w1", 30)
        assert lease.fence == 1
        assert requests.ops["UpdateItem"] == 3  # two throttled, one that landed
        assert (await store.get_session("s1")).lease_owner == "w1"


@pytest.mark.anyio
async def test_lost_response_of_a_landed_completion_is_already_applied(aws: None) -> None:
    async with make_store() as store:
        await store.create_session(NewSession("s1", "p"), chain(1))
        lease = await store.claim_session("s1", "w1", 30)
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t0", 1)])
        lost = [1]

        def lose(**_: Any) -> None:
            if lost[0]:
                lost[0] -= 1
                raise ReadTimeoutError(endpoint_url="http://dynamodb")  # the write landed; its answer did not

        store.client_events.register("after-call.dynamodb.UpdateItem", lose)
        [result] = await store.write_tasks(lease, [TaskWrite(TaskWriteKind.COMPLETE, "t0", 1, output={"n": 1})])
        assert result.outcome is WriteOutcome.ALREADY_APPLIED
        task = await store.get_task("s1", "t0")
        assert (task.status, task.output, task.attempt, len(task.history)) == (TaskStatus.COMPLETED, {"n": 1}, 1, 1)


@pytest.mark.anyio
async def test_one_megabyte_output_round_trips_through_chunks(aws: None) -> None:
    async with make_store() as store:
        await store.create_session(NewSession("s1", "p"), chain(1))
        lease = await store.claim_session("s1", "w1", 30)
        big = {"text": "é" * 500_000}  # 1 MB encoded, multi-byte characters across chunk borders
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t0", 1)])
        [r] = await store.write_tasks(lease, [TaskWrite(TaskWriteKind.COMPLETE, "t0", 1, output=big)])
        assert r.outcome is WriteOutcome.APPLIED
        assert (await store.load_session("s1")).tasks["t0"].output == big
        task = await store.get_task("s1", "t0")
        assert task.output == big and task.output_ref is not None and task.output_ref.count >= 4


@pytest.mark.anyio
async def test_large_creation_without_transactions_is_all_or_nothing_for_readers(aws: None) -> None:
    tasks = [NewTask(f"t{i}", "echo", depends_on=tuple(f"t{j}" for j in (i - 1, i - 2) if j >= 0 and i < 201))
             for i in range(250)]
    tasks[249] = NewTask("t249", "echo", depends_on=("t0",))
    assert (len(tasks), sum(len(t.depends_on) for t in tasks)) == (250, 400)
    async with make_store(transactions=False) as writer, make_store() as reader:
        seen: list[int] = []
        batches = [0]

        def look(**_: Any) -> None:  # runs in the writer's thread right after a batch landed
            batches[0] += 1
            if batches[0] not in (1, 26):  # the first batch, and the last: every task and edge, no META
                return

            async def probe() -> None:
                try:
                    seen.append(len((await reader.load_session("big")).tasks))
                except SessionNotFoundError:
                    seen.append(0)

            anyio.from_thread.run(probe)

        writer.client_events.register("after-call.dynamodb.BatchWriteItem", look)
        await writer.create_session(NewSession("big", "p"), tasks)
        snap = await reader.load_session("big")
        assert batches[0] == 26 and seen == [0, 0]
        assert (len(snap.tasks), len(snap.edges)) == (250, 400)


@pytest.mark.anyio
async def test_crashed_creation_without_transactions_leaves_nothing_visible(aws: None) -> None:
    async with make_store(transactions=False) as store:
        def crash(**_: Any) -> None:
            raise RuntimeError("process died before META")

        store.client_events.register("before-call.dynamodb.PutItem", crash)
        with pytest.raises(RuntimeError):
            await store.create_session(NewSession("s1", "p"), chain(30))
        store.client_events.unregister("before-call.dynamodb.PutItem", crash)
        with pytest.raises(SessionNotFoundError):
            await store.load_session("s1")
        await store.create_session(NewSession("s1", "p"), chain(3))  # the id is still free
        assert sorted((await store.load_session("s1")).tasks) == ["t0", "t1", "t2"]


@pytest.mark.anyio
async def test_load_session_is_one_query(aws: None) -> None:
    async with make_store() as store:
        await store.create_session(NewSession("s1", "p"), chain(40))
        lease = await store.claim_session("s1", "w1", 30)
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t0", 1)])
        requests = Requests(store)
        snap = await store.load_session("s1")
        assert len(snap.tasks) == 40
        assert requests.ops == Counter({"Query": 1})


@pytest.mark.anyio
async def test_completion_with_the_start_it_unlocks_is_one_request(aws: None) -> None:
    async with make_store() as store:
        await store.create_session(NewSession("s1", "p"), chain(2))
        lease = await store.claim_session("s1", "w1", 30)
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t0", 1)])
        requests = Requests(store)
        results = await store.write_tasks(lease, [TaskWrite(TaskWriteKind.COMPLETE, "t0", 1, output=1),
                                                  TaskWrite(TaskWriteKind.START, "t1", 1)])
        assert [r.outcome for r in results] == [WriteOutcome.APPLIED, WriteOutcome.APPLIED]
        assert requests.ops == Counter({"TransactWriteItems": 1})


@pytest.mark.anyio
async def test_every_data_request_reports_its_consumed_capacity_to_client_event_hooks(aws: None) -> None:
    answers: list[tuple[str, bool]] = []

    def look(model: Any, parsed: Any = None, **_: Any) -> None:
        answers.append((model.name, "ConsumedCapacity" in (parsed or {})))

    async with make_store(transactions=False) as store:
        store.client_events.register("after-call.dynamodb", look)
        await store.create_session(NewSession("s1", "p"), chain(2))
        lease = await store.claim_session("s1", "w1", 30)
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t0", 1)])
        await store.load_session("s1")
    assert {"BatchWriteItem", "UpdateItem", "Query"} <= {op for op, _ in answers}
    assert [op for op, reported in answers if not reported] == []


@pytest.mark.anyio
async def test_listing_failed_sessions_queries_the_status_index_without_scan(aws: None) -> None:
    clock = FakeClock()
    async with make_store(clock=clock, status_shards=3) as store:
        for i in range(5):
            await store.create_session(NewSession(f"s{i}", "p"), chain(1))
            lease = await store.claim_session(f"s{i}", "w", 30)
            await store.finish_session(lease, SessionStatus.FAILED, "boom")
            clock.advance(10)
        requests = Requests(store)
        first = await store.list_sessions(SessionStatus.FAILED, updated_before=clock.now() - 15, limit=2)
        rest = await store.list_sessions(SessionStatus.FAILED, updated_before=clock.now() - 15, limit=2,
                                         cursor=first.cursor)
        assert [s.session_id for s in first.items + rest.items] == ["s0", "s1", "s2", "s3"]
        assert rest.cursor is None
        assert set(requests.ops) == {"Query"} and "Scan" not in requests.ops


class UnconditionalClaims(DynamoDBStore):
    _cas_claims = False


@pytest.mark.anyio
@pytest.mark.parametrize("cas", [True, False], ids=["conditional", "unconditional"])
async def test_claim_condition_is_what_prevents_a_double_claim(aws: None, cas: bool) -> None:
    config = DynamoDBConfig(table="orch-test", region=REGION)
    cls = DynamoDBStore if cas else UnconditionalClaims
    async with cls(config, clock=SystemClock(), codec=default_codec) as first, make_store() as second:
        await first.create_session(NewSession("s1", "p"), chain(1))
        rival: list[int] = []

        def race(**_: Any) -> None:  # the rival claims between our read and our write
            if not rival:
                rival.append(anyio.from_thread.run(lambda: second.claim_session("s1", "w2", 30)).fence)

        first.client_events.register("before-call.dynamodb.UpdateItem", race)
        if cas:
            with pytest.raises(ClaimRejectedError) as info:
                await first.claim_session("s1", "w1", 30)
            assert info.value.context["owner"] == "w2"
        else:
            lease = await first.claim_session("s1", "w1", 30)
            assert lease.fence == rival[0] == 1  # two owners at the same fence: the bug the condition prevents


def test_exports_name_the_same_table_and_no_scan() -> None:
    config = DynamoDBConfig(table="orch-prod", region="eu-west-1", deletion_protection=True)
    props = cloudformation(config)["Resources"]["OrchestratorTable"]["Properties"]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert props["DeletionProtectionEnabled"] is True
    hcl = terraform(config)
    assert 'name                        = "orch-prod"' in hcl and 'attribute_name = "ttl"' in hcl
    assert {i["IndexName"]: i["Projection"]["ProjectionType"] for i in props["GlobalSecondaryIndexes"]} == {
        "GSI1": "ALL", "GSI2": "ALL", "GSI3": "KEYS_ONLY", "GSI4": "KEYS_ONLY"}
    assert hcl.count('projection_type = "KEYS_ONLY"') == 2 and hcl.count('projection_type = "ALL"') == 2
    policy = iam_policy(config)
    actions = [a for s in policy["Statement"] for a in s["Action"]]
    assert "dynamodb:Scan" not in actions and set(DATA_ACTIONS) <= set(actions)
    assert "arn:aws:dynamodb:eu-west-1:*:table/orch-prod/index/*" in policy["Statement"][0]["Resource"]


@pytest.fixture
def moto_http() -> Iterator[str]:
    """A moto server subprocess of our own on a free 127.0.0.1 port, stopped afterwards."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.mark.anyio
async def test_store_works_against_a_moto_server_over_http(moto_http: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    opened = open_store(f"dynamodb://orch-http?region={REGION}&endpoint={moto_http}")
    assert isinstance(opened, DynamoDBStore)
    async with opened as store:
        await store.create_session(NewSession("s1", "p"), chain(3))
        lease = await store.claim_session("s1", "w1", 30)
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t0", 1)])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.COMPLETE, "t0", 1, output="ok"),
                                        TaskWrite(TaskWriteKind.START, "t1", 1)])
        snap = await store.load_session("s1")
        assert (snap.tasks["t0"].output, snap.tasks["t1"].status) == ("ok", TaskStatus.RUNNING)
        assert str(store.describe()) == f"dynamodb:orch-http, region={REGION}, endpoint={moto_http}"



# -- retention -------------------------------------------------------------------------------


def _partition(table: str, sid: str) -> list[dict[str, Any]]:
    client = boto3.client("dynamodb", region_name=REGION)
    items: list[dict[str, Any]] = client.query(TableName=table, KeyConditionExpression="PK = :pk",
                                               ExpressionAttributeValues={":pk": {"S": f"SESSION#{sid}"}})["Items"]
    return items


async def _ended_session(store: DynamoDBStore, sid: str) -> float:
    """A finished session with a task, an edge, a signal, a chunked output and an event."""
    await store.create_session(NewSession(sid, "p", ttl_seconds=3600),
                               [NewTask("a", "x"), NewTask("b", "y", depends_on=("a",))])
    lease = await store.claim_session(sid, "w1", 30)
    await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "a", 1)])
    await store.send_signal(sid, "a", "go", {"ok": True})
    await store.write_tasks(lease, [TaskWrite(TaskWriteKind.COMPLETE, "a", 1, output="o" * 300_000)])
    ended = await store.finish_session(lease, SessionStatus.FAILED, "b never ran")
    assert ended.expires_at is not None
    return ended.expires_at


@pytest.mark.anyio
async def test_every_item_of_an_ended_session_expires_with_it(aws: None) -> None:
    async with make_store("orch-ttl") as store:
        expires_at = await _ended_session(store, "r1")
        items = _partition("orch-ttl", "r1")
    kinds = {i["SK"]["S"].split("#")[0] + ("#" + i["SK"]["S"].split("#")[2] if i["SK"]["S"].count("#") >= 2 else "")
             for i in items}
    assert {"META", "TASK", "TASK#DEP", "TASK#CHUNK", "TASK#SIGNAL"} <= kinds, kinds
    late = [i["SK"]["S"] for i in items if "ttl" not in i or float(i["ttl"]["N"]) > expires_at]
    assert late == [], f"items that would outlive the session's retention: {late}"


@pytest.mark.anyio
async def test_a_redriven_session_takes_the_expiry_off_its_tasks(aws: None) -> None:
    async with make_store("orch-ttl2") as store:
        await _ended_session(store, "r2")
        await store.claim_session("r2", "w2", 30, ClaimPolicy(redrive_failed=True, force=True))
        items = _partition("orch-ttl2", "r2")
    expiring = [i["SK"]["S"] for i in items if i["SK"]["S"].startswith(("TASK#", "META")) and "ttl" in i]
    assert expiring == [], f"a live session's items must not expire: {expiring}"


@pytest.mark.anyio
async def test_a_resume_after_a_redrive_that_crashed_before_taking_the_expiry_off_takes_it_off(aws: None) -> None:
    clock = FakeClock()
    async with make_store("orch-ttl3", clock=clock) as store:
        await _ended_session(store, "r3")

        def crash(**_: Any) -> None:  # the redrive's worker dies right after its claim landed
            raise RuntimeError("killed after the claim")

        store.client_events.register("before-call.dynamodb.Query", crash, unique_id="crash")
        with pytest.raises(RuntimeError, match="killed"):
            await store.claim_session("r3", "w2", 30, ClaimPolicy(redrive_failed=True, force=True))
        store.client_events.unregister("before-call.dynamodb.Query", crash, unique_id="crash")
        assert any("ttl" in i for i in _partition("orch-ttl3", "r3") if i["SK"]["S"].startswith("TASK#"))
        clock.advance(31)

        @agent(name="y")
        async def hold(ctx: AgentContext) -> Any:
            return await ctx.wait_for_signal("hold")  # the session stays alive, WAITING

        pipe = Pipeline("p", agents=[hold, agent(name="x")(lambda ctx: None)]).task("b", "y")
        result = await resume(pipe, "r3", store=store, options=RunOptions(worker_id="w3"))
        assert result.status is SessionStatus.WAITING
        items = _partition("orch-ttl3", "r3")
    expiring = [i["SK"]["S"] for i in items if i["SK"]["S"].startswith(("TASK#", "META")) and "ttl" in i]
    assert expiring == [], f"a live session's items must not expire: {expiring}"
