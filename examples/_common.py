"""Helpers shared by the examples: which store to use, and where to put produced files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from orchestrator.store import Store, open_store

__all__ = ["REPO_ROOT", "DEMO_DIR", "default_store_url", "open_initialized", "utc_day"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / ".demo"


def default_store_url(env: Mapping[str, str] | None = None) -> str:
    """`ORCHESTRATOR_STORE` if set, else a SQLite file under `<repo>/.demo/`."""
    env = os.environ if env is None else env
    return env.get("ORCHESTRATOR_STORE") or f"sqlite://{DEMO_DIR / 'state.db'}"


async def open_initialized(url: str) -> Store:
    """Open the store at `url` and create its file or table if missing."""
    store = open_store(url)
    await store.initialize()
    return store


def utc_day(ts: float) -> str:
    """The UTC day (`YYYY-MM-DD`) metrics of time `ts` are filed under."""
    from orchestrator.metrics import day_of

    return day_of(ts)[0]
