"""The Store contract suite against every backend (see orchestrator/testing/contract.py).

`store`, `store_url` and the backends come from tests/conftest.py. Single-process
behaviour runs on all six backends; contention, several processes and crashes only
on backends whose state is shared atomically (SQLite on a file, the moto server that
serves one request at a time, dynalite: in-process moto is not atomic under concurrent
requests and shares nothing between processes); lost responses and request counting on
the DynamoDB backends (they use botocore's event hooks). dynalite, an implementation
independent of moto, runs without transactions (it has none).
"""

from __future__ import annotations

import pytest

from orchestrator.store import Store

from orchestrator.testing.contract import StoreContract
from orchestrator.testing.contract_claims import ClaimSeenContract, ClaimSeenDynamoDBContract
from orchestrator.testing.contract_children import CacheContract, ChildContract, ChildDynamoDBContract
from orchestrator.testing.contract_concurrency import ConcurrencyContract
from orchestrator.testing.contract_dynamodb import DynamoDBContract
from orchestrator.testing.contract_flow import FlowContract
from orchestrator.testing.contract_listing import SessionListingContract, SessionListingDynamoDBContract
from orchestrator.testing.contract_projects import UserProjectContract, UserProjectDynamoDBContract


class TestStoreContract(StoreContract):
    """Every Store method and invariant a single process can observe."""

    # A reader polling a half-written 650-item session re-reads every item written so
    # far; on the one-request-at-a-time server that costs ~30 s and proves nothing the
    # in-process moto run (same code, requests on threads) does not. dynalite serves the
    # reader and the writer concurrently, which is the case this test is about.
    @pytest.mark.backends("sqlite", "moto", "moto-notx", "dynalite")
    async def test_a_large_session_appears_to_a_reader_all_at_once(self, store: Store) -> None:
        await super().test_a_large_session_appears_to_a_reader_all_at_once(store)

    @pytest.mark.backend_limit(
        "dynalite", "dynalite limit: no UpdateTimeToLive (its DescribeTimeToLive always answers DISABLED) and no "
        "point-in-time recovery (DescribeContinuousBackups is an UnknownOperationException) and no encryption "
        "with the KMS key, so check() rightly reports all three; tests/test_dynalite.py pins exactly those")
    async def test_initialize_is_idempotent_and_check_finds_no_problem(self, store: Store) -> None:
        await super().test_initialize_is_idempotent_and_check_finds_no_problem(store)


@pytest.mark.backends("sqlite", "moto-server", "moto-server-notx", "dynalite")
class TestConcurrencyContract(ConcurrencyContract):
    """Exclusive claims under contention (threads, processes), crash takeover, shared metrics."""


@pytest.mark.backends("moto", "moto-server", "moto-notx", "moto-server-notx", "dynalite")
class TestDynamoDBContract(DynamoDBContract):
    """Lost responses retried without double effect; Query not Scan; requests per task."""


class TestUserProjectContract(UserProjectContract):
    """The users' project history: upserts, listing, downloads counted once per id."""


@pytest.mark.backends("moto", "moto-server", "moto-notx", "moto-server-notx", "dynalite")
class TestUserProjectDynamoDBContract(UserProjectDynamoDBContract):
    """A lost download response counted once; listing a user's projects is one Query."""


class TestSessionListingContract(SessionListingContract):
    """Sessions by user and by pipeline type: newest first, each once across pages, bad filters refused."""


@pytest.mark.backends("moto", "moto-server", "moto-notx", "moto-server-notx", "dynalite")
class TestSessionListingDynamoDBContract(SessionListingDynamoDBContract):
    """A page by user or type is index Queries and one BatchGetItem, never a Scan."""


class TestFlowContract(FlowContract):
    """Fleet-wide resource limits (concurrency, rate, leases, priorities) and schedules."""
class TestClaimSeenContract(ClaimSeenContract):
    """A claim decided on a listed or read session: never a wrong claim or refusal when it is stale."""


@pytest.mark.backends("moto", "moto-server", "moto-notx", "moto-server-notx", "dynalite")
class TestClaimSeenDynamoDBContract(ClaimSeenDynamoDBContract):
    """A claim of a listed session is one UpdateItem; a worker's resume, a claim and one Query."""


class TestChildContract(ChildContract):
    """Many sessions at once for a map's children: whole, PENDING, never overwriting one that exists."""


class TestCacheContract(CacheContract):
    """Cached outputs: read until expiry and never after, replaced by a put."""


@pytest.mark.backends("moto", "moto-server", "moto-notx", "moto-server-notx", "dynalite")
class TestChildDynamoDBContract(ChildDynamoDBContract):
    """A map's children are created and read in batches, not one request each."""
