"""The durable state layer: the `Store` protocol, its records, and its two backends.

`open_store()` picks a backend from a URL or `ORCHESTRATOR_STORE`. The DynamoDB
backend (and so `pynamodb`) is imported only when a `dynamodb://` URL is opened.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.clock import Clock, SystemClock
from orchestrator.codec import Codec, default_codec
from orchestrator.store.config import DynamoDBConfig, SQLiteConfig, StoreConfig, default_sqlite_path
from orchestrator.store.protocol import (
    FlowStore,
    HistoryStore,
    ProjectStore,
    SessionStore,
    Store,
    StoreLifecycle,
    WriteResult,
)
from orchestrator.store.records import *  # noqa: F403
from orchestrator.store.records import __all__ as _records_all

__all__ = [  # noqa: PLE0604 - the records' names, spliced from their own __all__
    "DynamoDBConfig",
    "FlowStore",
    "HistoryStore",
    "ProjectStore",
    "SQLiteConfig",
    "SessionStore",
    "Store",
    "StoreConfig",
    "StoreLifecycle",
    "WriteResult",
    "default_sqlite_path",
    "open_store",
    *_records_all,
]


def open_store(
    config: StoreConfig | str | None = None,
    *,
    clock: Clock | None = None,
    codec: Codec | None = None,
    env: Mapping[str, str] | None = None,
) -> Store:
    """A store for a config or URL; with neither, from the environment (`ORCHESTRATOR_STORE`).

    The store is not yet connected: `await store.initialize()` creates the file or table
    if missing. Use it as `async with` or call `await store.aclose()`.
    """
    if config is None:
        config = StoreConfig.from_env(env)
    elif isinstance(config, str):
        config = StoreConfig.from_url(config, env=env)
    clock = clock or SystemClock()
    codec = codec or default_codec
    if config.dynamodb is not None:
        from orchestrator.store.dynamodb import DynamoDBStore

        return DynamoDBStore(config.dynamodb, clock=clock, codec=codec)
    assert config.sqlite is not None
    from orchestrator.store.sqlite import SQLiteStore

    return SQLiteStore(config.sqlite, clock=clock, codec=codec)
