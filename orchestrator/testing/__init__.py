"""Test your own pipelines (and your own Store backends) the way the SDK tests itself.

- `FakeClock`: time you move by hand, for leases, heartbeats and backoff.
- `FakeAgentContext`: run one agent in a unit test; it records progress, logs,
  checkpoints, added tasks and child sessions, answers `wait_for_signal` from a dict
  and `map`/`run_child` in process.
- `temporary_store()`: a throwaway SQLite store in a temp directory.
- `StoreContract` (in `orchestrator.testing.contract`, which imports pytest): the
  contract suite every Store backend must pass; subclass it in your tests with a
  `store` fixture. `ConcurrencyContract` (`.contract_concurrency`) and
  `DynamoDBContract` (`.contract_dynamodb`) cover contention and lost responses;
  `UserProjectContract` (`.contract_projects`) the users' project history,
  `SessionListingContract` (`.contract_listing`) sessions by user and pipeline type,
  `FlowContract` (`.contract_flow`) resource limits and schedules (`FlowStore`).
  `ChildContract` and `CacheContract` (`.contract_children`) a map's children and
  cached outputs; `ResumeContract` (`.contract_resume`) `orchestrator.resume()` on a
  store, which reads before it claims.
- `moto_server()` (in `orchestrator.testing.moto_server`): a local DynamoDB double
  that serves one request at a time.
- `FaultProxy` (in `orchestrator.testing.fault_proxy`): an HTTP proxy on 127.0.0.1 in
  front of it that injects throttling, 5xx (JSON, HTML, empty), lost responses and
  partitions at seeded rates, and counts what it did.
- `dynalite_server()` (in `orchestrator.testing.dynalite`): dynalite, an independent
  DynamoDB implementation on Node.js (concurrent, real size limits, no transactions).

This package imports without pytest or moto installed; the contract modules need pytest.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from orchestrator.clock import Clock
from orchestrator.codec import Codec
from orchestrator.store import SQLiteConfig, Store, StoreConfig, open_store
from orchestrator.testing.agent_context import FakeAgentContext
from orchestrator.testing.clock import FakeClock

__all__ = ["FakeAgentContext", "FakeClock", "temporary_store"]


@contextlib.asynccontextmanager
async def temporary_store(*, clock: Clock | None = None, codec: Codec | None = None) -> AsyncIterator[Store]:
    """An initialized SQLite store in a fresh temporary directory, deleted afterwards.

    Pass `clock=FakeClock()` to drive leases and backoff by hand.
    """
    with tempfile.TemporaryDirectory(prefix="orchestrator-") as tmp:
        config = StoreConfig(sqlite=SQLiteConfig(path=Path(tmp) / "state.db"))
        store = open_store(config, clock=clock, codec=codec)
        try:
            await store.initialize()
            yield store
        finally:
            await store.aclose()
