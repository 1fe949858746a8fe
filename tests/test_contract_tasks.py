"""The contract suite, tasks: fenced task writes, the lease deadline of every call, and cached
outputs. How the contract files are split: tests/conftest.py."""

from __future__ import annotations

from orchestrator.testing.contract import DeadlineContract, TaskContract
from orchestrator.testing.contract_children import CacheContract


class TestTaskContract(TaskContract):
    """Fenced task writes, tasks added at run time, and bad input refused before anything is written."""


class TestDeadlineContract(DeadlineContract):
    """No store call is made past its context's deadline."""


class TestCacheContract(CacheContract):
    """Cached outputs: read until expiry and never after, replaced by a put."""
