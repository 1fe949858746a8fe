"""Every session transition as a value: the fields that must hold, and the fields that change.

An operation (`Claim`, `Renew`, `Release`, `Update`, `Finish`, `Wait`, `Cancel`,
`FlagNeedsHuman`, `Signal`) checks its arguments when built (before any write), and
`decide(current, now)` returns a `SessionChange`, None (nothing to write: the
operation already holds, e.g. a repeated finish), or raises the refusal. A backend
only applies the change:

- SQLite reads the session inside `BEGIN IMMEDIATE`, decides, and writes
  `change.apply(current)`: under the lock `expect` holds by construction.
- DynamoDB turns `expect` into a condition expression and `changes` into an update
  expression. Fenced operations (`reads_first = False`) decide without reading; on a
  failed condition it re-reads, returns the result if `change.shown_by(stored)` (its
  own write landed and the response was lost), and otherwise decides again on what it
  read, which raises the same refusal SQLite raises.

So both backends reach the same decision from the same stored state (the differential
test in tests/store proves it). Claimability and lease-loss messages live here too.
"""

from __future__ import annotations

from abc import abstractmethod

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from orchestrator.errors import (
    SessionStateError,
    ValidationError,
)
from orchestrator.store.records import (
    Event,
    Lease,
    Progress,
    SessionRecord,
    SessionStatus,
    check_id,
)
from orchestrator.store.rules.limits import reason as _reason
from orchestrator.store.rules.change import Retained, SessionChange, SessionOp
from orchestrator.store.rules.claims import check_lease_seconds, lease_lost
from orchestrator.store.rules.history import cancel_event, needs_human_event, signal_event

__all__ = ["Cancel", "FencedOp", "Finish", "FlagNeedsHuman", "Release", "Renew", "Signal", "Update", "Wait"]

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class FencedOp(SessionOp[R]):
    """A write by the session's holder: it holds only while fence, owner and RUNNING are as the lease says.

    Decided without a read (`reads_first = False`); given the stored session (SQLite,
    or DynamoDB after a failed condition) it returns None when the operation already
    holds, or raises why the holder lost the session.
    """

    lease: Lease
    reads_first = False

    def expect(self) -> dict[str, Any]:
        return {"fence": self.lease.fence, "lease_owner": self.lease.owner, "status": SessionStatus.RUNNING}

    @abstractmethod
    def changes(self, now: float) -> dict[str, Any]:
        """The fields the write sets, at time `now`."""

    def done_already(self, current: SessionRecord) -> bool:
        """Whether `current` makes the write unnecessary (a repeat whose first try landed)."""
        return False

    def decide(self, current: SessionRecord | None, now: float) -> SessionChange | None:
        if current is not None and self.done_already(current):
            return None
        change = SessionChange(self.session_id, self.action, self.expect(), self.changes(now))
        if current is not None and not change.holds(current):
            err = lease_lost(current, self.lease)
            raise err if err is not None else SessionStateError.kept_changing(current.session_id, self.action, 1)
        return change


@dataclass(frozen=True, slots=True)
class Renew(FencedOp[tuple[Lease, SessionRecord]]):
    """Extend the lease; an external session's lease (no expiry) stays without one."""

    lease_seconds: float
    action = "renew the lease of"

    def __post_init__(self) -> None:
        check_lease_seconds(self.lease_seconds, f"the lease renewal of session {self.session_id}",
                            self.session_id, optional=False)

    def changes(self, now: float) -> dict[str, Any]:
        return {"lease_expires_at": None if self.lease.expires_at is None else now + self.lease_seconds}

    def result(self, record: SessionRecord) -> tuple[Lease, SessionRecord]:
        return replace(self.lease, expires_at=record.lease_expires_at, signal_seq=record.signal_seq), record


@dataclass(frozen=True, slots=True)
class Release(FencedOp[None]):
    """Give the session back (RUNNING -> PENDING) for another worker to claim now."""

    action = "release"

    def changes(self, now: float) -> dict[str, Any]:
        return dict(status=SessionStatus.PENDING, lease_owner=None, lease_expires_at=None, updated_at=now)

    def done_already(self, current: SessionRecord) -> bool:
        return current.status is SessionStatus.PENDING and current.fence == self.lease.fence

    def result(self, record: SessionRecord) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Update(FencedOp[SessionRecord]):
    """Fenced update of progress, current agents, metadata and trace context (those given)."""

    progress: Progress | None = None
    current_agents: Sequence[str] | None = None
    metadata: Mapping[str, Any] | None = None
    trace_context: Mapping[str, str] | None = None
    action = "update"

    def __post_init__(self) -> None:
        if self.trace_context is not None and not all(
                isinstance(k, str) and isinstance(v, str) for k, v in dict(self.trace_context).items()):
            raise ValidationError.bad_value("trace_context", self.trace_context, "a mapping of strings to strings",
                                            f"session {self.session_id}", session_id=self.session_id)

    def changes(self, now: float) -> dict[str, Any]:
        changes: dict[str, Any] = {"updated_at": now}
        if self.progress is not None:
            changes["progress"] = self.progress
        if self.current_agents is not None:
            changes["current_agents"] = tuple(self.current_agents)
        if self.metadata is not None:
            changes["metadata"] = dict(self.metadata)
        if self.trace_context is not None:
            changes["trace_context"] = dict(self.trace_context)
        return changes

    def result(self, record: SessionRecord) -> SessionRecord:
        return record


@dataclass(frozen=True, slots=True)
class Finish(FencedOp[SessionRecord]):
    """End the session COMPLETED, FAILED or CANCELLED; frees the lease and starts its retention."""

    status: SessionStatus
    reason: str | None = None
    needs_human_reason: str | None = None
    action = "finish"

    def __post_init__(self) -> None:
        where = f"the end of session {self.session_id}"
        if not SessionStatus(self.status).is_final:
            raise ValidationError.bad_value("status", self.status.value, "COMPLETED, FAILED or CANCELLED", where,
                                            session_id=self.session_id)
        if self.needs_human_reason is not None and self.status is not SessionStatus.FAILED:
            raise ValidationError.bad_value("needs_human_reason", self.needs_human_reason,
                                            f"None: only a FAILED session is flagged (got {self.status.value})",
                                            where, session_id=self.session_id)

    def changes(self, now: float) -> dict[str, Any]:
        return dict(status=self.status, reason=_reason(self.reason), completed_at=now, updated_at=now,
                    lease_owner=None, lease_expires_at=None, wake_at=None, current_agents=(),
                    needs_human=self.needs_human_reason is not None,
                    needs_human_reason=_reason(self.needs_human_reason), expires_at=Retained(now))

    def done_already(self, current: SessionRecord) -> bool:
        return (current.status is self.status and current.fence == self.lease.fence
                and current.completed_at is not None)

    def result(self, record: SessionRecord) -> SessionRecord:
        return record


@dataclass(frozen=True, slots=True)
class Wait(FencedOp[bool]):
    """RUNNING -> WAITING, freeing the lease, unless a signal arrived since the lease saw the sequence."""

    wake_at: float | None
    action = "wait"

    def expect(self) -> dict[str, Any]:
        return {**FencedOp.expect(self), "signal_seq": self.lease.signal_seq}

    def changes(self, now: float) -> dict[str, Any]:
        return dict(status=SessionStatus.WAITING, wake_at=self.wake_at, wait_seq=self.lease.signal_seq,
                    lease_owner=None, lease_expires_at=None, updated_at=now)

    def done_already(self, current: SessionRecord) -> bool:
        # Waiting already (a retry), or a signal arrived: the caller reads it instead of sleeping.
        return self.result(current) or (
            lease_lost(current, self.lease) is None and current.signal_seq != self.lease.signal_seq)

    def result(self, record: SessionRecord) -> bool:
        return (record.status is SessionStatus.WAITING and record.fence == self.lease.fence
                and record.wait_seq == self.lease.signal_seq)


@dataclass(frozen=True, slots=True)
class Cancel(SessionOp[SessionRecord]):
    """Store a cancel request; a session nobody holds (PENDING, WAITING, FAILED, expired) ends CANCELLED now.

    A FAILED session is cancelled too, which also stops every redrive of it.
    """

    reason: str
    action = "cancel"

    def decide(self, current: SessionRecord | None, now: float) -> SessionChange:
        assert current is not None
        if current.status in (SessionStatus.COMPLETED, SessionStatus.CANCELLED):
            raise SessionStateError.not_allowed(
                current.session_id, current.status.value, "cancel", "there is nothing to cancel")
        read = {"fence": current.fence, "status": current.status, "lease_expires_at": current.lease_expires_at}
        held = current.status is SessionStatus.RUNNING and (
            current.lease_expires_at is None or current.lease_expires_at >= now)
        if held:  # the owner sees the request at its next heartbeat
            return SessionChange(self.session_id, self.action, read,
                                 dict(cancel_requested=True, reason=_reason(self.reason)))
        # Nobody holds it: cancel now, and fence out a stale owner.
        return SessionChange(self.session_id, self.action, read, dict(
            status=SessionStatus.CANCELLED, fence=current.fence + 1, cancel_requested=True,
            reason=_reason(self.reason), lease_owner=None, lease_expires_at=None, wake_at=None, completed_at=now,
            updated_at=now, current_agents=(), expires_at=Retained(now)))

    def result(self, record: SessionRecord) -> SessionRecord:
        return record

    def event(self, current: SessionRecord | None, change: SessionChange, now: float) -> Event:
        assert current is not None
        ended = change.changes.get("status") is SessionStatus.CANCELLED
        return cancel_event(current, ended, self.reason, now)


@dataclass(frozen=True, slots=True)
class FlagNeedsHuman(SessionOp[SessionRecord]):
    """Flag (a reason) or clear (None) a FAILED session for a person; `updated_at` is kept.

    Clearing the flag must not push back the cron's "failed before" bound.
    """

    reason: str | None
    action = "flag needs-human on"

    def decide(self, current: SessionRecord | None, now: float) -> SessionChange:
        assert current is not None
        if current.status is not SessionStatus.FAILED:
            raise SessionStateError.not_allowed(
                current.session_id, current.status.value, "flagging or clearing needs-human",
                "only a FAILED session is flagged for a person")
        return SessionChange(self.session_id, self.action, {"fence": current.fence, "status": current.status},
                             dict(needs_human=self.reason is not None, needs_human_reason=_reason(self.reason)))

    def result(self, record: SessionRecord) -> SessionRecord:
        return record

    def event(self, current: SessionRecord | None, change: SessionChange, now: float) -> Event:
        return needs_human_event(self.session_id, self.reason, now)


@dataclass(frozen=True, slots=True)
class Signal(SessionOp[int]):
    """Bump the signal sequence (the signal item is written with it); a WAITING session becomes due."""

    task_id: str
    name: str
    action = "signal"

    def __post_init__(self) -> None:
        where = f"a signal to session {self.session_id}"
        check_id("task", self.task_id, where=where)
        check_id("signal", self.name, where=where)

    def decide(self, current: SessionRecord | None, now: float) -> SessionChange:
        assert current is not None
        if current.status.is_final:
            raise SessionStateError.not_allowed(
                current.session_id, current.status.value, f"signal {self.name!r} for task {self.task_id}",
                f"a finished session never reads it; resume it first (`orchestrator resume {current.session_id} --app APP:PIPELINE`)",
                task_id=self.task_id)
        changes: dict[str, Any] = {"signal_seq": current.signal_seq + 1}
        read: dict[str, Any] = {"signal_seq": current.signal_seq, "status": current.status}
        if current.status is SessionStatus.WAITING and (current.wake_at is None or current.wake_at > now):
            read["wake_at"] = current.wake_at
            changes["wake_at"] = now
        return SessionChange(self.session_id, self.action, read, changes)

    def result(self, record: SessionRecord) -> int:
        return record.signal_seq

    def event(self, current: SessionRecord | None, change: SessionChange, now: float) -> Event:
        return signal_event(self.session_id, self.task_id, self.name, int(change.changes["signal_seq"]), now)
