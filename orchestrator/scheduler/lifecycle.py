"""What a run says about its lifecycle, in the history and in the logs, from one place.

A claim (or redrive, or takeover naming both owners and both fences), a lost lease, the
plan's notes (retries, failures, waits, wakes, cancels) and the end each become one
session event and one record of the `orchestrator.lifecycle` logger, whose `extra` carries
the ids (`session_id`, `task_id`) and the numbers (`owner`, `fence`, `attempt`, ...), at
INFO (WARNING for a lost lease).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from orchestrator.clock import format_ts
from orchestrator.errors import LeaseLostError
from orchestrator.events import EventBuffer
from orchestrator.scheduler.step import Finish, Note
from orchestrator.store.records import Lease, SessionStatus, TaskStatus

__all__ = ["Lifecycle", "claim_kind"]

_log = logging.getLogger("orchestrator.lifecycle")

#: Note data copied into a log record's extra (under these names), when present.
_NOTE_FIELDS = {"attempt": "attempt", "error": "error_type", "delay": "delay_s", "signal": "signal"}


def claim_kind(lease: Lease, *, redrive: bool, abandoned: bool) -> str:
    """How a run got its session: `takeover` (from an owner whose lease expired), `redrive` or `claim`."""
    previous = lease.previous
    if abandoned or (previous is not None and previous.status is SessionStatus.RUNNING):
        return "takeover"
    return "redrive" if redrive else "claim"


class Lifecycle:
    """Records one run's lifecycle as session events and `orchestrator.lifecycle` log records."""

    def __init__(self, events: EventBuffer, session_id: str, pipeline: str) -> None:
        self._events = events
        self._session_id = session_id
        self._pipeline = pipeline

    def _emit(self, kind: str, message: str, *, level: str = "INFO", task_id: str | None = None,
              data: Mapping[str, Any] | None = None, log: Mapping[str, Any] | None = None,
              log_message: str | None = None) -> None:
        """One event (at `level`) and one log record: INFO, or WARNING for a lost lease, the one
        moment that needs an operator; retries and failures are the session's business, not the process's."""
        self._events.add(kind, message, task_id=task_id, level=level, data=dict(data or {}))
        extra = {"session_id": self._session_id, "task_id": task_id, "pipeline": self._pipeline, "event": kind,
                 **(log or {})}
        _log.log(logging.WARNING if kind == "lease_lost" else logging.INFO, "session %s: %s", self._session_id,
                 log_message or message, extra=extra)

    def claimed(self, lease: Lease, *, redrive: bool, abandoned: bool) -> None:
        """Who holds the session from now on, and how it got it (a takeover names both owners)."""
        how = claim_kind(lease, redrive=redrive, abandoned=abandoned)
        until = "without expiry" if lease.expires_at is None else f"until {format_ts(lease.expires_at)}"
        previous = lease.previous
        data: dict[str, Any] = {"owner": lease.owner, "fence": lease.fence, "lease_expires_at": lease.expires_at,
                                "how": how}
        if previous is not None:
            data.update(previous_owner=previous.owner, previous_fence=previous.fence,
                        previous_status=previous.status.value)
        log = {"owner": lease.owner, "fence": lease.fence, "how": how}
        if how == "takeover":
            before = previous.owner if previous is not None and previous.owner else "an unknown owner"
            old_fence = previous.fence if previous is not None else lease.fence - 1
            expired = ("" if previous is None or previous.lease_expires_at is None
                       else f" (its lease expired at {format_ts(previous.lease_expires_at)})")
            data.setdefault("previous_fence", old_fence)
            data.setdefault("previous_owner", None)
            self._emit("takeover", f"{lease.owner} took the session over from {before} at fence {lease.fence} "
                       f"({until}): {before} (fence {old_fence}) stopped renewing its lease{expired}",
                       level="WARNING", data=data,
                       log={**log, "previous_owner": data["previous_owner"], "previous_fence": old_fence})
            return
        data["redrive"] = redrive
        self._emit("claim", f"{lease.owner} holds the session at fence {lease.fence} ({until}, {how})",
                   data=data, log=log)

    def lost(self, lease: Lease, error: LeaseLostError) -> None:
        """This run lost its lease: which fence it held, and who holds the session now if known."""
        holder = getattr(error, "owner", None)
        fence = getattr(error, "fence", None)
        now_held = (f"; {holder} holds it at fence {fence}" if holder
                    else f"; fence {fence} holds it" if fence is not None and fence != lease.fence else "")
        data = {"owner": lease.owner, "fence": lease.fence, "new_owner": holder,
                "new_fence": fence if fence != lease.fence else None, "error": str(error)}
        message = f"{lease.owner} lost its lease at fence {lease.fence}{now_held}"
        self._emit("lease_lost", message, level="WARNING", data=data,
                   log={"owner": lease.owner, "fence": lease.fence, "new_owner": holder},
                   log_message=f"{message}: {error}")

    def noted(self, note: Note) -> None:
        """One of the plan's notes: a retry, a failure, a wait, a wake, a cancel..."""
        log = {name: note.data[key] for key, name in _NOTE_FIELDS.items() if key in note.data}
        self._emit(note.kind, note.message, level=note.level, task_id=note.task_id, data=note.data, log=log)

    def waiting(self, wake_at: float | None) -> None:
        until = "a signal arrives" if wake_at is None else f"a signal arrives or {format_ts(wake_at)}"
        self._emit("wait", f"session waits until {until}; its lease is released", data={"wake_at": wake_at},
                   log={"status": SessionStatus.WAITING.value})

    def finished(self, end: Finish, statuses: Mapping[str, TaskStatus], duration: float) -> None:
        """The session's end: its status and reason, how long this run took, what a cancel stopped."""
        data: dict[str, Any] = {"status": end.status.value, "needs_human": end.needs_human_reason is not None,
                                "reason": end.reason, "duration_s": duration}
        message = f"session {end.status.value}" + (f": {end.reason}" if end.reason else "")
        if end.status is SessionStatus.CANCELLED:
            cancelled = sum(1 for s in statuses.values() if s is TaskStatus.CANCELLED)
            data["cancelled_tasks"] = cancelled
            message += f" ({cancelled} task(s) cancelled)"
        self._emit("end", message, level="INFO" if end.status is SessionStatus.COMPLETED else "WARNING",
                   data=data, log={"status": end.status.value, "duration_s": round(duration, 3)},
                   log_message=f"{end.status.value} after {duration:.2f}s in this run" + message.removeprefix(
                       f"session {end.status.value}"))
