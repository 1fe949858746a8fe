"""Retry policy: how many attempts, how long between them, which errors never retry."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from orchestrator.agents.errors import NonRetryableError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter and a cap.

    The delay before attempt n+1 is `min(max_backoff, initial_backoff * factor**(n-1))`,
    spread by +/- `jitter` (a fraction) using the caller's seeded `random.Random`.
    Exceptions of a `non_retryable` type (and `NonRetryableError`) fail the task at once.
    """

    max_attempts: int = 3
    initial_backoff: float = 1.0
    backoff_factor: float = 2.0
    max_backoff: float = 60.0
    jitter: float = 0.2
    non_retryable: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts={self.max_attempts}; use 1 or more")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("RetryPolicy backoffs must be >= 0 seconds")
        if self.backoff_factor < 1:
            raise ValueError(f"RetryPolicy.backoff_factor={self.backoff_factor}; use 1 or more")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter={self.jitter}; use a fraction between 0 and 1")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) before the next one."""
        base = min(self.max_backoff, self.initial_backoff * self.backoff_factor ** max(0, attempt - 1))
        if self.jitter and base > 0:
            r = (rng or random.Random()).uniform(-self.jitter, self.jitter)
            base = max(0.0, min(self.max_backoff, base * (1 + r)))
        return base

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, NonRetryableError):
            return False
        return not (self.non_retryable and isinstance(exc, self.non_retryable))
