"""Checks of what a session leaves besides its state (events, metrics), the same on every backend.

Writers, metric names and agents go into DynamoDB sort keys joined by '#', so they
must be non-empty and free of '#'; an event's message and data share one item.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.codec import Codec
from orchestrator.errors import PayloadTooLargeError, ValidationError
from orchestrator.store.records import Event, MetricSummary
from orchestrator.store.rules.limits import Payload

__all__ = ["check_metric_keys", "event_data"]


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
