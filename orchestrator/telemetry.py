"""OpenTelemetry spans and metrics, and structured logging, behind one small object.

The only module that imports `opentelemetry`, and only its API: users bring the SDK
(and its exporters). Without an SDK every call is a cheap no-op. Attribute names are
namespaced (`orchestrator.session.id`, `orchestrator.task.id`, `orchestrator.agent`,
`orchestrator.attempt`, `orchestrator.pipeline`).

A session's W3C trace context is stored on the session (`Telemetry.inject()`), so a
resumed run's session span links to the original trace (`links_from=`).

Logging is standard `logging`: `get_logger()` returns an adapter that puts
`session_id` and `task_id` on every record, and `JsonFormatter` writes one JSON object
per line (timestamp, level, session_id, task_id, message, phase, progress, extras).
"""

from __future__ import annotations

import enum
import json
import logging
import math
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from orchestrator.codec import REDACTED, Secret

__all__ = [
    "ATTR_AGENT",
    "ATTR_ATTEMPT",
    "ATTR_PIPELINE",
    "ATTR_RESUMED",
    "ATTR_SESSION_ID",
    "ATTR_STATUS",
    "ATTR_TASK_ID",
    "ContextLogger",
    "JsonFormatter",
    "LibraryFilter",
    "SpanHandle",
    "Telemetry",
    "get_logger",
]

ATTR_SESSION_ID = "orchestrator.session.id"
ATTR_TASK_ID = "orchestrator.task.id"
ATTR_AGENT = "orchestrator.agent"
ATTR_ATTEMPT = "orchestrator.attempt"
ATTR_PIPELINE = "orchestrator.pipeline"
ATTR_RESUMED = "orchestrator.resumed"
ATTR_STATUS = "orchestrator.status"

_INSTRUMENTATION = "orchestrator"
_VERSION = "0.1.0"
_W3C = TraceContextTextMapPropagator()

AttributeValue = str | bool | int | float


class SpanHandle:
    """What the engine may do with an open span: events, exceptions, status, context."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def add_event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        """A point in time on the span (a retry, a lease change, a signal)."""
        self.span.add_event(name, attributes=dict(attributes or {}))

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.span.set_attribute(key, value)

    def record_exception(self, exc: BaseException, *, set_error: bool = True) -> None:
        """Record `exc` as an exception event and (by default) mark the span as failed."""
        self.span.record_exception(exc)
        if set_error:
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))

    def set_status_ok(self) -> None:
        self.span.set_status(Status(StatusCode.OK))

    def set_error(self, description: str) -> None:
        self.span.set_status(Status(StatusCode.ERROR, description))

    def inject(self) -> dict[str, str]:
        """The W3C trace context (`traceparent`, `tracestate`) of this span; {} if not sampled/no-op."""
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, context=trace.set_span_in_context(self.span))
        return carrier

    @property
    def recording(self) -> bool:
        return self.span.is_recording()


class Telemetry:
    """Spans per session and task attempt, and counters/histograms, via the OTel API.

    Pass explicit providers (tests, or an app that does not set the global ones);
    otherwise the global providers are used, which are no-ops until an SDK is set up.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: otel_metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(_INSTRUMENTATION, _VERSION, tracer_provider=tracer_provider)
        meter = otel_metrics.get_meter(_INSTRUMENTATION, _VERSION, meter_provider=meter_provider)
        self._tasks = meter.create_counter(
            "orchestrator.tasks", unit="{task}", description="Task attempts that ended, by agent and status"
        )
        self._task_duration = meter.create_histogram(
            "orchestrator.task.duration", unit="s", description="Duration of task attempts"
        )
        self._sessions = meter.create_counter(
            "orchestrator.sessions", unit="{session}", description="Sessions that ended, by status"
        )

    @contextmanager
    def session_span(
        self,
        session_id: str,
        pipeline: str,
        *,
        resumed: bool = False,
        links_from: Mapping[str, str] | None = None,
    ) -> Iterator[SpanHandle]:
        """A span for one run of a session; linked to the stored trace context if given.

        An exception escaping the block is recorded and sets the status to ERROR.
        """
        links: list[Link] = []
        if links_from:
            ctx = _W3C.extract(carrier=dict(links_from))
            linked = trace.get_current_span(ctx).get_span_context()
            if linked.is_valid:
                links.append(Link(linked, {"orchestrator.link": "resumed_from"}))
        attributes: dict[str, AttributeValue] = {
            ATTR_SESSION_ID: session_id,
            ATTR_PIPELINE: pipeline,
            ATTR_RESUMED: resumed,
        }
        with self._tracer.start_as_current_span(
            f"session {pipeline}", kind=SpanKind.INTERNAL, attributes=attributes, links=links
        ) as span:
            yield SpanHandle(span)

    @contextmanager
    def task_span(self, session_id: str, task_id: str, agent: str, attempt: int) -> Iterator[SpanHandle]:
        """A span for one attempt of a task, child of the current (session) span."""
        attributes: dict[str, AttributeValue] = {
            ATTR_SESSION_ID: session_id,
            ATTR_TASK_ID: task_id,
            ATTR_AGENT: agent,
            ATTR_ATTEMPT: attempt,
        }
        with self._tracer.start_as_current_span(
            f"task {task_id}", kind=SpanKind.INTERNAL, attributes=attributes
        ) as span:
            yield SpanHandle(span)

    def inject(self) -> dict[str, str]:
        """The W3C trace context of the current span, to store on the session."""
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
        return carrier

    def task_finished(self, agent: str, status: str, duration_s: float | None) -> None:
        """Count a task attempt that ended (`status`: COMPLETED, FAILED, RETRY, ...)."""
        attrs = {ATTR_AGENT: agent, ATTR_STATUS: status}
        self._tasks.add(1, attrs)
        if duration_s is not None and math.isfinite(duration_s):
            self._task_duration.record(max(0.0, duration_s), attrs)

    def session_finished(self, status: str, pipeline: str | None = None) -> None:
        """Count a session that ended with `status`."""
        attrs: dict[str, AttributeValue] = {ATTR_STATUS: status}
        if pipeline is not None:
            attrs[ATTR_PIPELINE] = pipeline
        self._sessions.add(1, attrs)


# -- logging -------------------------------------------------------------------------

class ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that puts `session_id` and `task_id` (and bound fields) on records."""

    def __init__(self, logger: logging.Logger, extra: Mapping[str, object]) -> None:
        super().__init__(logger, dict(extra))

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        merged: dict[str, object] = dict(self.extra or {})
        merged.update(kwargs.get("extra") or {})
        kwargs["extra"] = merged
        return msg, kwargs

    def bind(self, **fields: object) -> ContextLogger:
        """A new adapter with more fields (e.g. `task_id=`) on every record."""
        merged: dict[str, object] = dict(self.extra or {})
        merged.update(fields)
        return ContextLogger(self.logger, merged)


def get_logger(
    name: str, *, session_id: str | None = None, task_id: str | None = None, **fields: object
) -> ContextLogger:
    """A logger whose records always carry `session_id` and `task_id` (None when unknown)."""
    return ContextLogger(logging.getLogger(name), {"session_id": session_id, "task_id": task_id, **fields})


#: Libraries whose DEBUG and INFO records carry credentials or whole requests: botocore
#: logs the signed request (access key id, session token) and every parameter, PynamoDB
#: every request's arguments, urllib3 each connection.
NOISY_LIBRARIES: tuple[str, ...] = ("botocore", "boto3", "s3transfer", "urllib3", "pynamodb")


class LibraryFilter(logging.Filter):
    """A handler filter that drops records below `level` (WARNING) from `libraries`, so
    `--log-level DEBUG` shows the SDK's own records, not AWS credentials or item bodies."""

    def __init__(self, level: int = logging.WARNING, libraries: tuple[str, ...] = NOISY_LIBRARIES) -> None:
        super().__init__()
        self.level = level
        self.libraries = libraries

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.level:
            return True
        name = record.name
        return not any(name == lib or name.startswith(lib + ".") for lib in self.libraries)


_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName", "session_id", "task_id", "phase", "progress"}
)


def _iso(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _progress(value: object) -> dict[str, int] | None:
    """`{"current", "total", "percentage"}` from a Progress, a mapping or a (current, total) pair."""
    current: object
    total: object
    if isinstance(value, Mapping):
        current, total = value.get("current"), value.get("total")
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        current, total = value
    else:  # a Progress, or anything else with int `current` and `total`
        current, total = getattr(value, "current", None), getattr(value, "total", None)
    if not isinstance(current, int) or not isinstance(total, int):
        return None
    percentage = int(100 * min(current, total) / total) if total > 0 else 0
    return {"current": current, "total": total, "percentage": percentage}


def _json_default(value: object) -> object:
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, shaped like common progress-tracking log records.

    `{"timestamp": "2025-11-15T20:00:00.000Z", "level": "INFO", "session_id": ...,
    "task_id": ..., "message": ..., "phase": ..., "progress": {"current": 5, "total":
    29, "percentage": 17}, ...extra fields}`; `phase` and `progress` only when given,
    `exception` when the record has exc_info. `Secret` values print as [REDACTED].
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "timestamp": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "session_id": getattr(record, "session_id", None),
            "task_id": getattr(record, "task_id", None),
            "message": record.getMessage(),
        }
        phase = getattr(record, "phase", None)
        if phase is not None:
            out["phase"] = phase
        progress = _progress(getattr(record, "progress", None))
        if progress is not None:
            out["progress"] = progress
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=_json_default, ensure_ascii=False)
