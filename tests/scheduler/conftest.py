"""The `backend` fixture: a fresh store of each kind that several processes can share.

- "sqlite": a real file in `tmp_path`.
- "moto-server": DynamoDB on the session-wide moto server of `tests/conftest.py`
  (one request at a time, so conditional writes are atomic), a fresh table per test.

`Backend.open(clock=...)` opens more instances of the same store (another worker, a
FakeClock); every instance is closed at teardown.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.clock import Clock
from orchestrator.store import Store, open_store
from orchestrator.testing.moto_server import MotoServer

SCHEDULER_BACKENDS: tuple[str, ...] = ("sqlite", "moto-server")


@dataclass(slots=True)
class Backend:
    """One test's store: its URL (for child processes) and an opened instance."""

    kind: str
    url: str
    store: Store
    _extra: list[Store] = field(default_factory=list)

    async def open(self, clock: Clock | None = None) -> Store:
        """Another instance of the same store (closed at teardown)."""
        opened = open_store(self.url, clock=clock)
        await opened.initialize()
        self._extra.append(opened)
        return opened


@pytest.fixture(params=SCHEDULER_BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    kind: str = request.param
    server: MotoServer | None = None
    if kind == "sqlite":
        url = f"sqlite://{tmp_path / 'state.db'}"
    else:
        server = request.getfixturevalue("_moto_server")
        url = f"dynamodb://t-{uuid.uuid4().hex[:12]}?region=us-east-1&endpoint={server.endpoint}"
    store = open_store(url)
    await store.initialize()
    b = Backend(kind, url, store)
    try:
        yield b
    finally:
        for extra in b._extra:
            await extra.aclose()
        await store.aclose()
        if server is not None:
            server.reset()
