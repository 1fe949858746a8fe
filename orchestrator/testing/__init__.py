"""Test your own pipelines (and your own Store backends) the way the SDK tests itself.

- `FakeClock`: time you move by hand, for leases, heartbeats and backoff.
- `temporary_store()`: a throwaway SQLite store in a temp directory.
- `StoreContract`: the contract suite every Store backend must pass; subclass it in
  your tests with a `store_factory` fixture (see `orchestrator.testing.contract`).
"""

from __future__ import annotations

from orchestrator.testing.clock import FakeClock

__all__ = ["FakeClock"]
