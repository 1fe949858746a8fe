"""Claims: which sessions may be taken and what a claim writes; lease loss; a new session's record."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.clock import format_ts
from orchestrator.errors import (
    ClaimRejectedError,
    LeaseLostError,
    RedriveLimitError,
    ValidationError,
)
from orchestrator.store.records import (
    ClaimPolicy,
    Event,
    Lease,
    NewSession,
    OwnerKind,
    PreviousHolder,
    Progress,
    SessionRecord,
    SessionStatus,
)
from orchestrator.store.rules.change import NEVER, SessionChange, SessionOp, expired
from orchestrator.store.rules.history import needs_human_event

__all__ = ["Claim", "check_lease_seconds", "check_owner", "claim_basis", "claim_refusal", "claimed", "claimed_seen",
           "lease_lost", "new_session_record", "status_time", "wake_due"]


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
            f"explicitly with `orchestrator resume {sid} --app APP:PIPELINE`"
        )
    if session.needs_human:
        return (
            f"session {sid} is flagged needs-human ({session.needs_human_reason}); a person must "
            f"clear it with `orchestrator resume {sid} --app APP:PIPELINE --force`"
        )
    if session.redrive_count >= session.max_redrives:
        return (
            f"session {sid} used {session.redrive_count} of {session.max_redrives} redrives; "
            f"resume it with `orchestrator resume {sid} --app APP:PIPELINE --force` after fixing the cause"
        )
    bound = policy.failed_updated_before
    if bound is not None and session.updated_at > bound:
        return (
            f"session {sid} failed at {format_ts(session.updated_at)}, after the bound "
            f"{format_ts(bound)}; it will be eligible later"
        )
    return None


def claim_basis(seen: SessionRecord | None, session_id: str, now: float, policy: ClaimPolicy) -> SessionRecord | None:
    """The record a claim may decide on without reading first, or None (read the session).

    What a caller listed or read (`seen`) serves when it is this session's and the
    rulebook would claim it: the conditional write then holds only while the fields the
    decision read are unchanged, and a stale record costs one read. A `seen` record the
    rulebook would refuse is never trusted: a refusal is decided on a fresh read (a
    signal may have made a listed WAITING session due since).
    """
    if seen is None or seen.session_id != session_id or expired(seen.expires_at, now):
        return None
    if claim_refusal(seen, now, policy) is not None:
        return None
    return seen


def claimed(session: SessionRecord, owner: str, lease_seconds: float, now: float, policy: ClaimPolicy) -> SessionRecord:
    """The session as a successful claim writes it: RUNNING, fence + 1, lease set."""
    return replace(session, **Claim(session.session_id, owner, lease_seconds, policy)._changes(session, now))


def claimed_seen(seen: SessionRecord, lease: Lease, lease_seconds: float, policy: ClaimPolicy) -> SessionRecord | None:
    """`seen` as the claim that returned `lease` wrote it, or None if that claim decided on another record.

    A resume that read the session before claiming runs on what it read only when the
    claim took exactly that record (`lease.previous`: holder, fence, status, lease
    expiry) and no signal came in between; otherwise it must read again (a signal, a
    finish or another owner's run landed meanwhile). What else may have changed unseen
    is the expired holder's fenced writes, which every task write of ours fences out.
    """
    previous = lease.previous
    if (previous is None or lease.expires_at is None or lease.fence != seen.fence + 1
            or lease.signal_seq != seen.signal_seq
            or previous != PreviousHolder(seen.lease_owner, seen.fence, seen.status, seen.lease_expires_at)):
        return None
    session = claimed(seen, lease.owner, lease_seconds, lease.expires_at - lease_seconds, policy)
    return replace(session, lease_expires_at=lease.expires_at)


def lease_lost(session: SessionRecord, lease: Lease) -> LeaseLostError | None:
    """The error to raise when `session` no longer belongs to `lease`, else None."""
    if (session.fence == lease.fence and session.lease_owner == lease.owner
            and session.status is SessionStatus.RUNNING):
        return None
    if session.fence != lease.fence:
        return LeaseLostError.claimed_by(session.session_id, session.lease_owner, session.fence, lease.fence)
    return LeaseLostError.not_held(session.session_id, session.status.value, lease.owner, lease.fence)


# -- creation ---------------------------------------------------------------------------------


def check_lease_seconds(lease_seconds: float | None, where: str, session_id: str, *, optional: bool) -> None:
    """A lease is a finite number of seconds > 0 (None only where a lease may never expire)."""
    if lease_seconds is None and optional:
        return
    if (isinstance(lease_seconds, bool) or not isinstance(lease_seconds, (int, float))
            or not math.isfinite(lease_seconds) or lease_seconds <= 0):
        raise ValidationError.bad_value("lease_seconds", lease_seconds, "a number of seconds > 0", where,
                                        session_id=session_id)


def check_owner(owner: Any, where: str, session_id: str) -> None:
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
        check_owner(owner, where, sid)
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
        check_owner(self.owner, where, self.session_id)
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

    def settled(self, before: SessionRecord | None, after: SessionRecord) -> Lease:
        """The lease, naming who held the session before: a takeover's history names both owners."""
        lease = self.result(after)
        if before is None:
            return lease
        previous = PreviousHolder(before.lease_owner, before.fence, before.status, before.lease_expires_at)
        return replace(lease, previous=previous)

    def event(self, current: SessionRecord | None, change: SessionChange, now: float) -> Event | None:
        """A forced claim clears needs-human: the history says so (the claim itself is the runner's to record)."""
        if current is not None and current.needs_human and change.changes.get("needs_human") is False:
            return needs_human_event(self.session_id, None, now, by_claim_of=self.owner)
        return None
