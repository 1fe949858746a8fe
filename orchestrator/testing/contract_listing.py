"""Listing sessions by user and by pipeline type (`Store.find_sessions`) on every backend.

`SessionListingContract` needs the same `store` fixture as `StoreContract`; it pins the
decisions of `orchestrator.store.rules.listing`: newest first (ties by session id,
descending), every matching session exactly once across pages and nothing else, short
pages only ended by `cursor=None`, bad filters and foreign cursors refused.
`SessionListingDynamoDBContract` adds, for DynamoDB stores, the requests a page costs:
Queries of the user or type index and one BatchGetItem, never a Scan.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from orchestrator.errors import ValidationError
from orchestrator.store import SessionRecord, SessionStatus, Store
from orchestrator.testing.contract_base import LEASE, _tasks, assert_no_session, clock_of, make_session
from orchestrator.testing.contract_dynamodb import count_requests

__all__ = ["SessionListingContract", "SessionListingDynamoDBContract"]

#: (session id, user, pipeline type, seconds after the previous one); two pairs share a creation time.
_SESSIONS = [
    ("a01", "u-1", "deploy", 1), ("a02", "u-2", "deploy", 1), ("a03", "u-1", "build", 0),
    ("a04", "u-1", "deploy", 1), ("a05", None, "deploy", 1), ("a06", "u-2", "build", 1),
    ("a07", "u-1", "deploy", 0), ("a08", "u-1", None, 1), ("a09", "u-2", "deploy", 1),
    ("a10", "u-1", "deploy", 1), ("a11", "u-1", "build", 1), ("a12", None, "deploy", 0),
]


async def _populate(store: Store) -> list[SessionRecord]:
    made = []
    for sid, user, kind, gap in _SESSIONS:
        clock_of(store).advance(gap)
        made.append(await make_session(store, sid, tasks=_tasks("t1"), user_id=user, pipeline_type=kind))
    return made


def _newest_first(records: list[SessionRecord]) -> list[str]:
    return [r.session_id for r in sorted(records, key=lambda r: (r.created_at, r.session_id), reverse=True)]


async def _all_pages(store: Store, limit: int, **flt: Any) -> tuple[list[str], int]:
    """Every page of a listing, in order; and how many pages it took."""
    seen: list[str] = []
    cursor: str | None = None
    for pages in range(1, 100):
        page = await store.find_sessions(limit=limit, cursor=cursor, **flt)
        assert len(page.items) <= limit
        seen += [s.session_id for s in page.items]
        cursor = page.cursor
        if cursor is None:
            return seen, pages
    raise AssertionError("the listing never ended")


async def _fail(store: Store, sid: str) -> None:
    lease = await store.claim_session(sid, "w1", LEASE)
    await store.finish_session(lease, SessionStatus.FAILED, "boom")


class SessionListingContract:
    """`find_sessions` by user, by type, both, with a status; needs a `store` fixture."""

    pytestmark = pytest.mark.anyio

    async def test_a_users_sessions_page_newest_first_each_once(self, store: Store) -> None:
        made = await _populate(store)
        seen, pages = await _all_pages(store, 2, user_id="u-1")
        assert seen == _newest_first([r for r in made if r.user_id == "u-1"])
        assert pages >= 4

    async def test_a_pipeline_types_sessions_page_newest_first_each_once(self, store: Store) -> None:
        made = await _populate(store)
        seen, _ = await _all_pages(store, 3, pipeline_type="deploy")
        assert seen == _newest_first([r for r in made if r.pipeline_type == "deploy"])

    async def test_user_and_type_together_list_sessions_matching_both(self, store: Store) -> None:
        made = await _populate(store)
        seen, _ = await _all_pages(store, 2, user_id="u-1", pipeline_type="deploy")
        assert seen == _newest_first([r for r in made if (r.user_id, r.pipeline_type) == ("u-1", "deploy")])

    async def test_a_status_narrows_the_listing_and_pages_may_be_short(self, store: Store) -> None:
        made = await _populate(store)
        for sid in ("a01", "a07", "a11"):
            await _fail(store, sid)
        seen, _ = await _all_pages(store, 2, user_id="u-1", status=SessionStatus.FAILED)
        assert seen == ["a11", "a07", "a01"]
        seen, _ = await _all_pages(store, 2, pipeline_type="deploy", status=SessionStatus.PENDING)
        assert seen == _newest_first([r for r in made if r.pipeline_type == "deploy" and r.session_id
                                      not in ("a01", "a07")])

    async def test_a_session_that_changes_status_while_paging_is_listed_once(self, store: Store) -> None:
        made = await _populate(store)
        first = await store.find_sessions(user_id="u-1", limit=3)
        for sid in ("a04", "a10"):  # one on the page read, one on a later page
            await _fail(store, sid)
        seen = [s.session_id for s in first.items]
        cursor = first.cursor
        while cursor is not None:
            page = await store.find_sessions(user_id="u-1", limit=3, cursor=cursor)
            seen += [s.session_id for s in page.items]
            cursor = page.cursor
        assert seen == _newest_first([r for r in made if r.user_id == "u-1"])

    async def test_an_unknown_user_or_type_is_an_empty_listing(self, store: Store) -> None:
        await _populate(store)
        for flt in ({"user_id": "nobody"}, {"pipeline_type": "nothing"}):
            page = await store.find_sessions(**flt)  # type: ignore[arg-type]
            assert (page.items, page.cursor) == ((), None)

    async def test_expired_sessions_are_not_listed(self, store: Store) -> None:
        await make_session(store, "old", user_id="u-1", pipeline_type="deploy", ttl_seconds=60)
        await _fail(store, "old")
        await make_session(store, "new", user_id="u-1", pipeline_type="deploy")
        clock_of(store).advance(61)
        assert [s.session_id for s in (await store.find_sessions(user_id="u-1")).items] == ["new"]
        assert [s.session_id for s in (await store.find_sessions(pipeline_type="deploy")).items] == ["new"]

    async def test_a_listing_without_user_or_type_is_refused(self, store: Store) -> None:
        with pytest.raises(ValidationError, match="list_sessions"):
            await store.find_sessions(status=SessionStatus.FAILED)

    @pytest.mark.parametrize("flt", [
        {"user_id": ""}, {"user_id": "u" * 257}, {"pipeline_type": ""}, {"user_id": "u-1", "status": "DONE"},
        {"user_id": "u-1", "limit": 0}, {"user_id": "u-1", "limit": 1001},
    ])
    async def test_a_bad_filter_value_is_refused(self, store: Store, flt: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            await store.find_sessions(**flt)

    async def test_a_cursor_of_another_filter_or_not_a_cursor_is_refused(self, store: Store) -> None:
        await _populate(store)
        cursor = (await store.find_sessions(user_id="u-1", limit=1)).cursor
        assert cursor is not None
        with pytest.raises(ValidationError, match="another listing"):
            await store.find_sessions(user_id="u-2", limit=1, cursor=cursor)
        with pytest.raises(ValidationError, match="another listing"):
            await store.find_sessions(user_id="u-1", status=SessionStatus.PENDING, limit=1, cursor=cursor)
        with pytest.raises(ValidationError, match="cursor"):
            await store.find_sessions(user_id="u-1", cursor="not-a-cursor")

    async def test_a_user_id_or_type_too_long_for_an_index_key_is_refused_before_any_write(
        self, store: Store
    ) -> None:
        with pytest.raises(ValidationError, match="256"):
            await make_session(store, user_id="u" * 257)
        with pytest.raises(ValidationError, match="256"):
            await make_session(store, pipeline_type="t" * 257)
        await assert_no_session(store)


class SessionListingDynamoDBContract:
    """The requests of a page: index Queries and one BatchGetItem, never a Scan; needs a DynamoDB `store`."""

    pytestmark = pytest.mark.anyio

    async def test_a_page_by_user_is_one_query_and_one_batch_read(self, store: Store) -> None:
        await _populate(store)
        with count_requests(store) as counted:
            page = await store.find_sessions(user_id="u-1", status=SessionStatus.PENDING, limit=50)
        assert len(page.items) == 7
        assert Counter(counted.ops) == Counter({"Query": 1, "BatchGetItem": 1}), counted.ops

    async def test_index_keys_are_written_at_creation_and_never_by_later_session_writes(self, store: Store) -> None:
        sent: list[str] = []

        def record(params: dict[str, Any], **_: Any) -> None:
            sent.append(str(params.get("body") or b""))

        events: Any = getattr(store, "client_events", None)
        events.register("before-call.dynamodb", record, unique_id="listing-keys")
        try:
            await make_session(store, user_id="u-1", pipeline_type="deploy")
            created = len(sent)
            lease = await store.claim_session("s1", "w1", LEASE)
            lease, _ = await store.renew_lease(lease, LEASE)
            await store.finish_session(lease, SessionStatus.COMPLETED)
        finally:
            events.unregister("before-call.dynamodb", record, unique_id="listing-keys")
        assert any("GSI3PK" in body and "GSI4PK" in body for body in sent[:created])
        assert len(sent) > created and not any("GSI3" in body or "GSI4" in body for body in sent[created:])

    async def test_a_page_by_type_queries_each_shard_once_and_never_scans(self, store: Store) -> None:
        await _populate(store)
        config: Any = getattr(store, "config", None)  # DynamoDBConfig: not part of the protocol
        shards = config.status_shards
        with count_requests(store) as counted:
            page = await store.find_sessions(pipeline_type="deploy", limit=50)
        assert len(page.items) == 8
        assert Counter(counted.ops) == Counter({"Query": shards, "BatchGetItem": 1}), counted.ops
