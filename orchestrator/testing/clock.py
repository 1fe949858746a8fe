"""A clock tests move by hand: `advance()` wakes every sleeper whose deadline passed."""

from __future__ import annotations

import anyio

__all__ = ["FakeClock"]


class FakeClock:
    """Manual time for leases, heartbeats and backoff, without real sleeping.

    `now()` and `monotonic()` return the fake time; `sleep(s)` returns once `advance()` has moved the
    time `s` seconds past the call (or at once for `s <= 0`, after a checkpoint).
    Only use it within one event loop.
    """

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._now = float(start)
        self._changed = anyio.Event() if _in_loop() else None

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        """The fake time too: it only moves forward, and only when a test moves it."""
        return self._now

    def set(self, ts: float) -> None:
        """Jump to an absolute time (never backwards)."""
        if ts < self._now:
            raise ValueError(f"FakeClock cannot go back from {self._now} to {ts}")
        self._now = ts
        self._notify()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("FakeClock.advance() takes seconds >= 0")
        self._now += seconds
        self._notify()

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + seconds
        await anyio.lowlevel.checkpoint()
        while self._now < deadline:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
        self._changed = anyio.Event() if _in_loop() else None

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"


def _in_loop() -> bool:
    try:
        anyio.get_current_task()
    except Exception:
        return False
    return True
