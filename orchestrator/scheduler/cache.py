"""Cached outputs around one attempt: look the key up before the agent runs, store after it returns.

A hit completes the task with the stored output without invoking the agent, and is
recorded (an event, a `cache_hit` metric). Only an output the agent itself returned
is stored, never one read from the cache, so an entry's expiry is never extended by
its own hits. The cache is an optimisation: a store error on it is logged and the
agent runs (or its output is simply not stored).
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.agents.spec import AgentSpec
from orchestrator.errors import OrchestratorError
from orchestrator.scheduler.ports import SessionPort
from orchestrator.store.protocol import CacheStore
from orchestrator.store.rules.cache import cache_key, new_entry

__all__ = ["CacheLookup", "look_up", "remember"]

_log = logging.getLogger("orchestrator.cache")


class CacheLookup:
    """What the lookup found: `hit` with its `output`, and the `key` to store a fresh output under."""

    __slots__ = ("hit", "key", "output")

    def __init__(self, key: str | None, hit: bool = False, output: Any = None) -> None:
        self.key, self.hit, self.output = key, hit, output


async def look_up(port: SessionPort, spec: AgentSpec, task_id: str, input: Any, deps: Any) -> CacheLookup:
    store = port.child_store
    if spec.cache is None or not port.use_cache or not isinstance(store, CacheStore):
        return CacheLookup(None)
    key = cache_key(spec.name, spec.cache, input, deps)
    try:
        entry = await store.get_cached(key)
    except OrchestratorError as exc:
        _log.warning("cache lookup for task %s failed (the agent runs): %s", task_id, exc,
                     extra={"session_id": port.session_id, "task_id": task_id})
        return CacheLookup(key)
    if entry is None:
        return CacheLookup(key)
    return CacheLookup(key, True, entry.output)


async def remember(port: SessionPort, spec: AgentSpec, lookup: CacheLookup, task_id: str, output: Any) -> None:
    store = port.child_store
    if lookup.key is None or lookup.hit or spec.cache is None or not isinstance(store, CacheStore):
        return
    entry = new_entry(lookup.key, spec.name, output, spec.cache, port.clock.now(), session_id=port.session_id,
                      task_id=task_id)
    try:
        await store.put_cached(entry)
    except OrchestratorError as exc:
        _log.warning("storing the output of task %s in the cache failed: %s", task_id, exc,
                     extra={"session_id": port.session_id, "task_id": task_id})
