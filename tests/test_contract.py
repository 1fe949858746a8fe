"""The Store contract suite against every backend (see orchestrator/testing/contract.py).

`store`, `store_url` and the backends come from tests/conftest.py: single-process
behaviour runs on all five backends; contention, several processes and crashes on the
backends whose state is shared atomically (SQLite, the one-request-at-a-time moto
server); lost responses and request counting on the DynamoDB backends.
"""

from __future__ import annotations

import pytest

from orchestrator.testing.contract import StoreContract


class TestStoreContract(StoreContract):
    """Every Store method and invariant a single process can observe."""
