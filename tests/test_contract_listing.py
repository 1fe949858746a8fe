"""The contract suite, what operators read and do: sessions listed by user and pipeline type,
the users' project history, and the event each operation records itself. How the contract
files are split: tests/conftest.py."""

from __future__ import annotations

from orchestrator.testing.contract import OperatorEventsContract
from orchestrator.testing.contract_listing import SessionListingContract
from orchestrator.testing.contract_projects import UserProjectContract


class TestSessionListingContract(SessionListingContract):
    """Sessions by user and by pipeline type: newest first, each once across pages, bad filters refused."""


class TestUserProjectContract(UserProjectContract):
    """The users' project history: upserts, listing, downloads counted once per id."""


class TestOperatorEventsContract(OperatorEventsContract):
    """Each operation a person makes records its own event, and none when it is refused."""
