"""`CachePolicy`: reuse an agent's output across sessions, keyed by its input, for a while.

    @agent(cache=CachePolicy(ttl="7d"))
    async def summarize(ctx): ...

A task whose key has an unexpired stored output completes with it without running the
agent (recorded as a cache hit). The key is the agent's name, the policy's `version`
and, by default, the task's input and its dependencies' outputs; `key=` replaces the
last two with `key(input)`. Bump `version` when the agent's behaviour changes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CachePolicy"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def _seconds(ttl: float | str) -> float:
    if isinstance(ttl, str):
        match = _DURATION.match(ttl)
        if match is None:
            raise ValueError(f"CachePolicy ttl={ttl!r} is not a duration; use seconds or e.g. '90s', '30m', '7d'")
        return float(match.group(1)) * _UNITS[match.group(2)]
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise ValueError(f"CachePolicy ttl={ttl!r} is not a duration; use seconds or e.g. '90s', '30m', '7d'")
    return float(ttl)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How long an agent's outputs are reused (`ttl`, seconds or "7d"), and what keys them."""

    ttl: float | str = "7d"
    key: Callable[[Any], Any] | None = None
    version: str = "1"

    def __post_init__(self) -> None:
        seconds = _seconds(self.ttl)
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"CachePolicy ttl={self.ttl!r} must be a duration > 0")
        if not self.version or "#" in self.version:
            raise ValueError(f"CachePolicy version={self.version!r} must be non-empty, without '#'")

    @property
    def ttl_seconds(self) -> float:
        return _seconds(self.ttl)
