"""Child sessions and cached outputs (`ChildStore`, `CacheStore`) on every backend.

`ChildContract` needs the same `store` fixture as `StoreContract` (a FakeClock store):
creating many sessions at once leaves an existing one exactly as it is, repeats are
no-ops, each created session is whole; reading many returns those that exist.
`CacheContract`: an entry is read back until just before its expiry and never after,
whether or not TTL removed it; a put replaces. `ChildDynamoDBContract` pins the requests
a batch costs on DynamoDB (batched, never one request per child for reads).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from orchestrator.errors import PipelineDefinitionError
from orchestrator.store import NewSession, SessionStatus, Store
from orchestrator.store.protocol import CacheStore, ChildStore
from orchestrator.store.records import CacheEntry
from orchestrator.testing.contract_base import LEASE, _tasks, clock_of
from orchestrator.testing.contract_dynamodb import count_requests

__all__ = ["CacheContract", "ChildContract", "ChildDynamoDBContract"]


def _children(store: Store) -> ChildStore:
    assert isinstance(store, ChildStore), f"{store!r} does not implement ChildStore"
    return store


def _cache(store: Store) -> CacheStore:
    assert isinstance(store, CacheStore), f"{store!r} does not implement CacheStore"
    return store


def _batch(ids: list[str], **meta: Any) -> list[tuple[NewSession, Any]]:
    return [(NewSession(sid, "child", input={"i": i}, metadata=meta), _tasks("a", "b", chain=True))
            for i, sid in enumerate(ids)]


class ChildContract:
    """`create_sessions` / `get_sessions`; needs a `store` fixture opened with a FakeClock."""

    pytestmark = pytest.mark.anyio

    async def test_create_sessions_creates_each_session_whole_and_pending(self, store: Store) -> None:
        ids = [f"p.t.{i}" for i in range(30)]
        created = await _children(store).create_sessions(_batch(ids))
        assert sorted(created) == sorted(ids)
        for sid in ("p.t.0", "p.t.29"):
            snap = await store.load_session(sid)
            assert snap.session.status is SessionStatus.PENDING
            assert sorted(snap.tasks) == ["a", "b"] and len(snap.edges) == 1

    async def test_creating_again_leaves_existing_sessions_exactly_as_they_are(self, store: Store) -> None:
        await _children(store).create_sessions(_batch(["p.t.0", "p.t.1"]))
        lease = await store.claim_session("p.t.0", "w1", LEASE)
        await store.finish_session(lease, SessionStatus.COMPLETED)
        clock_of(store).advance(5)
        created = await _children(store).create_sessions(_batch(["p.t.0", "p.t.1", "p.t.2"], again=True))
        assert created == ["p.t.2"]
        first = await store.get_session("p.t.0")
        assert first.status is SessionStatus.COMPLETED and dict(first.metadata) == {}
        assert dict((await store.get_session("p.t.2")).metadata) == {"again": True}

    async def test_get_sessions_returns_those_that_exist_by_id(self, store: Store) -> None:
        await _children(store).create_sessions(_batch([f"q.{i}" for i in range(120)]))
        found = await _children(store).get_sessions([f"q.{i}" for i in range(0, 130, 3)])
        assert sorted(found) == sorted(f"q.{i}" for i in range(0, 120, 3))
        assert found["q.3"].input == {"i": 3}

    async def test_nothing_is_written_when_one_session_of_a_batch_is_invalid(self, store: Store) -> None:
        bad = _batch(["r.0"]) + [(NewSession("r.1", "child"), _tasks("a") + _tasks("a"))]
        with pytest.raises(PipelineDefinitionError, match=r"r\.1"):
            await _children(store).create_sessions(bad)
        assert await _children(store).get_sessions(["r.0", "r.1"]) == {}


class CacheContract:
    """`get_cached` / `put_cached`; needs a `store` fixture opened with a FakeClock."""

    pytestmark = pytest.mark.anyio

    async def test_an_entry_is_read_back_until_its_expiry_and_never_after(self, store: Store) -> None:
        now = clock_of(store).now()
        entry = CacheEntry("k1", "summarize", {"out": [1, 2]}, now, now + 60, "s1", "t1")
        await _cache(store).put_cached(entry)
        clock_of(store).advance(59.5)
        assert await _cache(store).get_cached("k1") == entry
        clock_of(store).advance(0.5)
        assert await _cache(store).get_cached("k1") is None

    async def test_a_purge_keeps_unexpired_entries(self, store: Store) -> None:
        now = clock_of(store).now()
        await _cache(store).put_cached(CacheEntry("k3", "a", 1, now, now + 100))
        await _cache(store).put_cached(CacheEntry("k4", "a", 2, now, now + 10))
        clock_of(store).advance(50)
        await store.purge(ended_before=now)
        assert await _cache(store).get_cached("k4") is None
        found = await _cache(store).get_cached("k3")
        assert found is not None and found.output == 1

    async def test_an_absent_key_reads_none_and_a_put_replaces(self, store: Store) -> None:
        now = clock_of(store).now()
        assert await _cache(store).get_cached("nope") is None
        await _cache(store).put_cached(CacheEntry("k2", "a", "old", now, now + 10))
        await _cache(store).put_cached(CacheEntry("k2", "a", "new", now, now + 100))
        found = await _cache(store).get_cached("k2")
        assert found is not None and found.output == "new" and found.expires_at == now + 100


class ChildDynamoDBContract:
    """The requests of a batch on DynamoDB; needs a DynamoDB `store`."""

    pytestmark = pytest.mark.anyio

    async def test_reading_250_children_is_three_batch_reads(self, store: Store) -> None:
        ids = [f"c.{i}" for i in range(250)]
        # Written without transactions: moto copies its tables for each one (minutes under
        # load for 10 of them), and this test is about the reads.
        from orchestrator.store.dynamodb import DynamoDBStore

        assert isinstance(store, DynamoDBStore)
        async with DynamoDBStore(replace(store.config, transactions=False), clock=store.clock,
                                 codec=store.codec) as writer:
            await writer.create_sessions(_batch(ids))
        with count_requests(store) as counted:
            found = await _children(store).get_sessions(ids)
        assert len(found) == 250
        assert Counter(counted.ops) == Counter({"BatchGetItem": 3}), counted.ops

    async def test_creating_100_children_costs_far_fewer_requests_than_children(self, store: Store) -> None:
        ids = [f"d.{i}" for i in range(100)]
        with count_requests(store) as counted:
            await _children(store).create_sessions(_batch(ids))
        # With transactions: 100 items per transaction (a child is META + 2 tasks + 1 edge).
        # Without: bodies by BatchWriteItem (25 per request) and one conditional PutItem per META.
        config: Any = getattr(store, "config", None)
        limit = 1 + 100 // 25 + 1 if getattr(config, "transactions", True) and getattr(store, "transactions", True) \
            else 1 + 300 // 25 + 100
        assert len(counted.ops) <= limit, Counter(counted.ops)
