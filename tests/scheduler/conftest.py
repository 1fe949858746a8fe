"""The `backend` fixture: a fresh store of each kind that several processes can share.

- "sqlite": a real file in `tmp_path`.
- "moto-server": DynamoDB on the session-wide moto server of `tests/conftest.py`
  (one request at a time, so conditional writes are atomic), a fresh table per test.
- "dynalite": DynamoDB on the session-wide dynalite server of `tests/conftest.py` (an
  independent implementation serving requests concurrently), `transactions=0` (it has
  none), a fresh table per test, deleted afterwards.

`Backend.open(clock=...)` opens more instances of the same store (another worker, a
FakeClock); every instance is closed at teardown.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.clock import Clock
from orchestrator.store import Store, open_store
from orchestrator.testing.moto_server import MotoServer

SCHEDULER_BACKENDS: tuple[str, ...] = ("sqlite", "moto-server", "dynalite")


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
    drop: Callable[[str], None] | None = None
    table = f"t-{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        url = f"sqlite://{tmp_path / 'state.db'}"
    elif kind == "dynalite":
        drop = request.getfixturevalue("drop_dynalite_table")
        url = f"dynamodb://{table}?region=us-east-1&endpoint={request.getfixturevalue('dynalite_endpoint')}" \
              "&transactions=0"
    else:
        server = request.getfixturevalue("_moto_server")
        url = f"dynamodb://{table}?region=us-east-1&endpoint={server.endpoint}"
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
        if drop is not None:
            drop(table)
