"""A direct `resume()` reads before it claims (see orchestrator/testing/contract_resume.py), on every backend.

`store` and the backends come from tests/conftest.py: SQLite, moto in-process and the
moto server (with and without transactions), dynalite. The request counts run on the
DynamoDB backends (botocore's event hooks).
"""

from __future__ import annotations

import pytest

from orchestrator.testing.contract_resume import ResumeContract, ResumeDynamoDBContract


class TestResumeContract(ResumeContract):
    """What lands between a resume's read and its claim is neither lost nor done twice."""


@pytest.mark.backends("moto", "moto-server", "moto-notx", "moto-server-notx", "dynalite")
class TestResumeDynamoDBContract(ResumeDynamoDBContract):
    """A direct resume of a 200-task session: one Query and the claim before its first task write."""
