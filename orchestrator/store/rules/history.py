"""What a session leaves besides its state (events, metrics): checks, and the events operations record.

Writers, metric names and agents go into DynamoDB sort keys joined by '#', so they
must be non-empty and free of '#'; an event's message and data share one item.

The operations a person (or any caller) makes through the store record their own
event, decided here once and written by both backends with the change: `created`,
`signal`, `cancel`, `needs_human`; `fork` is recorded by `orchestrator.fork`. The
functions are pure and return an unkeyed Event; the store gives it its key
(`StoreEventKeys.stamp`).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import replace

from orchestrator.codec import Codec
from orchestrator.errors import PayloadTooLargeError, ValidationError
from orchestrator.store.records import Event, MetricSummary, SessionRecord
from orchestrator.store.rules.limits import Payload
from orchestrator.store.rules.limits import reason as _reason

__all__ = ["StoreEventKeys", "cancel_event", "check_metric_keys", "created_event", "event_data", "forked_event",
           "needs_human_event", "signal_event"]


def _key_part(name: str, value: str, where: str, **ids: str | None) -> None:
    if not isinstance(value, str) or not value or "#" in value:
        raise ValidationError.bad_value(name, value, "a non-empty string without '#'", where, **ids)


def event_data(codec: Codec, event: Event) -> str:
    """The stored text of an event's data; message and data together stay within EVENT_DATA."""
    where = f"event {event.kind} of session {event.session_id}"
    _key_part("writer", event.writer, where, session_id=event.session_id)
    text = codec.encode(dict(event.data), where=f"data of {where}")
    size = len(text.encode("utf-8")) + len(event.message.encode("utf-8"))
    limit = Payload.EVENT_DATA.limit
    assert limit is not None
    if size > limit:
        raise PayloadTooLargeError.of(f"message and data of {where}", size, limit, session_id=event.session_id,
                                      task_id=event.task_id, payload="event_data")
    return text


def check_metric_keys(writer: str, summaries: Sequence[MetricSummary]) -> None:
    _key_part("writer", writer, "metrics")
    for s in summaries:
        where = f"the metric of {s.day} hour {s.hour}"
        _key_part("name", s.name, where)
        _key_part("agent", s.agent, where)


# -- the events of operations ------------------------------------------------------------------


class StoreEventKeys:
    """The writer and sequence of the events one store instance records for its operations.

    An event's key is `at#writer#seq`. A runner's writer is `<owner>.<fence>`; a store's
    is `store-` and 16 random hex digits (64 bits from uuid4) drawn when the store is
    opened, so two processes (or two stores in one process) never share a writer, and
    the sequence, counted per instance, keeps two events of one store apart at the
    same `at` (`next` on an itertools.count is atomic, so store threads share it safely).
    A repeated request (a retry of the same write) repeats the same key.
    """

    def __init__(self) -> None:
        self.writer = f"store-{uuid.uuid4().hex[:16]}"
        self._seq = itertools.count(1)

    def stamp(self, event: Event) -> Event:
        return replace(event, writer=self.writer, seq=next(self._seq))


def created_event(record: SessionRecord, task_count: int) -> Event:
    """`created`: the pipeline and version, how many tasks, project and user, who holds it from birth."""
    parts = [f"session created: pipeline {record.pipeline} v{record.pipeline_version}, {task_count} task(s)"]
    if record.project_id:
        parts.append(f"project {record.project_id}")
    if record.user_id:
        parts.append(f"user {record.user_id}")
    if record.lease_owner:
        parts.append(f"held by {record.lease_owner} (fence {record.fence})")
    data = {"pipeline": record.pipeline, "pipeline_version": record.pipeline_version, "tasks": task_count,
            "project_id": record.project_id, "user_id": record.user_id, "status": record.status.value,
            "owner": record.lease_owner}
    return Event(record.session_id, "created", record.created_at, message=", ".join(parts), data=data)


def signal_event(session_id: str, task_id: str, name: str, signal_seq: int, at: float) -> Event:
    """`signal`: which task, which name, its sequence number; never the payload (it may be large or secret)."""
    return Event(session_id, "signal", at, task_id=task_id,
                 message=f"signal {name!r} sent to task {task_id} (sequence {signal_seq})",
                 data={"signal": name, "signal_seq": signal_seq})


def cancel_event(before: SessionRecord, ended_now: bool, reason: str, at: float) -> Event:
    """`cancel`: the reason, the status the session had, and whether it ended at once or its owner stops it."""
    was = before.status.value
    why = _reason(reason) or ""
    if ended_now:
        message = f"cancelled at once (it was {was}, nobody held it): {why}"
    else:
        message = (f"cancel requested (it was {was}, held by {before.lease_owner or '-'} at fence {before.fence}); "
                   f"its owner stops it at its next heartbeat: {why}")
    return Event(before.session_id, "cancel", at, message=message, level="WARNING",
                 data={"reason": why, "was": was, "ended": ended_now, "owner": before.lease_owner})


def needs_human_event(session_id: str, reason: str | None, at: float, *, by_claim_of: str | None = None) -> Event:
    """`needs_human`: the flag set (with its reason) or cleared, by itself or by a forced claim (`resume --force`)."""
    if reason is None:
        how = f" by the forced claim of {by_claim_of}" if by_claim_of else ""
        return Event(session_id, "needs_human", at, message=f"needs-human cleared{how}: crons may redrive it again",
                     data={"needs_human": False, "reason": None, "claimed_by": by_claim_of})
    why = _reason(reason)
    return Event(session_id, "needs_human", at, message=f"flagged needs-human: {why}", level="WARNING",
                 data={"needs_human": True, "reason": why})


def forked_event(session_id: str, source: str, from_task: str, kept: int, total: int, at: float) -> Event:
    """`fork`, on the new session: the session and task it came from, and how much of it was kept."""
    return Event(session_id, "fork", at, task_id=from_task,
                 message=f"forked from session {source} at task {from_task}: kept {kept} completed task(s) of "
                         f"{total}, the rest runs again",
                 data={"source_session": source, "from_task": from_task, "kept": kept, "tasks": total})
