"""How a worker paces its look for work: at once while it claims, backing off while idle.

Pure and seeded, so tests check the schedule without sleeping. A fleet's workers list
the same oldest sessions; `spread` gives each its own order over that head window, so
they do not all try the same session first, and the window keeps older sessions ahead
of newer ones.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from orchestrator.errors import ValidationError

__all__ = ["Pacer", "spread"]

T = TypeVar("T")


def spread(candidates: Sequence[T], rng: random.Random, window: int) -> list[T]:
    """`candidates` (oldest first) shuffled within consecutive windows of `window`.

    Each worker tries its own order among the oldest `window` before any newer one, so
    contention for the head of the queue falls by about the window's size.
    """
    if window < 1:
        raise ValidationError(f"spread needs a window >= 1 (got {window})")
    out: list[T] = []
    for start in range(0, len(candidates), window):
        part = list(candidates[start:start + window])
        rng.shuffle(part)
        out += part
    return out


@dataclass(slots=True)
class Pacer:
    """Pauses between listings: none after a claim, doubling from `floor` to `ceiling` while idle.

    Every idle pause is jittered to [1/2, 1] of its nominal value (workers started
    together drift apart). `contended()` is the short pause after a listing whose
    candidates were all taken by other workers: a random part of `floor`.
    """

    floor: float
    ceiling: float
    rng: random.Random = field(default_factory=random.Random)
    _idle: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.ceiling:
            raise ValidationError(
                f"Pacer needs 0 < floor <= ceiling (got floor={self.floor:g}, ceiling={self.ceiling:g}); "
                f"the ceiling is the worker's poll interval")

    def claimed(self) -> None:
        """Work was found: the next idle pause starts again from `floor`."""
        self._idle = 0

    def idle(self) -> float:
        """The pause after a listing with nothing to claim (seconds)."""
        nominal = min(self.ceiling, self.floor * 2.0 ** min(self._idle, 30))
        self._idle += 1
        return nominal * (0.5 + 0.5 * self.rng.random())

    def contended(self) -> float:
        """The pause after a listing whose every candidate another worker claimed first: a
        random part of the idle pause (full jitter), so contenders spread out at once."""
        nominal = min(self.ceiling, self.floor * 2.0 ** min(self._idle, 30))
        self._idle += 1
        return nominal * self.rng.random()

    @property
    def idle_steps(self) -> int:
        """Idle pauses since the last claim."""
        return self._idle
