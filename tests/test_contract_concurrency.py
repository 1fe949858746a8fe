"""The contract suite, many at once: exclusive claims under contention (threads, processes, a
killed owner), fleet-wide resource limits and schedules, and a map's many child sessions. How
the contract files are split: tests/conftest.py."""

from __future__ import annotations

import pytest

from orchestrator.testing.contract_children import ChildContract
from orchestrator.testing.contract_concurrency import ConcurrencyContract
from orchestrator.testing.contract_flow import FlowContract


@pytest.mark.backends("sqlite", "moto-server", "moto-server-notx", "dynalite")
class TestConcurrencyContract(ConcurrencyContract):
    """Exclusive claims under contention (threads, processes), crash takeover, shared metrics."""


class TestFlowContract(FlowContract):
    """Fleet-wide resource limits (concurrency, rate, leases, priorities) and schedules."""


class TestChildContract(ChildContract):
    """Many sessions at once for a map's children: whole, PENDING, never overwriting one that exists."""
