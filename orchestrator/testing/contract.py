"""The Store contract suite: every backend (ours or yours) must pass it.

Which invariant is proven on which backend (tests/test_contract.py runs all of them):

| invariant (DESIGN.md §6)                            | SQLite file | in-process moto | moto server (1 req at a time) |
|-----------------------------------------------------|:-----------:|:---------------:|:-----------------------------:|
| round-trips, fenced writes, classification, waits,  |     yes     |       yes       |              yes              |
| signals, cancel, redrive, listing/paging, metrics,  |             |                 |                               |
| pipelines, add_tasks adoption, 1 MB output, bad     |             |                 |                               |
| input, newer schema refused (`StoreContract`)       |             |                 |                               |
| claims exclusive under contention: threads and      |     yes     |   no (moto is   |              yes              |
| processes, negative control, metrics summed over    |             | not atomic; no  |                               |
| processes, killed owner taken over                  |             | shared state)   |                               |
| (`ConcurrencyContract`)                             |             |                 |                               |
| lost responses retried without double effect, no    |     n/a     |       yes       |              yes              |
| Scan for listing (`DynamoDBContract`)               |             |                 |                               |

moto is not atomic under concurrent requests: two conditional writes racing in one
process can both succeed (DESIGN.md §6). That is moto's limit, not the protocol's, so
contention is tested on SQLite and on a moto server serving ONE request at a time
(`orchestrator.testing.moto_server`), never on in-process `mock_aws()`, which also
shares no state between processes. The DynamoDB backends also run with
`transactions=0` (single-item conditional writes only).

Use it by subclassing with a `store` fixture (an initialized store opened with a
`FakeClock`, closed afterwards; `anyio_backend` must be defined):

    class TestMyStore(StoreContract):
        @pytest.fixture
        async def store(self): ...

`ConcurrencyContract` also needs a `store_url` fixture (the URL that opens the same
store in another thread or process) and `DynamoDBContract` a store with
`client_events` (botocore's event emitter). Backend-specific raw access (to plant an
item of a newer schema version) goes through `write_newer_schema_version`; override it
for a third-party backend.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from orchestrator.errors import (
    ClaimRejectedError,
    LeaseLostError,
    NotFoundError,
    PipelineDefinitionError,
    PipelineNotFoundError,
    SchemaError,
    SerializationError,
    SessionNotFoundError,
    SessionStateError,
    ValidationError,
)
from orchestrator.store import (
    SCHEMA_VERSION,
    ClaimPolicy,
    Edge,
    ErrorInfo,
    Event,
    Lease,
    MetricSummary,
    NewSession,
    NewTask,
    OwnerKind,
    PipelineDefinition,
    Progress,
    SessionRecord,
    SessionStatus,
    Store,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    WriteOutcome,
    WriteResult,
)
from orchestrator.testing.clock import FakeClock

__all__ = ["BIG", "LEASE", "StoreContract", "clock_of", "complete", "make_session", "start"]

LEASE = 30.0
BIG = 1_000_000  # bytes of a large output: several DynamoDB chunks


def clock_of(store: Store) -> FakeClock:
    """The FakeClock the contract needs the store to be opened with."""
    clock = store.clock
    assert isinstance(clock, FakeClock), (
        f"the contract suite moves time: open the store with clock=FakeClock(), not {clock!r}"
    )
    return clock


def start(task_id: str, attempt: int = 1) -> TaskWrite:
    return TaskWrite(TaskWriteKind.START, task_id, attempt)


def complete(task_id: str, attempt: int = 1, output: Any = None) -> TaskWrite:
    return TaskWrite(TaskWriteKind.COMPLETE, task_id, attempt, output=output)


def _tasks(*ids: str, chain: bool = False) -> list[NewTask]:
    out: list[NewTask] = []
    for i, tid in enumerate(ids):
        deps = (ids[i - 1],) if chain and i else ()
        out.append(NewTask(tid, agent=f"agent-{tid}", input={"n": i}, depends_on=deps))
    return out


async def make_session(
    store: Store,
    session_id: str = "s1",
    tasks: list[NewTask] | None = None,
    *,
    owner: str | None = None,
    lease_seconds: float | None = None,
    **fields: Any,
) -> SessionRecord:
    """A session (PENDING unless `owner`) with tasks t1 -> t2 by default."""
    new = NewSession(session_id=session_id, pipeline="contract", **fields)
    chosen = _tasks("t1", "t2", chain=True) if tasks is None else tasks
    return await store.create_session(new, chosen, owner=owner, lease_seconds=lease_seconds)


async def _one(store: Store, lease: Lease, write: TaskWrite) -> WriteResult:
    [result] = await store.write_tasks(lease, [write])
    return result


async def _expire_and_claim(store: Store, sid: str, owner: str) -> Lease:
    clock_of(store).advance(LEASE + 1)
    return await store.claim_session(sid, owner, LEASE)


def _strip(buckets: tuple[int, ...]) -> tuple[int, ...]:
    out = list(buckets)
    while out and out[-1] == 0:
        out.pop()
    return tuple(out)


class StoreContract:
    """Single-process behaviour of a Store; needs a `store` fixture (see module doc)."""

    pytestmark = pytest.mark.anyio

    async def write_newer_schema_version(self, store: Store, session_id: str) -> None:
        """Bump the stored schema version of a session's item/row past SCHEMA_VERSION."""
        desc = store.describe()
        if desc.backend == "sqlite":
            with sqlite3.connect(desc.location) as conn:
                conn.execute("UPDATE sessions SET v = ? WHERE session_id = ?", (SCHEMA_VERSION + 1, session_id))
            return
        if desc.backend == "dynamodb":
            import boto3

            client = boto3.client("dynamodb", region_name=desc.region, endpoint_url=desc.endpoint)
            client.update_item(
                TableName=desc.location,
                Key={"PK": {"S": f"SESSION#{session_id}"}, "SK": {"S": "META"}},
                UpdateExpression="SET #v = :v",
                ExpressionAttributeNames={"#v": "v"},
                ExpressionAttributeValues={":v": {"N": str(SCHEMA_VERSION + 1)}},
            )
            return
        raise AssertionError(f"override write_newer_schema_version() for backend {desc.backend!r}")

    # -- setup and round trips ------------------------------------------------------------

    async def test_describe_names_backend_and_location(self, store: Store) -> None:
        desc = store.describe()
        assert desc.backend and desc.location
        assert desc.location in str(desc)

    async def test_initialize_is_idempotent_and_check_finds_no_problem(self, store: Store) -> None:
        await make_session(store)
        await store.initialize()
        assert await store.check() == []
        assert (await store.get_session("s1")).session_id == "s1"

    async def test_create_then_load_round_trips_session_tasks_and_edges(self, store: Store) -> None:
        now = clock_of(store).now()
        tasks = [
            NewTask("a", agent="planner", input={"goal": "ship", "n": [1, 2.5, None]}, priority=0, max_attempts=5),
            NewTask("b", agent="coder", input="text", depends_on=("a",)),
            NewTask("c", agent="tester", depends_on=("a", "b"), priority=3),
        ]
        new = NewSession(
            session_id="s-rt", pipeline="build", pipeline_version="7", input={"repo": "x/y", "é": "ü"},
            project_id="proj-1", user_id="u-1", pipeline_type="deploy", max_redrives=2,
            metadata={"k": [1, {"z": True}]}, trace_context={"traceparent": "00-abc-def-01"},
        )
        created = await store.create_session(new, tasks)
        snap = await store.load_session("s-rt")
        s = snap.session
        assert s == created == await store.get_session("s-rt")
        assert (s.pipeline, s.pipeline_version, s.input) == ("build", "7", {"repo": "x/y", "é": "ü"})
        assert (s.project_id, s.user_id, s.pipeline_type) == ("proj-1", "u-1", "deploy")
        assert (s.status, s.owner_kind, s.fence, s.max_redrives) == (SessionStatus.PENDING, OwnerKind.WORKER, 0, 2)
        assert s.metadata == {"k": [1, {"z": True}]} and s.trace_context == {"traceparent": "00-abc-def-01"}
        assert s.created_at == now and s.lease_owner is None and s.schema_version == SCHEMA_VERSION
        assert set(snap.tasks) == {"a", "b", "c"}
        a = snap.task("a")
        assert (a.agent, a.input, a.priority, a.max_attempts) == ("planner", tasks[0].input, 0, 5)
        assert (a.status, a.attempt, a.fence, a.output) == (TaskStatus.PENDING, 0, 0, None)
        assert set(snap.task("c").depends_on) == {"a", "b"}
        assert set(snap.edges) == {Edge("b", "a"), Edge("c", "a"), Edge("c", "b")}
        assert await store.get_task("s-rt", "b") == snap.task("b")

    async def test_create_with_owner_is_running_at_fence_one(self, store: Store) -> None:
        now = clock_of(store).now()
        s = await make_session(store, owner="w1", lease_seconds=LEASE)
        assert (s.status, s.fence, s.lease_owner, s.lease_expires_at) == (SessionStatus.RUNNING, 1, "w1", now + LEASE)
        lease = Lease("s1", "w1", 1, now + LEASE)
        assert (await _one(store, lease, start("t1"))).outcome is WriteOutcome.APPLIED

    async def test_external_session_is_never_claimable(self, store: Store) -> None:
        s = await make_session(store, owner_kind=OwnerKind.EXTERNAL, status=SessionStatus.RUNNING,
                               owner="external:tok", lease_seconds=None)
        assert (s.owner_kind, s.lease_expires_at) == (OwnerKind.EXTERNAL, None)
        clock_of(store).advance(10 * 365 * 86400)
        with pytest.raises(ClaimRejectedError, match="external"):
            await store.claim_session("s1", "w1", LEASE)
        lease = Lease("s1", "external:tok", s.fence, None)
        await store.update_session(lease, progress=Progress(5, 29, phase="deploy"))
        assert (await store.get_session("s1")).progress == Progress(5, 29, phase="deploy")

    # -- claims and leases -----------------------------------------------------------------

    async def test_claim_pending_sets_owner_lease_and_fence(self, store: Store) -> None:
        await make_session(store)
        now = clock_of(store).now()
        lease = await store.claim_session("s1", "w1", LEASE)
        assert (lease.session_id, lease.owner, lease.fence, lease.expires_at) == ("s1", "w1", 1, now + LEASE)
        s = await store.get_session("s1")
        assert (s.status, s.lease_owner, s.fence, s.lease_expires_at) == (SessionStatus.RUNNING, "w1", 1, now + LEASE)

    async def test_live_lease_is_not_claimable_and_message_names_owner_and_fence(self, store: Store) -> None:
        await make_session(store)
        await store.claim_session("s1", "worker-a", LEASE)
        clock_of(store).advance(LEASE - 1)
        with pytest.raises(ClaimRejectedError) as info:
            await store.claim_session("s1", "worker-b", LEASE)
        assert "worker-a" in str(info.value) and "fence 1" in str(info.value) and "s1" in str(info.value)
        assert (await store.get_session("s1")).fence == 1

    async def test_expired_lease_is_claimable_and_bumps_fence(self, store: Store) -> None:
        await make_session(store)
        await store.claim_session("s1", "worker-a", LEASE)
        b = await _expire_and_claim(store, "s1", "worker-b")
        assert (b.owner, b.fence) == ("worker-b", 2)
        assert (await store.get_session("s1")).lease_owner == "worker-b"

    async def test_renew_lease_extends_expiry(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        clock_of(store).advance(20)
        renewed, session = await store.renew_lease(lease, LEASE)
        assert renewed.expires_at == clock_of(store).now() + LEASE == session.lease_expires_at
        assert renewed.fence == lease.fence == session.fence
        clock_of(store).advance(LEASE - 1)  # past the first lease, inside the renewed one
        with pytest.raises(ClaimRejectedError):
            await store.claim_session("s1", "w2", LEASE)

    async def test_release_lease_makes_session_claimable_at_once(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.release_lease(lease)
        s = await store.get_session("s1")
        assert (s.status, s.lease_owner) == (SessionStatus.PENDING, None)
        assert (await store.claim_session("s1", "w2", LEASE)).fence == 2
        with pytest.raises(LeaseLostError):
            await store.update_session(lease, progress=Progress(1, 2))

    async def test_session_writes_after_a_newer_claim_raise_lease_lost(self, store: Store) -> None:
        await make_session(store)
        a = await store.claim_session("s1", "worker-a", LEASE)
        await _expire_and_claim(store, "s1", "worker-b")
        before = await store.get_session("s1")
        with pytest.raises(LeaseLostError) as info:
            await store.update_session(a, progress=Progress(1, 2))
        assert info.value.session_id == "s1"
        with pytest.raises(LeaseLostError):
            await store.renew_lease(a, LEASE)
        with pytest.raises(LeaseLostError):
            await store.wait_session(a, None)
        with pytest.raises(LeaseLostError):
            await store.release_lease(a)
        with pytest.raises(LeaseLostError):
            await store.finish_session(a, SessionStatus.FAILED, "stale")
        s = await store.get_session("s1")
        assert (s.status, s.fence, s.lease_owner, s.progress) == (SessionStatus.RUNNING, 2, "worker-b", before.progress)

    async def test_update_session_stores_progress_agents_metadata_and_trace(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.update_session(lease, progress=Progress(5, 29, phase="deploy", step="cdk"),
                                   current_agents=["coder", "tester"], metadata={"pr": 42},
                                   trace_context={"traceparent": "00-1-2-01"})
        s = await store.get_session("s1")
        assert s.progress == Progress(5, 29, phase="deploy", step="cdk") and s.progress.percentage == 17.2
        assert tuple(s.current_agents) == ("coder", "tester")
        assert s.metadata == {"pr": 42} and s.trace_context == {"traceparent": "00-1-2-01"}
        await store.update_session(lease, progress=Progress(6, 29))
        s = await store.get_session("s1")
        assert s.progress == Progress(6, 29) and tuple(s.current_agents) == ("coder", "tester")

    async def test_finish_session_records_outcome_frees_lease_and_sets_expiry(self, store: Store) -> None:
        await make_session(store, ttl_seconds=3600)
        lease = await store.claim_session("s1", "w1", LEASE)
        clock_of(store).advance(5)
        now = clock_of(store).now()
        s = await store.finish_session(lease, SessionStatus.COMPLETED, "all done")
        assert s == await store.get_session("s1")
        assert (s.status, s.completed_at, s.lease_owner) == (SessionStatus.COMPLETED, now, None)
        assert s.expires_at == pytest.approx(now + 3600)
        with pytest.raises(ClaimRejectedError):
            await store.claim_session("s1", "w2", LEASE)

    async def test_finish_without_session_ttl_uses_the_store_retention(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        s = await store.finish_session(lease, SessionStatus.CANCELLED, "stop")
        assert s.expires_at is not None and s.expires_at > clock_of(store).now() + 86400
        assert (s.status, s.reason) == (SessionStatus.CANCELLED, "stop")

    # -- task writes and fencing -----------------------------------------------------------

    async def test_start_then_complete_records_attempt_fence_times_and_output(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        t0 = clock_of(store).now()
        assert (await _one(store, lease, start("t1"))).outcome is WriteOutcome.APPLIED
        running = await store.get_task("s1", "t1")
        assert (running.status, running.fence, running.attempt, running.started_at) == (TaskStatus.RUNNING, 1, 1, t0)
        clock_of(store).advance(2.5)
        assert (await _one(store, lease, complete("t1", output={"ok": [1, "two"]}))).ok
        done = (await store.load_session("s1")).task("t1")
        assert (done.status, done.output, done.ended_at, done.duration) == (
            TaskStatus.COMPLETED, {"ok": [1, "two"]}, t0 + 2.5, 2.5)
        assert [h.status for h in done.history] == [TaskStatus.COMPLETED]

    async def test_second_complete_is_rejected_and_output_unchanged(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        await store.write_tasks(lease, [complete("t1", output="first")])
        again = await _one(store, lease, complete("t1", output="second"))
        assert again.outcome in (WriteOutcome.ALREADY_APPLIED, WriteOutcome.COMPLETED_ELSEWHERE)
        b = await _expire_and_claim(store, "s1", "w2")
        other = await _one(store, b, complete("t1", 2, output="third"))
        assert other.outcome is WriteOutcome.COMPLETED_ELSEWHERE
        assert other.task is not None and other.task.output == "first"
        restart = await _one(store, b, start("t1", 2))
        assert restart.outcome is WriteOutcome.COMPLETED_ELSEWHERE
        t1 = await store.get_task("s1", "t1")
        assert (t1.status, t1.output, t1.fence, t1.attempt) == (TaskStatus.COMPLETED, "first", 1, 1)

    async def test_repeated_write_is_already_applied_not_a_conflict(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        assert (await _one(store, lease, start("t1"))).outcome is WriteOutcome.APPLIED
        assert (await _one(store, lease, start("t1"))).outcome is WriteOutcome.ALREADY_APPLIED
        assert (await _one(store, lease, complete("t1", output=1))).outcome is WriteOutcome.APPLIED
        assert (await _one(store, lease, complete("t1", output=1))).outcome is WriteOutcome.ALREADY_APPLIED
        assert (await store.get_task("s1", "t1")).attempt == 1

    async def test_write_with_unexpected_attempt_is_stale(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        result = await _one(store, lease, start("t1", 3))
        assert result.outcome is WriteOutcome.STALE and result.task is not None and result.task.attempt == 1
        assert (await _one(store, lease, complete("t1", 2))).outcome is WriteOutcome.STALE
        assert (await store.get_task("s1", "t1")).status is TaskStatus.RUNNING

    async def test_write_results_follow_the_order_of_writes(self, store: Store) -> None:
        await make_session(store, tasks=_tasks("a", "b", "c"))
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("b")])
        results = await store.write_tasks(lease, [start("c"), start("b", 5), start("a")])
        assert [(r.task_id, r.outcome) for r in results] == [
            ("c", WriteOutcome.APPLIED), ("b", WriteOutcome.STALE), ("a", WriteOutcome.APPLIED)]

    async def test_stale_owner_write_to_a_task_the_new_owner_started_is_rejected(self, store: Store) -> None:
        await make_session(store)
        a = await store.claim_session("s1", "worker-a", LEASE)
        await store.write_tasks(a, [start("t1")])
        b = await _expire_and_claim(store, "s1", "worker-b")
        await store.write_tasks(b, [start("t1", 2)])
        fail = TaskWrite(TaskWriteKind.FAIL, "t1", 1, error=ErrorInfo("E", "boom"))
        try:
            outcome = (await _one(store, a, fail)).outcome
        except LeaseLostError as exc:
            assert exc.session_id == "s1"
        else:
            assert outcome is WriteOutcome.STALE
        t1 = await store.get_task("s1", "t1")
        assert (t1.status, t1.fence, t1.attempt) == (TaskStatus.RUNNING, 2, 2)

    async def test_stale_owner_cannot_decide_the_session_outcome(self, store: Store) -> None:
        await make_session(store)
        a = await store.claim_session("s1", "worker-a", LEASE)
        await store.load_session("s1")
        await store.write_tasks(a, [start("t1")])
        b = await _expire_and_claim(store, "s1", "worker-b")  # A stalled past its lease
        loaded = (await store.load_session("s1")).task("t1")
        try:  # A wakes: whether its SKIP lands on the task or not, it decides nothing
            await store.write_tasks(a, [TaskWrite(TaskWriteKind.SKIP, "t1", 1, reason="upstream failed")])
        except LeaseLostError:
            pass
        assert (await _one(store, b, start("t1", loaded.attempt + 1))).outcome is WriteOutcome.APPLIED
        assert (await _one(store, b, complete("t1", loaded.attempt + 1, output="B"))).outcome is WriteOutcome.APPLIED
        for tid in ("t2",):
            await store.write_tasks(b, [start(tid)])
            await store.write_tasks(b, [complete(tid, output="B")])
        with pytest.raises(LeaseLostError):
            await store.finish_session(a, SessionStatus.FAILED, "t1 skipped")
        await store.finish_session(b, SessionStatus.COMPLETED)
        with pytest.raises(LeaseLostError):
            await store.finish_session(a, SessionStatus.FAILED, "t1 skipped")
        snap = await store.load_session("s1")
        assert (snap.session.status, snap.session.fence) == (SessionStatus.COMPLETED, 2)
        assert {t.task_id: (t.status, t.output) for t in snap.tasks.values()} == {
            "t1": (TaskStatus.COMPLETED, "B"), "t2": (TaskStatus.COMPLETED, "B")}

    async def test_retry_progress_and_checkpoint_writes_round_trip(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.PROGRESS, "t1", 1, progress=Progress(3, 9, "p"))])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.CHECKPOINT, "t1", 1, checkpoint={"step": 3})])
        not_before = clock_of(store).now() + 60
        err = ErrorInfo("builtins.RuntimeError", "flaky", "Traceback ...")
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.RETRY, "t1", 1, error=err, not_before=not_before)])
        t1 = (await store.load_session("s1")).task("t1")
        assert (t1.status, t1.not_before, t1.last_error, t1.checkpoint) == (
            TaskStatus.PENDING, not_before, err, {"step": 3})
        assert t1.progress == Progress(3, 9, "p") and [h.error for h in t1.history] == [err]
        assert (await _one(store, lease, start("t1", 2))).outcome is WriteOutcome.APPLIED
        assert (await store.get_task("s1", "t1")).attempts_left == 1

    async def test_one_megabyte_output_round_trips(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        output = {"log": "é" + "x" * BIG, "lines": list(range(1000))}
        await store.write_tasks(lease, [start("t1")])
        assert (await _one(store, lease, complete("t1", output=output))).ok
        assert (await store.get_task("s1", "t1")).output == output
        assert (await store.load_session("s1")).task("t1").output == output

    async def test_output_written_by_a_stale_owner_is_never_read(self, store: Store) -> None:
        await make_session(store)
        a = await store.claim_session("s1", "worker-a", LEASE)
        await store.write_tasks(a, [start("t1")])
        b = await _expire_and_claim(store, "s1", "worker-b")
        await store.write_tasks(b, [start("t1", 2)])
        try:  # A's chunks may be written; its completion must not be
            result = await _one(store, a, complete("t1", 1, output={"by": "A", "blob": "a" * BIG}))
            assert not result.ok
        except LeaseLostError:
            pass
        b_output = {"by": "B", "blob": "b" * BIG}
        assert (await _one(store, b, complete("t1", 2, output=b_output))).outcome is WriteOutcome.APPLIED
        late = await _one(store, a, complete("t1", 1, output={"by": "A", "blob": "c" * BIG}))
        assert late.outcome is WriteOutcome.COMPLETED_ELSEWHERE
        assert (await store.load_session("s1")).task("t1").output == b_output
        assert (await store.get_task("s1", "t1")).output == b_output

    # -- redrive of failed sessions ----------------------------------------------------------

    async def _failed(self, store: Store, needs_human: str | None = None, **fields: Any) -> SessionRecord:
        await make_session(store, **fields)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.FAIL, "t1", 1, error=ErrorInfo("E", "boom"))])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.SKIP, "t2", 0, reason="t1 failed")])
        return await store.finish_session(lease, SessionStatus.FAILED, "t1 failed", needs_human_reason=needs_human)

    async def test_failed_session_is_claimable_only_under_a_redrive_policy(self, store: Store) -> None:
        failed = await self._failed(store)
        assert (failed.status, failed.reason) == (SessionStatus.FAILED, "t1 failed")
        with pytest.raises(ClaimRejectedError, match="FAILED"):
            await store.claim_session("s1", "cron", LEASE)
        clock_of(store).advance(100)
        lease = await store.claim_session("s1", "cron", LEASE, ClaimPolicy(redrive_failed=True))
        s = await store.get_session("s1")
        assert (lease.fence, s.status, s.redrive_count) == (2, SessionStatus.RUNNING, 1)

    async def test_redrive_respects_the_updated_before_bound(self, store: Store) -> None:
        failed = await self._failed(store)
        too_early = ClaimPolicy(redrive_failed=True, failed_updated_before=failed.updated_at - 1)
        with pytest.raises(ClaimRejectedError):
            await store.claim_session("s1", "cron", LEASE, too_early)
        ok = ClaimPolicy(redrive_failed=True, failed_updated_before=failed.updated_at)
        assert (await store.claim_session("s1", "cron", LEASE, ok)).fence == 2

    async def test_needs_human_blocks_redrive_until_forced(self, store: Store) -> None:
        await self._failed(store, needs_human="bad credentials")
        s = await store.get_session("s1")
        assert (s.needs_human, s.needs_human_reason) == (True, "bad credentials")
        with pytest.raises(ClaimRejectedError, match="needs-human"):
            await store.claim_session("s1", "cron", LEASE, ClaimPolicy(redrive_failed=True))
        await store.claim_session("s1", "person", LEASE, ClaimPolicy(force=True))
        s = await store.get_session("s1")
        assert (s.needs_human, s.status, s.redrive_count) == (False, SessionStatus.RUNNING, 1)

    async def test_redrive_limit_blocks_until_forced(self, store: Store) -> None:
        await self._failed(store, max_redrives=1)
        lease = await store.claim_session("s1", "cron", LEASE, ClaimPolicy(redrive_failed=True))
        await store.finish_session(lease, SessionStatus.FAILED, "again")
        with pytest.raises(ClaimRejectedError, match="redrive"):
            await store.claim_session("s1", "cron", LEASE, ClaimPolicy(redrive_failed=True))
        forced = await store.claim_session("s1", "person", LEASE, ClaimPolicy(force=True))
        assert (forced.fence, (await store.get_session("s1")).redrive_count) == (3, 2)

    async def test_set_needs_human_flags_and_clears(self, store: Store) -> None:
        await self._failed(store)
        flagged = await store.set_needs_human("s1", "look at the logs")
        assert (flagged.needs_human, flagged.needs_human_reason) == (True, "look at the logs")
        cleared = await store.set_needs_human("s1", None)
        assert (cleared.needs_human, cleared.needs_human_reason) == (False, None)
        assert (await store.get_session("s1")).needs_human is False

    async def test_reset_gives_failed_and_skipped_tasks_fresh_attempts(self, store: Store) -> None:
        await self._failed(store)
        lease = await store.claim_session("s1", "cron", LEASE, ClaimPolicy(redrive_failed=True))
        t1 = await store.get_task("s1", "t1")
        reset = [TaskWrite(TaskWriteKind.RESET, "t1", t1.attempt), TaskWrite(TaskWriteKind.RESET, "t2", 0)]
        assert all(r.ok for r in await store.write_tasks(lease, reset))
        snap = await store.load_session("s1")
        assert [snap.task(t).status for t in ("t1", "t2")] == [TaskStatus.PENDING, TaskStatus.PENDING]
        assert snap.task("t1").attempts_left == snap.task("t1").max_attempts
        assert (await _one(store, lease, start("t1", t1.attempt + 1))).outcome is WriteOutcome.APPLIED

    # -- waits, signals, cancellation -------------------------------------------------------

    async def test_wait_with_a_stale_signal_seq_returns_false_and_changes_nothing(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        assert await store.send_signal("s1", "t1", "approve", {"by": "ann"}) == 1
        assert await store.wait_session(lease, clock_of(store).now() + 600) is False
        s = await store.get_session("s1")
        assert (s.status, s.lease_owner, s.signal_seq) == (SessionStatus.RUNNING, "w1", 1)
        sig = (await store.load_session("s1")).signals[("t1", "approve")]
        assert (sig.payload, sig.seq) == ({"by": "ann"}, 1)

    async def test_wait_frees_the_lease_and_a_signal_makes_the_session_due(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.WAIT, "t1", 1)])
        assert await store.wait_session(lease, None) is True
        s = await store.get_session("s1")
        assert (s.status, s.lease_owner) == (SessionStatus.WAITING, None)
        clock_of(store).advance(365 * 86400)
        with pytest.raises(ClaimRejectedError):
            await store.claim_session("s1", "w2", LEASE)
        assert await store.send_signal("s1", "t1", "approve", True) == 1
        due = await store.list_sessions(SessionStatus.WAITING, updated_before=clock_of(store).now())
        assert [x.session_id for x in due.items] == ["s1"]
        lease2 = await store.claim_session("s1", "w2", LEASE)
        assert (lease2.fence, lease2.signal_seq) == (2, 1)
        assert (await store.load_session("s1")).task("t1").status is TaskStatus.WAITING

    async def test_wake_at_in_the_past_makes_a_waiting_session_claimable(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        wake = clock_of(store).now() + 300
        assert await store.wait_session(lease, wake) is True
        assert (await store.get_session("s1")).wake_at == wake
        not_due = await store.list_sessions(SessionStatus.WAITING, updated_before=clock_of(store).now())
        assert not_due.items == ()
        with pytest.raises(ClaimRejectedError):
            await store.claim_session("s1", "w2", LEASE)
        clock_of(store).advance(301)
        assert (await store.claim_session("s1", "w2", LEASE)).fence == 2

    async def test_signal_to_a_finished_session_is_refused(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.finish_session(lease, SessionStatus.COMPLETED)
        with pytest.raises(SessionStateError):
            await store.send_signal("s1", "t1", "late", 1)
        assert (await store.get_session("s1")).signal_seq == 0

    async def test_cancel_of_an_unowned_session_cancels_it_at_once(self, store: Store) -> None:
        await make_session(store)
        s = await store.request_cancel("s1", "user asked")
        assert (s.status, s.cancel_requested) == (SessionStatus.CANCELLED, True)
        assert s.reason == "user asked" and s.expires_at is not None
        with pytest.raises(ClaimRejectedError):
            await store.claim_session("s1", "w1", LEASE)

    async def test_cancel_of_an_owned_session_is_stored_for_the_owner(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        s = await store.request_cancel("s1", "user asked")
        assert (s.status, s.cancel_requested, s.lease_owner) == (SessionStatus.RUNNING, True, "w1")
        _, seen = await store.renew_lease(lease, LEASE)
        assert seen.cancel_requested is True
        done = await store.finish_session(lease, SessionStatus.CANCELLED, "user asked")
        assert done.status is SessionStatus.CANCELLED

    # -- listing, events -------------------------------------------------------------------

    async def _sessions(self, store: Store, n: int, project: str | None = None, prefix: str = "s") -> list[str]:
        ids = []
        for i in range(n):
            sid = f"{prefix}{i:02d}"
            await make_session(store, sid, tasks=_tasks("t1"), project_id=project)
            ids.append(sid)
            clock_of(store).advance(1)
        return ids

    async def test_list_sessions_pages_oldest_first_across_pages(self, store: Store) -> None:
        ids = await self._sessions(store, 9)
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(20):
            page = await store.list_sessions(SessionStatus.PENDING, limit=2, cursor=cursor)
            assert len(page.items) <= 2
            seen += [s.session_id for s in page.items]
            cursor = page.cursor
            if cursor is None:
                break
        assert seen == ids
        assert (await store.list_sessions(SessionStatus.RUNNING)).items == ()

    async def test_list_sessions_honours_updated_before(self, store: Store) -> None:
        t0 = clock_of(store).now()
        ids = await self._sessions(store, 5)
        page = await store.list_sessions(SessionStatus.PENDING, updated_before=t0 + 2.5)
        assert [s.session_id for s in page.items] == ids[:3]

    async def test_list_project_sessions_pages_newest_first(self, store: Store) -> None:
        ids = await self._sessions(store, 5, project="proj-a")
        await self._sessions(store, 2, project="proj-b", prefix="other")
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(20):
            page = await store.list_project_sessions("proj-a", limit=2, cursor=cursor)
            seen += [s.session_id for s in page.items]
            cursor = page.cursor
            if cursor is None:
                break
        assert seen == ids[::-1]

    async def test_events_read_in_time_order_across_pages_and_appends_are_idempotent(self, store: Store) -> None:
        await make_session(store)
        t0 = clock_of(store).now()
        events = [Event("s1", "log", t0 + i, task_id="t1", message=f"line {i}", data={"i": i}, writer="w1", seq=i)
                  for i in range(7)]
        await store.append_events(events[3:])
        await store.append_events(events[:4])  # event 3 sent twice
        seen: list[Event] = []
        after: str | None = None
        for _ in range(20):
            page = await store.read_events("s1", after=after, limit=3)
            seen += page.items
            after = page.cursor
            if after is None:
                break
        assert [(e.message, e.data, e.seq) for e in seen] == [(e.message, e.data, e.seq) for e in events]

    # -- metrics ---------------------------------------------------------------------------

    async def test_metrics_are_summed_over_writers(self, store: Store) -> None:
        day = "2025-06-15"
        w1 = MetricSummary(day, 3, "task", "coder", count=4, errors=1, blocked=1, sum_ms=40.0, min_ms=5.0,
                           max_ms=20.0, buckets=(1, 2, 1))
        w2 = MetricSummary(day, 3, "task", "coder", count=2, errors=0, sum_ms=10.0, min_ms=2.0, max_ms=8.0,
                           buckets=(0, 1, 0, 1))
        other = MetricSummary(day, 4, "task", "tester", count=9)
        await store.record_metrics("writer-1", 1, [w1, other])
        await store.record_metrics("writer-2", 1, [w2])
        [coder] = await store.read_metrics(day, name="task", agent="coder")
        assert (coder.hour, coder.count, coder.errors, coder.blocked, coder.sum_ms) == (3, 6, 1, 1, 50.0)
        assert (coder.min_ms, coder.max_ms, _strip(coder.buckets)) == (2.0, 20.0, (1, 3, 1, 1))
        assert {(m.agent, m.count) for m in await store.read_metrics(day)} == {("coder", 6), ("tester", 9)}

    async def test_retried_record_metrics_with_the_same_seq_does_not_double_count(self, store: Store) -> None:
        day = "2025-06-15"
        first = MetricSummary(day, 0, "task", "a", count=3, sum_ms=3.0, buckets=(3,))
        later = MetricSummary(day, 0, "task", "a", count=5, sum_ms=5.0, buckets=(5,))
        await store.record_metrics("w", 1, [first])
        await store.record_metrics("w", 1, [first])
        await store.record_metrics("w", 2, [later])
        await store.record_metrics("w", 1, [first])  # a late retry of an older seq
        [m] = await store.read_metrics(day, agent="a")
        assert (m.count, m.sum_ms, _strip(m.buckets)) == (5, 5.0, (5,))

    # -- pipelines ---------------------------------------------------------------------------

    async def test_pipeline_put_get_and_shape_mismatch(self, store: Store) -> None:
        tasks = tuple(_tasks("plan", "code", chain=True))
        definition = PipelineDefinition("build", "2", tasks)
        await store.put_pipeline(definition)
        await store.put_pipeline(definition)
        got = await store.get_pipeline("build", "2")
        assert (got.name, got.version, got.digest) == ("build", "2", definition.digest)
        assert {t.task_id for t in got.tasks} == {"plan", "code"}
        with pytest.raises(ValidationError):
            await store.put_pipeline(PipelineDefinition("build", "2", tasks[:1]))
        assert (await store.get_pipeline("build", "2")).digest == definition.digest
        with pytest.raises(PipelineNotFoundError):
            await store.get_pipeline("build", "3")

    # -- tasks added at run time ----------------------------------------------------------------

    async def test_added_tasks_are_invisible_until_the_parent_completes(self, store: Store) -> None:
        await make_session(store, tasks=_tasks("p"))
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("p")])
        added = [NewTask("c1", "coder", input={"i": 1}, depends_on=("p",)),
                 NewTask("c2", "tester", depends_on=("c1",))]
        await store.add_tasks(lease, "p", 1, added)
        snap = await store.load_session("s1")
        assert set(snap.tasks) == {"p"} and snap.edges == ()
        await store.add_tasks(lease, "p", 1, added)  # a re-run agent adding the same tasks
        with pytest.raises(PipelineDefinitionError):
            await store.add_tasks(lease, "p", 1, [NewTask("c1", "other-agent", depends_on=("p",))])
        assert (await _one(store, lease, complete("p", output="split"))).ok
        snap = await store.load_session("s1")
        assert set(snap.tasks) == {"p", "c1", "c2"}
        assert set(snap.edges) == {Edge("c1", "p"), Edge("c2", "c1")}
        assert (snap.task("c1").status, snap.task("c1").input, snap.task("c1").agent) == (
            TaskStatus.PENDING, {"i": 1}, "coder")

    # -- bad input ---------------------------------------------------------------------------

    async def _assert_empty(self, store: Store, session_id: str = "s1") -> None:
        with pytest.raises(SessionNotFoundError):
            await store.get_session(session_id)
        with pytest.raises(SessionNotFoundError):
            await store.load_session(session_id)
        assert (await store.list_sessions(SessionStatus.PENDING)).items == ()

    async def test_duplicate_task_ids_are_refused_before_writing(self, store: Store) -> None:
        with pytest.raises(PipelineDefinitionError, match="t1"):
            await make_session(store, tasks=[NewTask("t1", "a"), NewTask("t1", "b")])
        await self._assert_empty(store)

    async def test_unknown_dependency_is_refused_before_writing(self, store: Store) -> None:
        with pytest.raises(PipelineDefinitionError, match="missing"):
            await make_session(store, tasks=[NewTask("t1", "a", depends_on=("missing",))])
        await self._assert_empty(store)

    async def test_non_json_input_is_refused_before_writing(self, store: Store) -> None:
        with pytest.raises(SerializationError):
            await make_session(store, input={"when": object()})
        with pytest.raises(SerializationError):
            await make_session(store, tasks=[NewTask("t1", "a"), NewTask("t2", "b", input={"x": {1, 2}})])
        await self._assert_empty(store)

    async def test_non_json_output_is_refused_and_the_task_unchanged(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        with pytest.raises(SerializationError):
            await store.write_tasks(lease, [complete("t2", 0), complete("t1", output=object())])
        snap = await store.load_session("s1")
        assert (snap.task("t1").status, snap.task("t2").status) == (TaskStatus.RUNNING, TaskStatus.PENDING)

    async def test_existing_session_id_is_refused_and_the_original_kept(self, store: Store) -> None:
        await make_session(store)
        with pytest.raises(SessionStateError):
            await make_session(store, tasks=_tasks("x"))
        assert set((await store.load_session("s1")).tasks) == {"t1", "t2"}

    async def test_unknown_session_raises_session_not_found(self, store: Store) -> None:
        lease = Lease("nope", "w1", 1, clock_of(store).now() + LEASE)
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.get_session("nope"),
            lambda: store.load_session("nope"),
            lambda: store.claim_session("nope", "w1", LEASE),
            lambda: store.send_signal("nope", "t1", "n", 1),
            lambda: store.request_cancel("nope", "why"),
            lambda: store.update_session(lease, progress=Progress(1, 1)),
        ]
        for call in calls:
            with pytest.raises(SessionNotFoundError, match="nope"):
                await call()
        await self._assert_empty(store, "nope")

    async def test_unknown_task_raises_not_found(self, store: Store) -> None:
        await make_session(store)
        with pytest.raises(NotFoundError):
            await store.get_task("s1", "zzz")
        lease = await store.claim_session("s1", "w1", LEASE)
        with pytest.raises(NotFoundError):
            await store.write_tasks(lease, [start("t1"), start("zzz")])
        assert (await store.get_task("s1", "t1")).status is TaskStatus.PENDING

    async def test_invalid_ids_are_refused_before_writing(self, store: Store) -> None:
        await make_session(store)
        with pytest.raises(ValidationError):
            NewSession(session_id="bad#id", pipeline="p")
        with pytest.raises(ValidationError):
            NewTask("a/b", "agent")
        with pytest.raises((ValidationError, NotFoundError)):  # never a key like TASK#t1#DEP#x#SIGNAL#n
            await store.send_signal("s1", "t1#DEP#x", "n", 1)
        with pytest.raises(NotFoundError):
            await store.send_signal("s1", "no-such-task", "n", 1)
        assert (await store.get_session("s1")).signal_seq == 0

    async def test_item_of_a_newer_schema_version_is_refused(self, store: Store) -> None:
        await make_session(store)
        await self.write_newer_schema_version(store, "s1")
        with pytest.raises(SchemaError):
            await store.get_session("s1")
        with pytest.raises(SchemaError):
            await store.load_session("s1")
        with pytest.raises(SchemaError):
            await store.claim_session("s1", "w1", LEASE)

    # -- atomic creation, retention ----------------------------------------------------------

    async def test_a_large_session_appears_to_a_reader_all_at_once(self, store: Store) -> None:
        ids = [f"t{i:03d}" for i in range(250)]
        tasks = [NewTask(tid, "agent", depends_on=tuple(ids[j] for j in (i - 1, i - 2) if j >= 0 and
                                                        (j == i - 1 or i <= 152)))
                 for i, tid in enumerate(ids)]
        assert sum(len(t.depends_on) for t in tasks) == 400
        seen = {"missing": 0, "whole": 0}
        done = anyio.Event()

        async def reader() -> None:
            while True:
                finished = done.is_set()
                try:
                    snap = await store.load_session("big")
                except SessionNotFoundError:
                    assert not finished
                    seen["missing"] += 1
                else:
                    assert (len(snap.tasks), len(snap.edges)) == (250, 400)
                    seen["whole"] += 1
                    return
                await anyio.sleep(0)

        async def writer() -> None:
            await make_session(store, "big", tasks=tasks)
            done.set()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                tg.start_soon(writer)
        assert seen["whole"] == 1

    async def test_purge_deletes_sessions_ended_before_the_bound(self, store: Store) -> None:
        await make_session(store, "old")
        await make_session(store, "live")
        lease = await store.claim_session("old", "w1", LEASE)
        await store.finish_session(lease, SessionStatus.COMPLETED)
        clock_of(store).advance(100)
        report = await store.purge(ended_before=clock_of(store).now() - 50)
        assert report.sessions == 1 and report.items >= 1
        with pytest.raises(SessionNotFoundError):
            await store.load_session("old")
        assert (await store.get_session("live")).status is SessionStatus.PENDING

