"""The contract suite on the DynamoDB backends only: lost responses retried without double
effect, and the requests each operation makes (Query not Scan, batches, one UpdateItem). How
the contract files are split: tests/conftest.py."""

from __future__ import annotations

import pytest

from orchestrator.testing.contract_children import ChildDynamoDBContract
from orchestrator.testing.contract_claims import ClaimSeenDynamoDBContract
from orchestrator.testing.contract_dynamodb import DynamoDBContract
from orchestrator.testing.contract_listing import SessionListingDynamoDBContract
from orchestrator.testing.contract_projects import UserProjectDynamoDBContract

pytestmark = pytest.mark.backends("moto", "moto-server", "moto-notx", "moto-server-notx", "dynalite")


class TestDynamoDBContract(DynamoDBContract):
    """Lost responses retried without double effect; Query not Scan; requests per task."""


class TestChildDynamoDBContract(ChildDynamoDBContract):
    """A map's children are created and read in batches, not one request each."""


class TestSessionListingDynamoDBContract(SessionListingDynamoDBContract):
    """A page by user or type is index Queries and one BatchGetItem, never a Scan."""


class TestUserProjectDynamoDBContract(UserProjectDynamoDBContract):
    """A lost download response counted once; listing a user's projects is one Query."""


class TestClaimSeenDynamoDBContract(ClaimSeenDynamoDBContract):
    """A claim of a listed session is one UpdateItem; a worker's resume, a claim and one Query."""
