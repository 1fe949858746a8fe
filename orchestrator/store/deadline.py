"""A deadline for the store calls made in a scope: no request is sent at or after it.

A runner may write only until its lease's local deadline; past it another worker may
own the session. `bounded_by(deadline)` sets that deadline for every store call made in
its context (tasks and worker threads started inside inherit it, as context variables
do). Each backend calls `check` right before it sends a request or begins a write
transaction, including every retry, and `remaining` to cut a backoff short; past the
deadline they raise the deadline's own error instead of writing. A request sent before
the deadline may still land after it: fencing makes that harmless.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

__all__ = ["Deadline", "bounded_by", "check", "remaining", "unbounded"]


class Deadline(Protocol):
    """A moving deadline (a renewal moves it) and the error to raise once it passed."""

    def deadline_at(self) -> float | None:
        """Clock seconds (the store's `clock.now()`) of the deadline; None: unbounded."""
        ...

    def deadline_error(self) -> Exception:
        """What a store call raises instead of sending once the deadline passed."""
        ...


_current: ContextVar[Deadline | None] = ContextVar("orchestrator_store_deadline", default=None)


@contextmanager
def bounded_by(deadline: Deadline) -> Iterator[None]:
    """Bound every store call made in this context (and tasks started in it) by `deadline`."""
    token = _current.set(deadline)
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def unbounded() -> Iterator[None]:
    """Calls in this context are not the lease holder's (another worker's, in a test):
    no deadline applies to them."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


def check(now: float) -> None:
    """Raise the current deadline's error if it has passed at `now`; nothing if unbounded."""
    bound = _current.get()
    if bound is None:
        return
    at = bound.deadline_at()
    if at is not None and now >= at:
        raise bound.deadline_error()


def remaining(now: float) -> float | None:
    """Seconds left before the current deadline (may be <= 0); None if unbounded."""
    bound = _current.get()
    at = None if bound is None else bound.deadline_at()
    return None if at is None else at - now
