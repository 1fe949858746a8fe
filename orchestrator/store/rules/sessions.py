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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from orchestrator.clock import format_ts
from orchestrator.errors import (
    ClaimRejectedError,
    LeaseLostError,
    RedriveLimitError,
    SessionStateError,
    ValidationError,
)
from orchestrator.store.records import (
    ClaimPolicy,
    Lease,
    NewSession,
    OwnerKind,
    Progress,
    SessionRecord,
    SessionStatus,
    check_id,
)
from orchestrator.store.rules.limits import reason as _reason

__all__ = [
    "Cancel",
    "Claim",
    "Finish",
    "FlagNeedsHuman",
    "Release",
    "Renew",
    "Retained",
    "SessionChange",
    "SessionOp",
    "Signal",
    "Update",
    "Wait",
    "check_lease_seconds",
    "claim_refusal",
    "claimed",
    "lease_lost",
    "new_session_record",
    "status_time",
    "wake_due",
]

R = TypeVar("R")

#: The status-index time of a WAITING session that only a signal can wake.
NEVER = 9_999_999_999.0


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
class SessionOp(Generic[R]):
    """Base of the operations: the session they write, and whether deciding needs a read."""

    session_id: str

    #: Whether `decide` needs the stored session; False: fenced by the lease alone.
    reads_first = True
    action = "write"

    def decide(self, current: SessionRecord | None, now: float) -> SessionChange | None:
        raise NotImplementedError

    def result(self, record: SessionRecord) -> R:
        raise NotImplementedError


# -- claimability ------------------------------------------------------------------------


def wake_due(session: SessionRecord, now: float) -> bool:
    """A WAITING session is due when its wake-at passed or a signal came after the wait."""
    if session.signal_seq > session.wait_seq:
        return True
    return session.wake_at is not None and session.wake_at <= now


def status_time(session: SessionRecord) -> float:
    """The time a session sorts by in the status index: wake-at for WAITING, else updated_at.

    A WAITING session with no wake-at sorts at the far future (only a signal wakes it;
    a signal then sets wake-at to the signal's time).
    """
    if session.status is SessionStatus.WAITING:
        return session.wake_at if session.wake_at is not None else NEVER
    return session.updated_at


def claim_refusal(session: SessionRecord, now: float, policy: ClaimPolicy = ClaimPolicy()) -> str | None:
    """Why `session` cannot be claimed now (a message with ids and the next action), or None."""
    sid = session.session_id
    if session.owner_kind is OwnerKind.EXTERNAL:
        return (
            f"session {sid} is external (recorded by its own code under a token); workers never "
            f"claim it. Update it through the state API with its token"
        )
    status = session.status
    if status is SessionStatus.PENDING:
        return None
    if status is SessionStatus.RUNNING:
        if session.lease_expires_at is not None and session.lease_expires_at < now:
            return None
        return (
            f"session {sid} is owned by worker {session.lease_owner} until "
            f"{format_ts(session.lease_expires_at)} (fence {session.fence}); retry after the lease "
            f"expires, or cancel it with `orchestrator cancel {sid}`"
        )
    if status is SessionStatus.WAITING:
        if wake_due(session, now):
            return None
        return (
            f"session {sid} is waiting for a signal until {format_ts(session.wake_at)}; deliver it "
            f"with `orchestrator signal {sid} TASK NAME`, or wait until then"
        )
    if status is SessionStatus.FAILED:
        return _redrive_refusal(session, policy)
    return f"session {sid} is {status.value}; a finished session cannot be claimed (fork it instead)"


def _redrive_refusal(session: SessionRecord, policy: ClaimPolicy) -> str | None:
    sid = session.session_id
    if policy.force:
        return None
    if not policy.redrive_failed:
        return (
            f"session {sid} is FAILED ({session.reason or 'no reason stored'}); resume it "
            f"explicitly with `orchestrator resume {sid}`"
        )
    if session.needs_human:
        return (
            f"session {sid} is flagged needs-human ({session.needs_human_reason}); a person must "
            f"clear it with `orchestrator resume {sid} --force`"
        )
    if session.redrive_count >= session.max_redrives:
        return (
            f"session {sid} used {session.redrive_count} of {session.max_redrives} redrives; "
            f"resume it with `orchestrator resume {sid} --force` after fixing the cause"
        )
    bound = policy.failed_updated_before
    if bound is not None and session.updated_at > bound:
        return (
            f"session {sid} failed at {format_ts(session.updated_at)}, after the bound "
            f"{format_ts(bound)}; it will be eligible later"
        )
    return None


def claimed(session: SessionRecord, owner: str, lease_seconds: float, now: float, policy: ClaimPolicy) -> SessionRecord:
    """The session as a successful claim writes it: RUNNING, fence + 1, lease set."""
    return replace(session, **Claim(session.session_id, owner, lease_seconds, policy)._changes(session, now))


def lease_lost(session: SessionRecord, lease: Lease) -> LeaseLostError | None:
    """The error to raise when `session` no longer belongs to `lease`, else None."""
    if (session.fence == lease.fence and session.lease_owner == lease.owner
            and session.status is SessionStatus.RUNNING):
        return None
    sid = session.session_id
    if session.fence != lease.fence:
        msg = (
            f"session {sid} was claimed by {session.lease_owner or 'another worker'} (fence "
            f"{session.fence}, ours {lease.fence}); our agents are stopped and our writes discarded"
        )
    else:
        msg = (
            f"session {sid} is {session.status.value} and no longer held by {lease.owner} "
            f"(fence {lease.fence}); claim it again to continue"
        )
    return LeaseLostError(
        msg, session_id=sid, fence=session.fence, our_fence=lease.fence, owner=session.lease_owner
    )


# -- creation ---------------------------------------------------------------------------------


def check_lease_seconds(lease_seconds: float | None, where: str, session_id: str, *, optional: bool) -> None:
    """A lease is a finite number of seconds > 0 (None only where a lease may never expire)."""
    if lease_seconds is None and optional:
        return
    if (isinstance(lease_seconds, bool) or not isinstance(lease_seconds, (int, float))
            or not math.isfinite(lease_seconds) or lease_seconds <= 0):
        raise ValidationError.bad_value("lease_seconds", lease_seconds, "a number of seconds > 0", where,
                                        session_id=session_id)


def _check_owner(owner: Any, where: str, session_id: str) -> None:
    if not isinstance(owner, str) or not owner.strip():
        raise ValidationError.bad_value("owner", owner, "a non-empty worker id (or 'external:<token>')", where,
                                        session_id=session_id)


def new_session_record(
    session: NewSession, task_count: int, *, owner: str | None, lease_seconds: float | None, now: float
) -> SessionRecord:
    """The session as `create_session` stores it; raises for bad owner/lease/status before any write."""
    sid = session.session_id
    where = f"the creation of session {sid}"
    if owner is None:
        if session.status is SessionStatus.RUNNING:
            raise ValidationError.bad_value("owner", None, "an owner for a session created RUNNING "
                                            "(e.g. 'external:<token>'), or create it PENDING", where, session_id=sid)
        if lease_seconds is not None:
            raise ValidationError.bad_value("lease_seconds", lease_seconds, "no lease without an owner", where,
                                            session_id=sid)
    else:
        _check_owner(owner, where, sid)
        check_lease_seconds(lease_seconds, where, sid, optional=True)
    return SessionRecord(
        session_id=sid, pipeline=session.pipeline, pipeline_version=session.pipeline_version,
        status=SessionStatus.RUNNING if owner is not None else session.status, owner_kind=session.owner_kind,
        input=session.input, project_id=session.project_id, user_id=session.user_id,
        pipeline_type=session.pipeline_type, progress=Progress(0, task_count), created_at=now, updated_at=now,
        lease_owner=owner, fence=1 if owner is not None else 0,
        lease_expires_at=now + lease_seconds if owner is not None and lease_seconds is not None else None,
        max_redrives=session.max_redrives, metadata=dict(session.metadata),
        trace_context=dict(session.trace_context),
    )


# -- operations ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim(SessionOp[Lease]):
    """Take the session: PENDING, expired RUNNING, due WAITING, or FAILED under the policy."""

    owner: str
    lease_seconds: float
    policy: ClaimPolicy = ClaimPolicy()
    action = "claim"

    def __post_init__(self) -> None:
        where = f"the claim of session {self.session_id}"
        _check_owner(self.owner, where, self.session_id)
        check_lease_seconds(self.lease_seconds, where, self.session_id, optional=False)

    def decide(self, current: SessionRecord | None, now: float) -> SessionChange:
        assert current is not None
        refusal = claim_refusal(current, now, self.policy)
        if refusal is not None:
            redrive_blocked = (current.status is SessionStatus.FAILED and self.policy.redrive_failed
                               and (current.needs_human or current.redrive_count >= current.max_redrives))
            error = RedriveLimitError if redrive_blocked else ClaimRejectedError
            raise error.because(refusal, session_id=current.session_id, owner=current.lease_owner,
                                             fence=current.fence, status=current.status.value,
                                             expires_at=current.lease_expires_at)
        # The decision read these fields; the write holds only while they are unchanged.
        read = {"fence": current.fence, "status": current.status}
        if current.status is SessionStatus.RUNNING:
            read["lease_expires_at"] = current.lease_expires_at
        elif current.status is SessionStatus.WAITING:
            read.update(wake_at=current.wake_at, signal_seq=current.signal_seq, wait_seq=current.wait_seq)
        elif current.status is SessionStatus.FAILED:
            read.update(needs_human=current.needs_human, redrive_count=current.redrive_count,
                        updated_at=current.updated_at)
        return SessionChange(self.session_id, self.action, read, self._changes(current, now))

    def _changes(self, current: SessionRecord, now: float) -> dict[str, Any]:
        redrive = current.status is SessionStatus.FAILED
        changes: dict[str, Any] = dict(
            status=SessionStatus.RUNNING, fence=current.fence + 1, lease_owner=self.owner,
            lease_expires_at=now + self.lease_seconds, wake_at=None, updated_at=now, completed_at=None,
            expires_at=None,
        )
        if redrive:
            changes.update(redrive_count=current.redrive_count + 1, reason=None)
            if self.policy.force:
                changes.update(needs_human=False, needs_human_reason=None)
        return changes

    def result(self, record: SessionRecord) -> Lease:
        return Lease(self.session_id, self.owner, record.fence, record.lease_expires_at,
                     signal_seq=record.signal_seq)


def _fenced(lease: Lease, **more: Any) -> dict[str, Any]:
    return {"fence": lease.fence, "lease_owner": lease.owner, "status": SessionStatus.RUNNING, **more}


def _refuse_fenced(change: SessionChange, current: SessionRecord, lease: Lease) -> None:
    """Raise why a fenced write cannot apply to `current` (a newer claim, or another status)."""
    if change.holds(current):
        return
    err = lease_lost(current, lease)
    if err is not None:
        raise err
    raise SessionStateError.kept_changing(current.session_id, change.action, 1)


@dataclass(frozen=True, slots=True)
class Renew(SessionOp[tuple[Lease, SessionRecord]]):
    """Extend the lease; an external session's lease (no expiry) stays without one."""

    lease: Lease
    lease_seconds: float
    reads_first = False
    action = "renew the lease of"

    def __post_init__(self) -> None:
        check_lease_seconds(self.lease_seconds, f"the lease renewal of session {self.session_id}",
                            self.session_id, optional=False)

    def decide(self, current: SessionRecord | None, now: float) -> SessionChange:
        expires = None if self.lease.expires_at is None else now + self.lease_seconds
        change = SessionChange(self.session_id, self.action, _fenced(self.lease), {"lease_expires_at": expires})
        if current is not None:
            _refuse_fenced(change, current, self.lease)
        return change

    def result(self, record: SessionRecord) -> tuple[Lease, SessionRecord]:
        return replace(self.lease, expires_at=record.lease_expires_at, signal_seq=record.signal_seq), record


@dataclass(frozen=True, slots=True)
class Release(SessionOp[None]):
    """Give the session back (RUNNING -> PENDING) for another worker to claim now."""

    lease: Lease
    reads_first = False
    action = "release"

    def decide(self, current: SessionRecord | None, now: float) -> SessionChange | None:
        if current is not None and current.status is SessionStatus.PENDING and current.fence == self.lease.fence:
            return None  # released already (a retry)
        change = SessionChange(self.session_id, self.action, _fenced(self.lease), dict(
            status=SessionStatus.PENDING, lease_owner=None, lease_expires_at=None, updated_at=now))
        if current is not None:
            _refuse_fenced(change, current, self.lease)
        return change

    def result(self, record: SessionRecord) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Update(SessionOp[SessionRecord]):
    """Fenced update of progress, current agents, metadata and trace context (those given)."""

    lease: Lease
    progress: Progress | None = None
    current_agents: Sequence[str] | None = None
    metadata: Mapping[str, Any] | None = None
    trace_context: Mapping[str, str] | None = None
    reads_first = False
    action = "update"

    def __post_init__(self) -> None:
        if self.trace_context is not None and not all(
                isinstance(k, str) and isinstance(v, str) for k, v in dict(self.trace_context).items()):
            raise ValidationError.bad_value("trace_context", self.trace_context, "a mapping of strings to strings",
                                            f"session {self.session_id}", session_id=self.session_id)

    def decide(self, current: SessionRecord | None, now: float) -> SessionChange:
        changes: dict[str, Any] = {"updated_at": now}
        if self.progress is not None:
            changes["progress"] = self.progress
        if self.current_agents is not None:
            changes["current_agents"] = tuple(self.current_agents)
        if self.metadata is not None:
            changes["metadata"] = dict(self.metadata)
        if self.trace_context is not None:
            changes["trace_context"] = dict(self.trace_context)
        change = SessionChange(self.session_id, self.action, _fenced(self.lease), changes)
        if current is not None:
            _refuse_fenced(change, current, self.lease)
        return change

    def result(self, record: SessionRecord) -> SessionRecord:
        return record


@dataclass(frozen=True, slots=True)
class Finish(SessionOp[SessionRecord]):
    """End the session COMPLETED, FAILED or CANCELLED; frees the lease and starts its retention."""

    lease: Lease
    status: SessionStatus
    reason: str | None = None
    needs_human_reason: str | None = None
    reads_first = False
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

    def decide(self, current: SessionRecord | None, now: float) -> SessionChange | None:
        if (current is not None and current.status is self.status and current.fence == self.lease.fence
                and current.completed_at is not None):
            return None  # finished already by this owner (a retry)
        change = SessionChange(self.session_id, self.action, _fenced(self.lease), dict(
            status=self.status, reason=_reason(self.reason), completed_at=now, updated_at=now, lease_owner=None,
            lease_expires_at=None, wake_at=None, current_agents=(), needs_human=self.needs_human_reason is not None,
            needs_human_reason=_reason(self.needs_human_reason), expires_at=Retained(now)))
        if current is not None:
            _refuse_fenced(change, current, self.lease)
        return change

    def result(self, record: SessionRecord) -> SessionRecord:
        return record


@dataclass(frozen=True, slots=True)
class Wait(SessionOp[bool]):
    """RUNNING -> WAITING, freeing the lease, unless a signal arrived since the lease saw the sequence."""

    lease: Lease
    wake_at: float | None
    reads_first = False
    action = "wait"

    def decide(self, current: SessionRecord | None, now: float) -> SessionChange | None:
        change = SessionChange(
            self.session_id, self.action, _fenced(self.lease, signal_seq=self.lease.signal_seq),
            dict(status=SessionStatus.WAITING, wake_at=self.wake_at, wait_seq=self.lease.signal_seq,
                 lease_owner=None, lease_expires_at=None, updated_at=now))
        if current is None:
            return change
        if self._waiting(current):
            return None  # waiting already (a retry)
        if lease_lost(current, self.lease) is None and current.signal_seq != self.lease.signal_seq:
            return None  # a signal arrived: the caller reads it instead of sleeping
        _refuse_fenced(change, current, self.lease)
        return change

    def _waiting(self, record: SessionRecord) -> bool:
        return (record.status is SessionStatus.WAITING and record.fence == self.lease.fence
                and record.wait_seq == self.lease.signal_seq)

    def result(self, record: SessionRecord) -> bool:
        return self._waiting(record)


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
                f"a finished session never reads it; resume it first (`orchestrator resume {current.session_id}`)",
                task_id=self.task_id)
        changes: dict[str, Any] = {"signal_seq": current.signal_seq + 1}
        read: dict[str, Any] = {"signal_seq": current.signal_seq, "status": current.status}
        if current.status is SessionStatus.WAITING and (current.wake_at is None or current.wake_at > now):
            read["wake_at"] = current.wake_at
            changes["wake_at"] = now
        return SessionChange(self.session_id, self.action, read, changes)

    def result(self, record: SessionRecord) -> int:
        return record.signal_seq
