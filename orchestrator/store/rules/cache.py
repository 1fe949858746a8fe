"""Cached outputs: the key of a task's output, and when an entry may be read.

One digest over the agent's name, the policy's version and the key material (the task's
input and dependency outputs, or what the policy's `key` makes of the input), so two
agents or two versions never share an entry. An entry is read only before its expiry:
TTL deletion is late (DynamoDB: often days), so every read checks the time itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from orchestrator.agents.cache import CachePolicy
from orchestrator.errors import ValidationError
from orchestrator.store.records.cache import CacheEntry
from orchestrator.store.rules.limits import INLINE_OUTPUT_BYTES

__all__ = ["cache_key", "cacheable", "new_entry", "readable"]


def cache_key(agent: str, policy: CachePolicy, input: Any, deps: Mapping[str, Any]) -> str:
    """`<agent-digest>` of (agent, version, key material); deterministic across processes."""
    material: Any = policy.key(input) if policy.key is not None else {"input": input, "deps": dict(deps)}
    try:
        text = json.dumps([agent, policy.version, material], sort_keys=True, separators=(",", ":"), default=repr)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"cache key of agent {agent!r} could not be made from {material!r}: {exc}; "
                              f"return JSON-able values from CachePolicy.key") from exc
    return hashlib.sha256(text.encode()).hexdigest()


def new_entry(key: str, agent: str, output: Any, policy: CachePolicy, now: float, *,
              session_id: str, task_id: str) -> CacheEntry:
    """The entry a genuine completion writes: it expires `policy.ttl` from now."""
    return CacheEntry(key, agent, output, now, now + policy.ttl_seconds, session_id, task_id)


def readable(expires_at: float, now: float) -> bool:
    """An entry is read only strictly before its expiry, whether or not TTL deleted it yet."""
    return now < expires_at


def cacheable(encoded_output: str) -> bool:
    """Only an output that fits one item inline is cached (a larger one is simply not reused)."""
    return len(encoded_output.encode()) <= INLINE_OUTPUT_BYTES
