"""A session transition as a value: the fields that must hold, and the fields that change.

See `orchestrator.store.rules.sessions` for how backends apply a `SessionChange`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from orchestrator.store.records import (
    Event,
    SessionRecord,
    SessionStatus,
)

__all__ = ["NEVER", "Retained", "SessionChange", "SessionOp", "expired"]

R = TypeVar("R")

#: The status-index time of a WAITING session that only a signal can wake.
NEVER = 9_999_999_999.0


def expired(expires_at: float | None, now: float) -> bool:
    """A session is gone once its retention has run out (`expires_at <= now`), on every
    read, whether or not the backend has deleted it yet (DynamoDB's TTL lags by days)."""
    return expires_at is not None and expires_at <= now


@dataclass(frozen=True, slots=True)
class Retained:
    """`expires_at` = the session's stored retention (`ttl_seconds`) after `since`, in whole seconds."""

    since: float

    def resolve(self, ttl_seconds: float) -> float:
        return float(int(self.since) + int(ttl_seconds))


@dataclass(frozen=True, slots=True)
class SessionChange:
    """One conditional write of a session item.

    `expect`: SessionRecord fields and the values they must have (None: absent).
    `changes`: fields and their new values; `expires_at` may be `Retained`.
    """

    session_id: str
    action: str
    expect: Mapping[str, Any]
    changes: Mapping[str, Any]

    def holds(self, current: SessionRecord) -> bool:
        return all(getattr(current, name) == value for name, value in self.expect.items())

    def apply(self, current: SessionRecord, ttl_seconds: float) -> SessionRecord:
        values: dict[str, Any] = {
            k: v.resolve(ttl_seconds) if isinstance(v, Retained) else v for k, v in self.changes.items()
        }
        return replace(current, **values)

    def shown_by(self, stored: SessionRecord) -> bool:
        """Whether `stored` is what our write left (it landed and its response was lost).

        Every change must be there (absolute values, with a fresh time, fence or lease
        expiry), and every expected field the write did not change must still hold, so
        a newer owner's write with equal values does not look like ours.
        """
        if any(getattr(stored, k) != v for k, v in self.expect.items() if k not in self.changes):
            return False
        for name, value in self.changes.items():
            if isinstance(value, Retained):
                if stored.expires_at is None or int(stored.expires_at) < int(value.since):
                    return False
            elif getattr(stored, name) != value:
                return False
        return True

    def index_time(self) -> tuple[SessionStatus, float] | None:
        """The status-index key (status, time) after the write, when the write moves it, else None.

        Computed from `expect` and `changes` alone, so a backend that writes without
        reading can still keep the index right; every operation that moves the key
        names the status and the time field it sorts by.
        """
        if not {"status", "wake_at", "updated_at"} & self.changes.keys():
            return None
        known = {**self.expect, **self.changes}
        status = SessionStatus(known["status"])
        if status is SessionStatus.WAITING:
            wake = known["wake_at"]
            return status, NEVER if wake is None else float(wake)
        return status, float(known["updated_at"])


@dataclass(frozen=True, slots=True)
class SessionOp(ABC, Generic[R]):
    """Base of the operations: the session they write, and whether deciding needs a read."""

    session_id: str

    #: Whether `decide` needs the stored session; False: fenced by the lease alone.
    reads_first = True
    action = "write"

    @abstractmethod
    def decide(self, current: SessionRecord | None, now: float) -> SessionChange | None:
        """The change to write given the stored session (None before a read), None if it holds already."""

    @abstractmethod
    def result(self, record: SessionRecord) -> R:
        """What the operation returns, from the session as stored after it."""

    def settled(self, before: SessionRecord | None, after: SessionRecord) -> R:
        """What the operation returns once its change, decided on `before`, is stored as `after`.

        Backends call this when their write landed; only an operation whose answer names
        what it replaced (a claim names the previous holder) looks at `before`.
        """
        return self.result(after)

    def event(self, current: SessionRecord | None, change: SessionChange, now: float) -> Event | None:
        """The history's record of `change` (unkeyed), written with it; None: the runner records it, if anyone.

        Operations a person makes (cancel, needs-human, signal) record themselves, so every
        caller gets the event; a runner's own writes are recorded by the runner.
        """
        return None
