"""Rows of the SQLite store <-> the records of `orchestrator.store.records`.

User values (inputs, outputs, checkpoints, payloads, metadata) are stored as the
codec's JSON text; the SDK's own structures (progress, errors, attempt history) as
compact JSON. Every row carries its schema version `v`; a newer one is refused before
any of the row is decoded, and a row that fails to decode raises SchemaError naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from orchestrator.codec import Codec
from orchestrator.errors import SchemaError
from orchestrator.store import rules
from orchestrator.store.records import (
    SCHEMA_VERSION,
    AttemptRecord,
    ErrorInfo,
    Event,
    MetricSummary,
    OwnerKind,
    Progress,
    SessionRecord,
    SessionStatus,
    SignalRecord,
    TaskRecord,
    TaskStatus,
)

__all__ = [
    "EVENT_COLS",
    "METRIC_COLS",
    "SESSION_COLS",
    "SESSION_INSERT",
    "SESSION_UPDATE",
    "SIGNAL_COLS",
    "TASK_COLS",
    "TASK_INSERT",
    "RawJSON",
    "dump",
    "error_to_json",
    "event_from_row",
    "history_to_json",
    "metric_from_row",
    "progress_to_json",
    "session_from_row",
    "session_insert_params",
    "session_update_params",
    "signal_from_row",
    "task_from_row",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RawJSON:
    """A stored JSON column carried through a task write undecoded (it is written back as is)."""

    text: str | None


def dump(value: Any) -> str:
    """Compact JSON of SDK-owned structures (never user values: those go through the codec)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _decode(what: str, fn: Callable[[], T], **ids: str) -> T:
    try:
        return fn()
    except SchemaError:
        raise
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise SchemaError(
            f"{what} cannot be decoded ({type(exc).__name__}: {exc}); it was not written by this SDK "
            f"or is damaged. Restore the store from a backup, or delete that row",
            **ids,
        ) from exc


def _check_v(v: int, what: str, **ids: str) -> None:
    if v > SCHEMA_VERSION:
        raise SchemaError.newer(what, v, SCHEMA_VERSION, **ids)


# -- SDK structures ------------------------------------------------------------------------


def progress_to_json(p: Progress) -> str:
    return dump([p.current, p.total, p.phase, p.step])


def _progress(text: str) -> Progress:
    current, total, phase, step = json.loads(text)
    return Progress(int(current), int(total), phase, step)


def _error_dict(e: ErrorInfo) -> list[Any]:
    return [e.type, e.message, e.traceback, e.retryable]


def _error_from(obj: Any) -> ErrorInfo | None:
    if obj is None:
        return None
    type_, message, traceback, retryable = obj
    return ErrorInfo(type=type_, message=message, traceback=traceback, retryable=bool(retryable))


def error_to_json(e: ErrorInfo | None) -> str | None:
    return None if e is None else dump(_error_dict(e))


def history_to_json(history: Sequence[AttemptRecord]) -> str:
    return dump(
        [
            [h.attempt, h.fence, h.status.value, h.started_at, h.ended_at,
             None if h.error is None else _error_dict(h.error)]
            for h in history
        ]
    )


def _history(text: str) -> tuple[AttemptRecord, ...]:
    return tuple(
        AttemptRecord(
            attempt=int(a), fence=int(f), status=TaskStatus(s), started_at=st, ended_at=en, error=_error_from(err)
        )
        for a, f, s, st, en, err in json.loads(text)
    )


# -- sessions ------------------------------------------------------------------------------

SESSION_COLS = (
    "session_id, v, pipeline, pipeline_version, status, owner_kind, input, project_id, user_id, "
    "pipeline_type, progress, current_agents, created_at, updated_at, completed_at, lease_owner, "
    "lease_expires_at, fence, signal_seq, wait_seq, wake_at, redrive_count, max_redrives, needs_human, "
    "needs_human_reason, cancel_requested, reason, trace_context, metadata, expires_at"
)

SESSION_INSERT = (
    f"INSERT INTO sessions ({SESSION_COLS}, ttl_seconds, status_time) "
    f"VALUES ({', '.join('?' * 32)})"
)

SESSION_UPDATE = (
    "UPDATE sessions SET v = ?, status = ?, progress = ?, current_agents = ?, updated_at = ?, "
    "completed_at = ?, lease_owner = ?, lease_expires_at = ?, fence = ?, signal_seq = ?, wait_seq = ?, "
    "wake_at = ?, redrive_count = ?, needs_human = ?, needs_human_reason = ?, cancel_requested = ?, "
    "reason = ?, expires_at = ?, status_time = ? WHERE session_id = ?"
)


def session_insert_params(
    s: SessionRecord, *, input_text: str, trace_text: str, metadata_text: str, ttl_seconds: float | None
) -> tuple[Any, ...]:
    return (
        s.session_id, SCHEMA_VERSION, s.pipeline, s.pipeline_version, s.status.value, s.owner_kind.value,
        input_text, s.project_id, s.user_id, s.pipeline_type, progress_to_json(s.progress),
        dump(list(s.current_agents)), s.created_at, s.updated_at, s.completed_at, s.lease_owner,
        s.lease_expires_at, s.fence, s.signal_seq, s.wait_seq, s.wake_at, s.redrive_count, s.max_redrives,
        int(s.needs_human), s.needs_human_reason, int(s.cancel_requested), s.reason, trace_text,
        metadata_text, s.expires_at, ttl_seconds, rules.status_time(s),
    )


def session_update_params(s: SessionRecord) -> tuple[Any, ...]:
    """Every column a session write may change; input, metadata and trace context are kept."""
    return (
        SCHEMA_VERSION, s.status.value, progress_to_json(s.progress), dump(list(s.current_agents)),
        s.updated_at, s.completed_at, s.lease_owner, s.lease_expires_at, s.fence, s.signal_seq, s.wait_seq,
        s.wake_at, s.redrive_count, int(s.needs_human), s.needs_human_reason, int(s.cancel_requested),
        s.reason, s.expires_at, rules.status_time(s), s.session_id,
    )


def session_from_row(row: Sequence[Any], codec: Codec, where: str) -> SessionRecord:
    sid = str(row[0])
    what = f"session {sid} in {where}"
    _check_v(int(row[1]), what, session_id=sid)

    def build() -> SessionRecord:
        return SessionRecord(
            session_id=sid, schema_version=int(row[1]), pipeline=row[2], pipeline_version=row[3],
            status=SessionStatus(row[4]), owner_kind=OwnerKind(row[5]), input=codec.decode(row[6]),
            project_id=row[7], user_id=row[8], pipeline_type=row[9], progress=_progress(row[10]),
            current_agents=tuple(json.loads(row[11])), created_at=row[12], updated_at=row[13],
            completed_at=row[14], lease_owner=row[15], lease_expires_at=row[16], fence=int(row[17]),
            signal_seq=int(row[18]), wait_seq=int(row[19]), wake_at=row[20], redrive_count=int(row[21]),
            max_redrives=int(row[22]), needs_human=bool(row[23]), needs_human_reason=row[24],
            cancel_requested=bool(row[25]), reason=row[26], trace_context=json.loads(row[27]),
            metadata=codec.decode(row[28]) or {}, expires_at=row[29],
        )

    return _decode(what, build, session_id=sid)


# -- tasks ---------------------------------------------------------------------------------

TASK_COLS = (
    "task_id, v, agent, status, input, priority, max_attempts, fence, attempt, attempt_base, not_before, "
    "last_error, history, started_at, ended_at, output, progress, checkpoint, added_by, updated_at, waiting_for"
)

TASK_INSERT = (
    "INSERT INTO tasks (session_id, task_id, v, agent, status, input, priority, max_attempts, fence, "
    "attempt, attempt_base, history, progress, added_by, updated_at) "
    "VALUES (?, ?, ?, ?, 'PENDING', ?, ?, ?, 0, 0, 0, '[]', '[0,0,null,null]', ?, ?)"
)


def task_from_row(
    row: Sequence[Any],
    session_id: str,
    codec: Codec,
    where: str,
    depends_on: tuple[str, ...] = (),
    *,
    raw: bool = False,
) -> TaskRecord:
    """Decode a task row; with `raw`, input/output/checkpoint stay `RawJSON` (the write path)."""
    tid = str(row[0])
    what = f"task {tid} of session {session_id} in {where}"
    _check_v(int(row[1]), what, session_id=session_id, task_id=tid)
    value: Callable[[str | None], Any] = RawJSON if raw else codec.decode

    def build() -> TaskRecord:
        return TaskRecord(
            task_id=tid, agent=row[2], status=TaskStatus(row[3]), input=value(row[4]), priority=int(row[5]),
            max_attempts=int(row[6]), fence=int(row[7]), attempt=int(row[8]), attempt_base=int(row[9]),
            not_before=row[10], last_error=_error_from(json.loads(row[11])) if row[11] else None,
            history=_history(row[12]), started_at=row[13], ended_at=row[14], output=value(row[15]),
            progress=_progress(row[16]), checkpoint=value(row[17]), depends_on=depends_on, added_by=row[18],
            updated_at=row[19], waiting_for=row[20],
        )

    return _decode(what, build, session_id=session_id, task_id=tid)


# -- signals, events, metrics --------------------------------------------------------------

SIGNAL_COLS = "task_id, name, v, payload, seq, sent_at"


def signal_from_row(row: Sequence[Any], session_id: str, codec: Codec, where: str) -> SignalRecord:
    what = f"signal {row[1]!r} for task {row[0]} of session {session_id} in {where}"
    _check_v(int(row[2]), what, session_id=session_id, task_id=str(row[0]))
    return _decode(
        what,
        lambda: SignalRecord(task_id=row[0], name=row[1], payload=codec.decode(row[3]), seq=int(row[4]),
                             sent_at=row[5]),
        session_id=session_id, task_id=str(row[0]),
    )


EVENT_COLS = "session_id, v, at, writer, seq, kind, task_id, message, data, level"


def event_from_row(row: Sequence[Any], codec: Codec, where: str) -> Event:
    sid = str(row[0])
    what = f"an event of session {sid} in {where}"
    _check_v(int(row[1]), what, session_id=sid)
    return _decode(
        what,
        lambda: Event(session_id=sid, at=row[2], writer=row[3], seq=int(row[4]), kind=row[5], task_id=row[6],
                      message=row[7], data=codec.decode(row[8]) or {}, level=row[9]),
        session_id=sid,
    )


METRIC_COLS = "v, day, hour, name, agent, count, errors, blocked, sum_ms, min_ms, max_ms, buckets"


def metric_from_row(row: Sequence[Any], where: str) -> MetricSummary:
    what = f"metric {row[3]}/{row[4]} of {row[1]} hour {row[2]} in {where}"
    _check_v(int(row[0]), what)
    return _decode(
        what,
        lambda: MetricSummary(day=row[1], hour=int(row[2]), name=row[3], agent=row[4], count=int(row[5]),
                              errors=int(row[6]), blocked=int(row[7]), sum_ms=float(row[8]), min_ms=row[9],
                              max_ms=row[10], buckets=tuple(int(b) for b in json.loads(row[11]))),
    )
