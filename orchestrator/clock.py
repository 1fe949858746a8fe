"""Time, injected: leases, heartbeats, backoff and TTLs all read a `Clock`.

Tests pass a `orchestrator.testing.FakeClock` and move time instead of sleeping.
Timestamps are UTC epoch seconds as floats everywhere in the SDK.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "SystemClock", "format_ts"]


@runtime_checkable
class Clock(Protocol):
    """Wall time in epoch seconds, a monotonic reading for durations, and an async sleep."""

    def now(self) -> float: ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never go back: measure durations with it."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: `time.time()`, `time.monotonic()` and `anyio.sleep()`."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


def format_ts(ts: float | None) -> str:
    """`12:03:10Z`-style ISO 8601 for messages; '-' for None."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
