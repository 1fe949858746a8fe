"""The task part of the Store contract: fenced task writes, tasks added at run time, and bad
input refused before anything is written. See `orchestrator.testing.contract`."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable

import pytest

from orchestrator.errors import (
    LeaseLostError,
    NotFoundError,
    PipelineDefinitionError,
    SchemaError,
    SerializationError,
    SessionNotFoundError,
    SessionStateError,
    ValidationError,
)
from orchestrator.store import (
    SCHEMA_VERSION,
    Edge,
    ErrorInfo,
    Lease,
    NewSession,
    NewTask,
    Progress,
    SessionStatus,
    Store,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    WriteOutcome,
)
from orchestrator.testing.contract_base import (
    BIG,
    LEASE,
    _expire_and_claim,
    _one,
    _tasks,
    assert_no_session,
    clock_of,
    complete,
    make_session,
    start,
)

__all__ = ["TaskContract"]


class TaskContract:
    """Fenced task writes and validation; needs a `store` fixture opened with a FakeClock."""

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

    async def test_a_large_completion_repeated_in_one_batch_is_applied_then_already_applied(
        self, store: Store
    ) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        output = {"blob": "x" * 200_000}  # over the inline limit: stored in chunks on DynamoDB
        results = await store.write_tasks(lease, [complete("t1", output=output), complete("t1", output=output)])
        assert [r.outcome for r in results] == [WriteOutcome.APPLIED, WriteOutcome.ALREADY_APPLIED]
        assert (await store.get_task("s1", "t1")).output == output

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

    async def test_a_wait_records_the_signal_the_task_waits_for(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        deadline = clock_of(store).now() + 600
        wait = TaskWrite(TaskWriteKind.WAIT, "t1", 1, not_before=deadline, waiting_for="approval")
        assert (await _one(store, lease, wait)).outcome is WriteOutcome.APPLIED
        loaded = (await store.load_session("s1")).task("t1")
        assert (loaded.status, loaded.waiting_for, loaded.not_before) == (TaskStatus.WAITING, "approval", deadline)
        assert (await store.get_task("s1", "t1")).waiting_for == "approval"

    async def test_a_wake_clears_the_signal_the_task_waited_for(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.WAIT, "t1", 1, waiting_for="approval")])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.WAKE, "t1", 1)])
        woken = (await store.load_session("s1")).task("t1")
        assert (woken.status, woken.waiting_for, woken.attempt) == (TaskStatus.RUNNING, None, 1)

    async def test_a_task_cancelled_while_waiting_no_longer_waits_for_its_signal(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.WAIT, "t1", 1, waiting_for="approval")])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.CANCEL, "t1", 1, reason="stopped")])
        cancelled = await store.get_task("s1", "t1")
        assert (cancelled.status, cancelled.waiting_for) == (TaskStatus.CANCELLED, None)

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

    async def test_duplicate_task_ids_are_refused_before_writing(self, store: Store) -> None:
        with pytest.raises(PipelineDefinitionError, match="t1"):
            await make_session(store, tasks=[NewTask("t1", "a"), NewTask("t1", "b")])
        await assert_no_session(store)

    async def test_unknown_dependency_is_refused_before_writing(self, store: Store) -> None:
        with pytest.raises(PipelineDefinitionError, match="missing"):
            await make_session(store, tasks=[NewTask("t1", "a", depends_on=("missing",))])
        await assert_no_session(store)

    async def test_non_json_input_is_refused_before_writing(self, store: Store) -> None:
        with pytest.raises(SerializationError):
            await make_session(store, input={"when": object()})
        with pytest.raises(SerializationError):
            await make_session(store, tasks=[NewTask("t1", "a"), NewTask("t2", "b", input={"x": {1, 2}})])
        await assert_no_session(store)

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
            lambda: store.read_events("nope"),
        ]
        for call in calls:
            with pytest.raises(SessionNotFoundError, match="nope"):
                await call()
        await assert_no_session(store, "nope")

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

