"""The decisions where backends once differed: each is one contract test every backend passes.

Each test names the decision and why it was taken (the rulebook in
`orchestrator/store/rules/` makes it; every backend only applies it):

- Cancelling a FAILED session cancels it: an operator uses cancel to stop every
  redrive of a session they gave up on.
- A cycle, a RUNNING session without an owner, a lease of 0 s or less, a claim
  without an owner, a needs-human reason on a session that did not fail, a signal name
  that is not an id: each is refused with a ValidationError before anything is written.
- Values over their size limit (`store/rules/limits.py`, from DynamoDB's 400 KB item)
  are refused on every backend with PayloadTooLargeError naming the ids, the size and
  the limit, before anything is written.

Found by the differential test (`tests/store/test_differential.py`), decided so:

- A batch is checked in order: sizes first (input checks need no read), then unknown
  tasks (the first in write order is named), before any write.
- Each write of a batch is decided alone: a rejection explained by a lost lease keeps
  the writes the fence still allows and raises LeaseLostError after them. DynamoDB
  without transactions cannot undo a write, so all-or-nothing could not hold there.
- A session is gone once `expires_at <= now`, on every read, whether or not the backend
  has deleted it yet (DynamoDB's TTL deletes days late).
- A staged task is unknown (to reads, writes and signals) until its parent's attempt
  completes; adopted, it keeps its staging time. Adding tasks from a COMPLETED parent
  is refused (they could never be adopted).
"""

from __future__ import annotations

import pytest

from orchestrator.errors import (
    ClaimRejectedError,
    CycleError,
    LeaseLostError,
    PayloadTooLargeError,
    RedriveLimitError,
    SessionNotFoundError,
    TaskCompletedError,
    TaskNotFoundError,
    ValidationError,
)
from orchestrator.store import (
    ClaimPolicy,
    Lease,
    NewSession,
    NewTask,
    Progress,
    SessionStatus,
    Store,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
)
from orchestrator.store.rules import Payload
from orchestrator.testing.contract_base import (
    LEASE,
    assert_no_session,
    clock_of,
    complete,
    make_session,
    start,
)

__all__ = ["RulebookContract"]

MB = 1024 * 1024


def _limit(kind: Payload) -> int:
    limit = kind.limit
    assert limit is not None
    return limit


class RulebookContract:
    """Decisions that every backend takes the same way; needs a `store` fixture."""

    pytestmark = pytest.mark.anyio

    # -- cancel ----------------------------------------------------------------------------

    async def test_cancel_of_a_failed_session_cancels_it_and_stops_redrives(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.finish_session(lease, SessionStatus.FAILED, "boom")
        cancelled = await store.request_cancel("s1", "given up")
        assert (cancelled.status, cancelled.reason, cancelled.fence) == (SessionStatus.CANCELLED, "given up", 2)
        assert (await store.get_session("s1")).status is SessionStatus.CANCELLED
        with pytest.raises(ClaimRejectedError):
            await store.claim_session("s1", "w2", LEASE, ClaimPolicy(redrive_failed=True, force=True))

    async def test_a_redrive_past_the_limit_raises_redrive_limit_until_forced(self, store: Store) -> None:
        await make_session(store, max_redrives=0)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.finish_session(lease, SessionStatus.FAILED, "boom")
        with pytest.raises(RedriveLimitError) as info:
            await store.claim_session("s1", "w2", LEASE, ClaimPolicy(redrive_failed=True))
        assert "--force" in str(info.value)
        forced = await store.claim_session("s1", "w2", LEASE, ClaimPolicy(redrive_failed=True, force=True))
        assert forced.fence == 2

    # -- creation ----------------------------------------------------------------------------

    async def test_a_dependency_cycle_is_refused_naming_the_cycle(self, store: Store) -> None:
        tasks = [NewTask("a", "x", depends_on=("c",)), NewTask("b", "x", depends_on=("a",)),
                 NewTask("c", "x", depends_on=("b",))]
        with pytest.raises(CycleError) as info:
            await make_session(store, tasks=tasks)
        assert info.value.cycle == ["a", "c", "b"]
        assert "a -> c -> b -> a" in str(info.value)
        await assert_no_session(store)

    async def test_a_self_dependency_is_a_cycle(self, store: Store) -> None:
        with pytest.raises(CycleError):
            await make_session(store, tasks=[NewTask("a", "x", depends_on=("a",))])
        await assert_no_session(store)

    async def test_a_running_session_without_an_owner_is_refused(self, store: Store) -> None:
        with pytest.raises(ValidationError, match="owner"):
            await make_session(store, status=SessionStatus.RUNNING)
        await assert_no_session(store)

    @pytest.mark.parametrize("seconds", [0, -1.0, float("nan"), float("inf")])
    async def test_a_lease_that_is_not_a_positive_number_is_refused_on_create(
            self, store: Store, seconds: float) -> None:
        with pytest.raises(ValidationError, match="lease_seconds"):
            await make_session(store, owner="w1", lease_seconds=seconds)
        await assert_no_session(store)

    @pytest.mark.parametrize("seconds", [0, -5.0])
    async def test_a_lease_that_is_not_a_positive_number_is_refused_on_claim_and_renew(
            self, store: Store, seconds: float) -> None:
        await make_session(store)
        with pytest.raises(ValidationError, match="lease_seconds"):
            await store.claim_session("s1", "w1", seconds)
        assert (await store.get_session("s1")).status is SessionStatus.PENDING
        lease = await store.claim_session("s1", "w1", LEASE)
        with pytest.raises(ValidationError, match="lease_seconds"):
            await store.renew_lease(lease, seconds)
        assert (await store.get_session("s1")).lease_expires_at == lease.expires_at

    @pytest.mark.parametrize("owner", ["", "   "])
    async def test_a_claim_without_an_owner_is_refused(self, store: Store, owner: str) -> None:
        await make_session(store)
        with pytest.raises(ValidationError, match="owner"):
            await store.claim_session("s1", owner, LEASE)
        stored = await store.get_session("s1")
        assert (stored.status, stored.fence) == (SessionStatus.PENDING, 0)

    # -- finish ----------------------------------------------------------------------------

    async def test_needs_human_on_a_session_that_did_not_fail_is_refused(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        with pytest.raises(ValidationError, match="needs_human_reason"):
            await store.finish_session(lease, SessionStatus.COMPLETED, needs_human_reason="look")
        assert (await store.get_session("s1")).status is SessionStatus.RUNNING

    async def test_finish_with_a_status_that_is_not_final_is_refused(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        with pytest.raises(ValidationError, match="status"):
            await store.finish_session(lease, SessionStatus.WAITING)
        assert (await store.get_session("s1")).status is SessionStatus.RUNNING

    async def test_a_repeated_finish_by_the_same_owner_returns_the_stored_session(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        first = await store.finish_session(lease, SessionStatus.COMPLETED, "done")
        clock_of(store).advance(5)
        again = await store.finish_session(lease, SessionStatus.COMPLETED, "done")
        assert again == first

    # -- signals ---------------------------------------------------------------------------

    @pytest.mark.parametrize("name", ["a#b", "", "with space", "x" * 129])
    async def test_a_signal_name_that_is_not_an_id_is_refused(self, store: Store, name: str) -> None:
        await make_session(store)
        with pytest.raises(ValidationError, match="signal"):
            await store.send_signal("s1", "t1", name, {"ok": True})
        assert (await store.get_session("s1")).signal_seq == 0

    # -- sizes -----------------------------------------------------------------------------

    async def test_a_session_input_over_the_limit_is_refused_before_writing(self, store: Store) -> None:
        with pytest.raises(PayloadTooLargeError) as info:
            await make_session(store, input="x" * (5 * MB))
        assert (info.value.session_id, info.value.limit) == ("s1", _limit(Payload.SESSION_INPUT))
        assert info.value.size > info.value.limit
        await assert_no_session(store)

    async def test_a_task_input_over_the_limit_is_refused_naming_the_task(self, store: Store) -> None:
        big = "y" * (_limit(Payload.TASK_INPUT) + 1)
        with pytest.raises(PayloadTooLargeError) as info:
            await make_session(store, tasks=[NewTask("t1", "a"), NewTask("t2", "a", input=big)])
        assert (info.value.session_id, info.value.task_id) == ("s1", "t2")
        assert "t2" in str(info.value) and f"{_limit(Payload.TASK_INPUT):,}" in str(info.value)
        await assert_no_session(store)

    async def test_a_value_at_the_limit_is_accepted(self, store: Store) -> None:
        at_limit = "z" * (_limit(Payload.TASK_INPUT) - 2)  # the JSON string adds two quotes
        await make_session(store, tasks=[NewTask("t1", "a", input=at_limit)])
        assert (await store.get_task("s1", "t1")).input == at_limit

    @pytest.mark.parametrize("size", [200 * 1024, MB])
    async def test_a_checkpoint_over_the_limit_is_refused_and_the_task_unchanged(
            self, store: Store, size: int) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        with pytest.raises(PayloadTooLargeError) as info:
            await store.write_tasks(lease, [TaskWrite(TaskWriteKind.CHECKPOINT, "t1", 1, checkpoint="c" * size)])
        assert (info.value.task_id, info.value.limit) == ("t1", _limit(Payload.CHECKPOINT))
        task = await store.get_task("s1", "t1")
        assert (task.status, task.checkpoint) == (TaskStatus.RUNNING, None)

    async def test_an_output_of_any_size_is_stored(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        big = "o" * (3 * MB)
        await store.write_tasks(lease, [start("t1")])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.COMPLETE, "t1", 1, output=big)])
        assert (await store.get_task("s1", "t1")).output == big

    async def test_a_signal_payload_over_the_limit_is_refused(self, store: Store) -> None:
        await make_session(store)
        with pytest.raises(PayloadTooLargeError):
            await store.send_signal("s1", "t1", "go", "p" * (_limit(Payload.SIGNAL_PAYLOAD) + 1))
        assert (await store.get_session("s1")).signal_seq == 0

    async def test_session_metadata_over_the_limit_is_refused_on_update(self, store: Store) -> None:
        await make_session(store)
        lease: Lease = await store.claim_session("s1", "w1", LEASE)
        with pytest.raises(PayloadTooLargeError):
            await store.update_session(lease, metadata={"m": "m" * (_limit(Payload.SESSION_METADATA) + 1)},
                                       progress=Progress(1, 2))
        assert (await store.get_session("s1")).progress == Progress(0, 2)

    async def test_a_new_session_is_checked_before_any_write(self, store: Store) -> None:
        """Nothing of a refused session is visible, whatever part was bad."""
        with pytest.raises(PayloadTooLargeError):
            await store.create_session(NewSession("s1", "p", metadata={"m": "m" * MB}), [NewTask("t1", "a")])
        await assert_no_session(store)

    # -- found by the differential test ----------------------------------------------------

    async def test_a_size_refusal_comes_before_an_unknown_task(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        big = "c" * (_limit(Payload.CHECKPOINT) + 1)
        with pytest.raises(PayloadTooLargeError):
            await store.write_tasks(lease, [start("t1"), TaskWrite(TaskWriteKind.CHECKPOINT, "nope", 1, checkpoint=big)])
        assert (await store.get_task("s1", "t1")).status is TaskStatus.PENDING

    async def test_an_unknown_task_fails_the_batch_naming_the_first_in_write_order(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        with pytest.raises(TaskNotFoundError) as info:
            await store.write_tasks(lease, [start("t1"), start("zz"), start("aa")])
        assert info.value.task_id == "zz"
        assert (await store.get_task("s1", "t1")).status is TaskStatus.PENDING

    async def test_a_lease_lost_rejection_keeps_the_writes_the_fence_allows(self, store: Store) -> None:
        await make_session(store, tasks=[NewTask("t1", "a"), NewTask("t2", "b")])
        old = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(old, [start("t1")])
        clock_of(store).advance(LEASE + 1)
        new = await store.claim_session("s1", "w2", LEASE)
        await store.write_tasks(new, [start("t2")])
        with pytest.raises(LeaseLostError):
            # t1 is still the old owner's (fence 1): its completion applies; t2 explains the loss.
            await store.write_tasks(old, [complete("t1", output="done"), TaskWrite(TaskWriteKind.PROGRESS, "t2", 1)])
        t1, t2 = await store.get_task("s1", "t1"), await store.get_task("s1", "t2")
        assert (t1.status, t1.output) == (TaskStatus.COMPLETED, "done")
        assert (t2.status, t2.fence) == (TaskStatus.RUNNING, new.fence)

    async def test_a_session_past_its_retention_reads_as_gone(self, store: Store) -> None:
        await make_session(store, ttl_seconds=3600)
        lease = await store.claim_session("s1", "w1", LEASE)
        ended = await store.finish_session(lease, SessionStatus.COMPLETED)
        assert ended.expires_at is not None
        clock_of(store).set(ended.expires_at)
        for read in (store.get_session("s1"), store.load_session("s1"), store.get_task("s1", "t1")):
            with pytest.raises(SessionNotFoundError):
                await read
        assert (await store.list_sessions(SessionStatus.COMPLETED)).items == ()

    async def test_a_staged_task_is_unknown_until_its_parent_completes(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        staged_at = clock_of(store).now()
        await store.add_tasks(lease, "t1", 1, [NewTask("t9", "c", depends_on=("t1",), added_by="t1")])
        clock_of(store).advance(5)
        with pytest.raises(TaskNotFoundError):
            await store.send_signal("s1", "t9", "go", None)
        with pytest.raises(TaskNotFoundError):
            await store.write_tasks(lease, [start("t9")])
        with pytest.raises(TaskNotFoundError):
            await store.get_task("s1", "t9")
        await store.write_tasks(lease, [complete("t1")])
        adopted = await store.get_task("s1", "t9")
        assert (adopted.status, adopted.updated_at, adopted.added_by) == (TaskStatus.PENDING, staged_at, "t1")
        [started] = await store.write_tasks(lease, [start("t9")])
        assert started.ok

    async def test_adding_tasks_from_a_completed_parent_is_refused(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        await store.write_tasks(lease, [start("t1")])
        await store.write_tasks(lease, [complete("t1")])
        with pytest.raises(TaskCompletedError, match="already COMPLETED"):
            await store.add_tasks(lease, "t1", 1, [NewTask("t9", "c", added_by="t1")])
        assert "t9" not in (await store.load_session("s1")).tasks
