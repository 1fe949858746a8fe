"""Events, metrics and pipeline definitions in the SQLite store.

Functions that run inside a transaction the caller opened (values already encoded).
Rows past their expiry are filtered on read and deleted by `retention.purge`, since
SQLite has no TTL of its own.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime, UTC
from typing import Any

from orchestrator.codec import Codec
from orchestrator.store import rules
from orchestrator.errors import PipelineNotFoundError, SchemaError, ValidationError, VersionMismatchError
from orchestrator.store.records import (
    SCHEMA_VERSION,
    Event,
    MetricSummary,
    NewTask,
    Page,
    PipelineDefinition,
)
from orchestrator.store.sqlite.encoding import EVENT_COLS, METRIC_COLS, dump, event_from_row, metric_from_row

__all__ = [
    "event_rows",
    "get_pipeline",
    "hour_start",
    "insert_events",
    "metric_rows",
    "pipeline_text",
    "put_pipeline",
    "read_events",
    "read_metrics",
    "upsert_metrics",
]

_DAY_S = 86400.0


# -- events ----------------------------------------------------------------------------------


def event_rows(events: Sequence[Event], codec: Codec, retention_days: float) -> list[tuple[Any, ...]]:
    """Encode events before the transaction; each expires `retention_days` after it happened."""
    keep = retention_days * _DAY_S
    return [
        (e.session_id, e.cursor, SCHEMA_VERSION, e.at, e.writer, e.seq, e.kind, e.task_id, e.message,
         rules.event_data(codec, e),
         e.level, e.at + keep)
        for e in events
    ]


def insert_events(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Idempotent per (session, at, writer, seq): the cursor is the key, a repeat is ignored."""
    conn.executemany(
        "INSERT OR IGNORE INTO events (session_id, cursor, v, at, writer, seq, kind, task_id, message, "
        "data, level, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def read_events(
    conn: sqlite3.Connection, session_id: str, after: str | None, limit: int, now: float, codec: Codec, where: str
) -> Page[Event]:
    rows = conn.execute(
        f"SELECT {EVENT_COLS} FROM events WHERE session_id = ? AND cursor > ? AND expires_at > ? "
        f"ORDER BY cursor LIMIT ?",
        (session_id, after or "", now, limit + 1),
    ).fetchall()
    items = tuple(event_from_row(row, codec, where) for row in rows[:limit])
    return Page(items, items[-1].cursor if len(rows) > limit else None)


# -- metrics ---------------------------------------------------------------------------------


def hour_start(day: str, hour: int) -> float:
    """Epoch seconds of `day` (YYYY-MM-DD, UTC) at `hour`; ValidationError for a bad one."""
    try:
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except (ValueError, TypeError):
        raise ValidationError(f"metric day {day!r} is not a date; use YYYY-MM-DD (UTC)") from None
    if not isinstance(hour, int) or not 0 <= hour <= 23:
        raise ValidationError(f"metric hour {hour!r} of {day} is out of range; use 0..23 (UTC)")
    return start + hour * 3600.0


def metric_rows(
    writer: str, seq: int, summaries: Sequence[MetricSummary], retention_days: float
) -> list[tuple[Any, ...]]:
    """Validate and encode a writer's counters; each row expires `retention_days` after its hour."""
    rules.check_metric_keys(writer, summaries)
    keep = retention_days * _DAY_S
    return [
        (m.day, m.hour, m.name, m.agent, writer, SCHEMA_VERSION, seq, m.count, m.errors, m.blocked, m.sum_ms,
         m.min_ms, m.max_ms, dump(list(m.buckets)), hour_start(m.day, m.hour) + 3600.0 + keep)
        for m in summaries
    ]


def upsert_metrics(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """A row changes only when the new seq is greater, so a retried write cannot double-count."""
    conn.executemany(
        "INSERT INTO metrics (day, hour, name, agent, writer, v, seq, count, errors, blocked, sum_ms, "
        "min_ms, max_ms, buckets, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (day, hour, name, agent, writer) DO UPDATE SET v = excluded.v, seq = excluded.seq, "
        "count = excluded.count, errors = excluded.errors, blocked = excluded.blocked, "
        "sum_ms = excluded.sum_ms, min_ms = excluded.min_ms, max_ms = excluded.max_ms, "
        "buckets = excluded.buckets, expires_at = excluded.expires_at WHERE excluded.seq > metrics.seq",
        rows,
    )


def read_metrics(
    conn: sqlite3.Connection, day: str, name: str | None, agent: str | None, now: float, where: str
) -> list[MetricSummary]:
    """One summary per (hour, name, agent), summed over writers, in that order."""
    rows = conn.execute(
        f"SELECT {METRIC_COLS} FROM metrics WHERE day = ? AND expires_at > ? "
        f"AND (? IS NULL OR name = ?) AND (? IS NULL OR agent = ?) ORDER BY hour, name, agent",
        (day, now, name, name, agent, agent),
    ).fetchall()
    merged: dict[tuple[int, str, str], MetricSummary] = {}
    for row in rows:
        m = metric_from_row(row, where)
        key = (m.hour, m.name, m.agent)
        merged[key] = merged[key].plus(m) if key in merged else m
    return list(merged.values())


# -- pipelines -------------------------------------------------------------------------------


def pipeline_text(definition: PipelineDefinition, codec: Codec) -> str:
    """The stored form of a definition (inputs through the codec), encoded before the transaction."""
    return dump([
        [t.task_id, t.agent, codec.encode(t.input, where=f"input of task {t.task_id} in pipeline {definition.name}"),
         t.priority, t.max_attempts, list(t.depends_on), t.added_by]
        for t in definition.tasks
    ])


def put_pipeline(conn: sqlite3.Connection, definition: PipelineDefinition, text: str, now: float) -> None:
    """Store once; the same name and version with another digest is refused."""
    name, version, digest = definition.name, definition.version, definition.digest
    row = conn.execute("SELECT digest FROM pipelines WHERE name = ? AND version = ?", (name, version)).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO pipelines (name, version, v, digest, definition, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (name, version, SCHEMA_VERSION, digest, text, definition.created_at or now),
        )
    elif row[0] != digest:
        raise VersionMismatchError.reshaped(name, version, row[0], digest)


def get_pipeline(conn: sqlite3.Connection, name: str, version: str, codec: Codec, where: str) -> PipelineDefinition:
    row = conn.execute(
        "SELECT v, definition, created_at FROM pipelines WHERE name = ? AND version = ?", (name, version)
    ).fetchone()
    if row is None:
        raise PipelineNotFoundError.missing(name, version, where)
    what = f"pipeline {name} version {version} in {where}"
    if int(row[0]) > SCHEMA_VERSION:
        raise SchemaError.newer(what, int(row[0]), SCHEMA_VERSION, pipeline=name)
    try:
        tasks = tuple(
            NewTask(task_id=tid, agent=agent, input=codec.decode(inp), priority=prio, max_attempts=att,
                    depends_on=tuple(deps), added_by=added_by)
            for tid, agent, inp, prio, att, deps, added_by in json.loads(row[1])
        )
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"{what} cannot be decoded ({exc}); store it again with put_pipeline",
                          pipeline=name) from exc
    return PipelineDefinition(name=name, version=version, tasks=tasks, created_at=row[2])
