"""The contract suite, sessions: their lifecycle, claims decided on a listed or read session,
and events, metrics, pipelines and retention. How the contract files are split: tests/conftest.py."""

from __future__ import annotations

import pytest

from orchestrator.store import Store
from orchestrator.testing.contract import HistoryContract, SessionContract
from orchestrator.testing.contract_claims import ClaimSeenContract


class TestSessionContract(SessionContract):
    """Sessions: creation, claims, leases, waits, signals, cancel, redrive, needs-human, listing."""

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


class TestHistoryContract(HistoryContract):
    """Events, metrics, pipelines and retention."""


class TestClaimSeenContract(ClaimSeenContract):
    """A claim decided on a listed or read session: never a wrong claim or refusal when it is stale."""
