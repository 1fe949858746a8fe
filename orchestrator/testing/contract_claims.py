"""Claims decided on what the caller saw (`claim_session(..., seen=)`), on every backend.

`ClaimSeenContract` pins `rules.claim_basis`: a listed or read record may spare the
claim its read, but a stale one never yields a wrong claim or a wrong refusal.
`ClaimSeenDynamoDBContract` adds what it saves on the wire: a claim of a listed session
is one UpdateItem, and a worker's resume sends the claim and one Query before its
first task write.
"""

from __future__ import annotations

import pytest

from orchestrator.errors import ClaimRejectedError
from orchestrator.store import NewTask, PreviousHolder, SessionStatus, Store
from orchestrator.testing.contract_base import LEASE, clock_of, make_session, start
from orchestrator.testing.contract_dynamodb import count_requests

__all__ = ["ClaimSeenContract", "ClaimSeenDynamoDBContract"]


class ClaimSeenContract:
    """A claim given the session as listed or read decides exactly as a claim that reads."""

    pytestmark = pytest.mark.anyio

    async def test_a_claim_of_a_listed_session_returns_the_lease_a_plain_claim_returns(self, store: Store) -> None:
        await make_session(store)
        seen = (await store.list_sessions(SessionStatus.PENDING)).items[0]
        now = clock_of(store).now()
        lease = await store.claim_session("s1", "w1", LEASE, seen=seen)
        assert (lease.owner, lease.fence, lease.expires_at) == ("w1", 1, now + LEASE)
        assert lease.previous == PreviousHolder(None, 0, SessionStatus.PENDING, None)
        s = await store.get_session("s1")
        assert (s.status, s.lease_owner, s.fence) == (SessionStatus.RUNNING, "w1", 1)

    async def test_a_listed_session_another_worker_claimed_since_is_refused(self, store: Store) -> None:
        await make_session(store)
        seen = (await store.list_sessions(SessionStatus.PENDING)).items[0]
        await store.claim_session("s1", "w1", LEASE)
        with pytest.raises(ClaimRejectedError, match="w1"):
            await store.claim_session("s1", "w2", LEASE, seen=seen)
        s = await store.get_session("s1")
        assert (s.lease_owner, s.fence) == ("w1", 1)

    async def test_a_stale_listing_of_a_session_released_since_still_claims_it_once(self, store: Store) -> None:
        await make_session(store)
        seen = (await store.list_sessions(SessionStatus.PENDING)).items[0]
        await store.release_lease(await store.claim_session("s1", "w1", LEASE))
        lease = await store.claim_session("s1", "w2", LEASE, seen=seen)
        assert (lease.owner, lease.fence) == ("w2", 2)
        assert (await store.get_session("s1")).fence == 2

    async def test_a_waiting_session_seen_before_a_signal_is_claimed_after_it(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", "w1", LEASE)
        assert await store.wait_session(lease, clock_of(store).now() + 3600) is True
        seen = await store.get_session("s1")  # not due when seen
        await store.send_signal("s1", "t1", "approve", True)
        claimed = await store.claim_session("s1", "w2", LEASE, seen=seen)
        assert (claimed.fence, claimed.signal_seq) == (2, 1)

    async def test_a_record_of_another_session_is_not_taken_for_the_claimed_one(self, store: Store) -> None:
        await make_session(store, "s1")
        await make_session(store, "s2")
        other = await store.get_session("s2")
        await store.claim_session("s1", "w1", LEASE)
        with pytest.raises(ClaimRejectedError, match="w1"):
            await store.claim_session("s1", "w2", LEASE, seen=other)


class ClaimSeenDynamoDBContract:
    """The requests a claim of a listed session saves (DynamoDB stores)."""

    pytestmark = pytest.mark.anyio

    async def test_a_claim_of_a_listed_session_is_one_update(self, store: Store) -> None:
        await make_session(store)
        seen = (await store.list_sessions(SessionStatus.PENDING)).items[0]
        with count_requests(store) as counted:
            await store.claim_session("s1", "w1", LEASE, seen=seen)
        assert counted.ops == ["UpdateItem"], counted.ops

    async def test_a_resume_of_a_200_task_session_sends_two_requests_before_its_first_task_write(
        self, store: Store
    ) -> None:
        tasks = [NewTask(f"t{i}", "a", input={"i": i}, depends_on=(f"t{i - 1}",) if i else ()) for i in range(200)]
        await make_session(store, tasks=tasks)
        seen = (await store.list_sessions(SessionStatus.PENDING)).items[0]
        with count_requests(store) as counted:
            lease = await store.claim_session("s1", "w1", LEASE, seen=seen)
            snap = await store.load_session("s1")
            await store.write_tasks(lease, [start("t0")])
        assert len(snap.tasks) == 200
        assert counted.ops == ["UpdateItem", "Query", "UpdateItem"], counted.ops
