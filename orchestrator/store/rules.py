"""The fencing rules of DESIGN.md §6 as pure functions, shared by every backend.

A backend reads what it must, asks these functions, and makes its write conditional
on what it read, so SQLite (one transaction) and DynamoDB (condition expressions)
decide exactly alike. The contract suite tests the backends; `tests/test_rules.py`
tests these rules alone.
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.clock import format_ts
from orchestrator.errors import LeaseLostError
from orchestrator.store.records import (
    ATTEMPT_HISTORY_LIMIT,
    AttemptRecord,
    ClaimPolicy,
    ErrorInfo,
    Lease,
    OwnerKind,
    Progress,
    SessionRecord,
    SessionStatus,
    TaskRecord,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    WriteOutcome,
)

__all__ = [
    "apply_task_write",
    "claim_refusal",
    "claimed",
    "classify_rejection",
    "expected_attempt",
    "lease_lost",
    "status_time",
    "task_write_allowed",
    "wake_due",
]

_RESULT_STATUS: dict[TaskWriteKind, TaskStatus | None] = {
    TaskWriteKind.START: TaskStatus.RUNNING,
    TaskWriteKind.PROGRESS: None,
    TaskWriteKind.CHECKPOINT: None,
    TaskWriteKind.COMPLETE: TaskStatus.COMPLETED,
    TaskWriteKind.RETRY: TaskStatus.PENDING,
    TaskWriteKind.FAIL: TaskStatus.FAILED,
    TaskWriteKind.SKIP: TaskStatus.SKIPPED,
    TaskWriteKind.CANCEL: TaskStatus.CANCELLED,
    TaskWriteKind.WAIT: TaskStatus.WAITING,
    TaskWriteKind.WAKE: TaskStatus.RUNNING,
    TaskWriteKind.RESET: TaskStatus.PENDING,
}


def wake_due(session: SessionRecord, now: float) -> bool:
    """A WAITING session is due when its wake-at passed or a signal came after the wait."""
    if session.signal_seq > session.wait_seq:
        return True
    return session.wake_at is not None and session.wake_at <= now


def status_time(session: SessionRecord) -> float:
    """The time a session sorts by in the status index: wake-at for WAITING, else updated_at.

    A WAITING session with no wake-at sorts at the far future (only a signal wakes it;
    `send_signal` then sets wake-at to the signal's time).
    """
    if session.status is SessionStatus.WAITING:
        return session.wake_at if session.wake_at is not None else 9_999_999_999.0
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
    return f"session {sid} is {status.value}; a finished session cannot be claimed (fork it instead)"


def claimed(session: SessionRecord, owner: str, lease_seconds: float, now: float, policy: ClaimPolicy) -> SessionRecord:
    """The session as a successful claim writes it: RUNNING, fence + 1, lease set."""
    redrive = session.status is SessionStatus.FAILED
    return replace(
        session,
        status=SessionStatus.RUNNING,
        fence=session.fence + 1,
        lease_owner=owner,
        lease_expires_at=now + lease_seconds,
        wake_at=None,
        updated_at=now,
        redrive_count=session.redrive_count + (1 if redrive else 0),
        needs_human=False if (redrive and policy.force) else session.needs_human,
        needs_human_reason=None if (redrive and policy.force) else session.needs_human_reason,
        reason=None if redrive else session.reason,
        completed_at=None,
        expires_at=None,
    )


def lease_lost(session: SessionRecord, lease: Lease) -> LeaseLostError | None:
    """The error to raise when `session` no longer belongs to `lease`, else None."""
    if session.fence == lease.fence and session.lease_owner == lease.owner and session.status in (
        SessionStatus.RUNNING,
    ):
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


def expected_attempt(write: TaskWrite) -> int:
    """The attempt the stored task must have (at the same fence) for `write` to apply."""
    return write.attempt - 1 if write.kind is TaskWriteKind.START else write.attempt


def task_write_allowed(task: TaskRecord, lease: Lease, write: TaskWrite) -> bool:
    """`status <> COMPLETED AND (fence < mine OR (fence = mine AND attempt = expected))`."""
    if task.status is TaskStatus.COMPLETED:
        return False
    if task.fence < lease.fence:
        return True
    return task.fence == lease.fence and task.attempt == expected_attempt(write)


def classify_rejection(task: TaskRecord, session: SessionRecord, lease: Lease, write: TaskWrite) -> WriteOutcome:
    """Why a fenced task write was rejected, from consistent re-reads of task and session.

    Raises LeaseLostError when a newer claim explains it.
    """
    result_status = _RESULT_STATUS[write.kind]
    same_writer = task.fence == lease.fence and task.attempt == write.attempt
    if same_writer and (result_status is None or task.status is result_status):
        return WriteOutcome.ALREADY_APPLIED
    if task.status is TaskStatus.COMPLETED:
        return WriteOutcome.COMPLETED_ELSEWHERE
    if session.fence > lease.fence:
        err = lease_lost(session, lease)
        assert err is not None
        raise err
    return WriteOutcome.STALE


def _history_entry(task: TaskRecord, status: TaskStatus, now: float, error: ErrorInfo | None) -> tuple[AttemptRecord, ...]:
    entry = AttemptRecord(
        attempt=task.attempt,
        fence=task.fence,
        status=status,
        started_at=task.started_at,
        ended_at=now,
        error=error,
    )
    return (*task.history, entry)[-ATTEMPT_HISTORY_LIMIT:]


def apply_task_write(task: TaskRecord, lease: Lease, write: TaskWrite, now: float) -> TaskRecord:
    """The task after `write` (assumed allowed): the single definition of each transition."""
    base = replace(task, fence=lease.fence, attempt=write.attempt, updated_at=now)
    kind = write.kind
    if kind is TaskWriteKind.START:
        return replace(
            base,
            status=TaskStatus.RUNNING,
            started_at=now,
            ended_at=None,
            not_before=None,
            output=None,
            output_ref=None,
            progress=Progress(),
        )
    if kind is TaskWriteKind.PROGRESS:
        return replace(base, progress=write.progress or task.progress)
    if kind is TaskWriteKind.CHECKPOINT:
        return replace(base, checkpoint=write.checkpoint)
    if kind is TaskWriteKind.COMPLETE:
        done = replace(base, status=TaskStatus.COMPLETED, ended_at=now, output=write.output, not_before=None,
                       progress=write.progress or task.progress)
        return replace(done, history=_history_entry(done, TaskStatus.COMPLETED, now, None))
    if kind is TaskWriteKind.RETRY:
        failed = replace(base, status=TaskStatus.PENDING, ended_at=now, last_error=write.error,
                         not_before=write.not_before)
        return replace(failed, history=_history_entry(failed, TaskStatus.FAILED, now, write.error))
    if kind in (TaskWriteKind.FAIL, TaskWriteKind.SKIP, TaskWriteKind.CANCEL):
        status = _RESULT_STATUS[kind]
        assert status is not None
        error = write.error
        if error is None and write.reason:
            error = ErrorInfo(type=f"orchestrator.{status.value.title()}", message=write.reason, retryable=False)
        ended = replace(base, status=status, ended_at=now, last_error=error or task.last_error, not_before=None)
        if task.status is TaskStatus.RUNNING or kind is TaskWriteKind.FAIL:
            ended = replace(ended, history=_history_entry(ended, status, now, error))
        return ended
    if kind is TaskWriteKind.WAIT:
        return replace(base, status=TaskStatus.WAITING, not_before=write.not_before)
    if kind is TaskWriteKind.WAKE:
        return replace(base, status=TaskStatus.RUNNING)
    if kind is TaskWriteKind.RESET:
        return replace(
            base,
            status=TaskStatus.PENDING,
            attempt_base=task.attempt,
            last_error=None,
            not_before=None,
            started_at=None,
            ended_at=None,
        )
    raise AssertionError(f"unhandled task write kind {kind!r}")
