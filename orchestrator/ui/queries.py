"""What the pages show, read from the store: session lists, one session, metrics.

The store lists sessions by status (oldest first) or by project (newest first). The
user, pipeline-type and needs-human filters are applied here to the pages it returns
(reading further pages until one is full, bounded): when the store gains listings by
user and by pipeline type, `_source` is where they plug in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from orchestrator.cli._common import decode_cursor, encode_cursor
from orchestrator.errors import ValidationError
from orchestrator.metrics import SESSION_METRIC, agent_stats, day_totals, project_stats
from orchestrator.store import (
    Event,
    MetricSummary,
    ProjectStats,
    SessionRecord,
    SessionSnapshot,
    SessionStatus,
    Store,
)
from orchestrator.ui.layout import Layout, layout_dag

__all__ = [
    "LIST_ORDER",
    "MetricsView",
    "SessionFilter",
    "SessionList",
    "SessionView",
    "fingerprint",
    "list_sessions",
    "load_metrics",
    "load_session_view",
]

#: Statuses listed when none is chosen: the ones that need attention first.
LIST_ORDER = (SessionStatus.RUNNING, SessionStatus.WAITING, SessionStatus.PENDING, SessionStatus.FAILED,
              SessionStatus.COMPLETED, SessionStatus.CANCELLED)
_MAX_STORE_PAGES = 20  # store pages read to fill one filtered page
_EVENT_PAGES = 10
_EVENT_PAGE = 200
_EVENTS_SHOWN = 300


def fingerprint(*parts: Any) -> str:
    """A short digest of what a live fragment shows: equal digests, nothing to redraw."""
    return hashlib.sha1(repr(parts).encode(), usedforsecurity=False).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SessionFilter:
    status: SessionStatus | None = None
    project: str | None = None
    user: str | None = None
    pipeline_type: str | None = None
    needs_human: bool = False
    cursor: str | None = None
    limit: int = 50

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> SessionFilter:
        """The filter of a list URL's query; a bad status or limit raises ValidationError."""
        def text(name: str) -> str | None:
            value = params.get(name, "").strip()
            return value or None

        status = text("status")
        if status is not None and status.upper() not in SessionStatus.__members__:
            raise ValidationError.bad_value("status", status, f"one of {', '.join(SessionStatus.__members__)}",
                                            "the sessions filter")
        raw_limit = text("limit") or "50"
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
            raise ValidationError.bad_value("limit", raw_limit, "a whole number from 1 to 500", "the sessions filter")
        return cls(status=SessionStatus(status.upper()) if status else None, project=text("project"),
                   user=text("user"), pipeline_type=text("type"), needs_human=params.get("needs_human") == "1",
                   cursor=text("cursor"), limit=int(raw_limit))

    def query(self, **changes: Any) -> str:
        """This filter as a URL query (`cursor` dropped unless changed in)."""
        f = replace(self, cursor=None)
        f = replace(f, **changes)
        pairs = {"status": f.status.value if f.status else None, "project": f.project, "user": f.user,
                 "type": f.pipeline_type, "needs_human": "1" if f.needs_human else None, "cursor": f.cursor,
                 "limit": str(f.limit) if f.limit != 50 else None}
        return urlencode({k: v for k, v in pairs.items() if v})

    def keeps(self, s: SessionRecord) -> bool:
        return ((self.status is None or s.status is self.status)
                and (self.user is None or s.user_id == self.user)
                and (self.pipeline_type is None or s.pipeline_type == self.pipeline_type)
                and (not self.needs_human or s.needs_human))

    @property
    def by_owner(self) -> bool:
        """Read through the store's user or type index (`Store.find_sessions`)."""
        return self.project is None and (self.user is not None or self.pipeline_type is not None)

    @property
    def narrowed(self) -> bool:
        return any((self.status, self.project, self.user, self.pipeline_type, self.needs_human))


@dataclass(frozen=True, slots=True)
class SessionList:
    items: tuple[SessionRecord, ...]
    cursor: str | None  # the next page's, None on the last page
    now: float


async def list_sessions(store: Store, f: SessionFilter) -> SessionList:
    """One page of sessions matching `f`, and the cursor of the next."""
    state = decode_cursor(f.cursor) if f.cursor else {}
    statuses = [SessionStatus.FAILED] if f.needs_human and f.status is None else (
        [f.status] if f.status else list(LIST_ORDER))
    items: list[SessionRecord] = []
    index, inner = int(state.get("i", 0)), state.get("c")
    for _ in range(_MAX_STORE_PAGES):
        if len(items) >= f.limit or index >= len(statuses):
            break
        page = await _source(store, f, statuses[index], f.limit - len(items), inner)
        items.extend(s for s in page[0] if f.keeps(s))
        inner = page[1]
        if inner is None:
            index += 1
            if f.project is not None or f.by_owner:
                index = len(statuses)  # one listing covers every status
    done = index >= len(statuses)
    cursor = None if done else encode_cursor({"i": index, "c": inner})
    return SessionList(tuple(items), cursor, store.clock.now())


async def _source(store: Store, f: SessionFilter, status: SessionStatus, limit: int,
                  cursor: str | None) -> tuple[tuple[SessionRecord, ...], str | None]:
    """The store listing a filter reads from: by project, by user or type, else by status."""
    if f.project is not None:
        page = await store.list_project_sessions(f.project, limit=limit, cursor=cursor)
    elif f.by_owner:
        page = await store.find_sessions(user_id=f.user, pipeline_type=f.pipeline_type, status=f.status,
                                         limit=limit, cursor=cursor)
    else:
        page = await store.list_sessions(status, limit=limit, cursor=cursor)
    return page.items, page.cursor


@dataclass(frozen=True, slots=True)
class SessionView:
    snapshot: SessionSnapshot
    layout: Layout
    events: tuple[Event, ...]  # the latest `_EVENTS_SHOWN`, oldest first
    events_total: int
    now: float

    @property
    def fingerprint(self) -> str:
        s = self.snapshot.session
        tasks = tuple((t.task_id, t.status.value, t.updated_at, t.attempt) for t in self.snapshot.tasks.values())
        return fingerprint(s.status.value, s.updated_at, s.fence, s.signal_seq, s.needs_human, tasks,
                           self.events_total)


async def load_session_view(store: Store, session_id: str) -> SessionView:
    """A session with its tasks (laid out) and its latest events."""
    snapshot = await store.load_session(session_id)
    layout = layout_dag({t.task_id: t.depends_on for t in snapshot.tasks.values()})
    events: list[Event] = []
    after: str | None = None
    total = 0
    for _ in range(_EVENT_PAGES):
        page = await store.read_events(session_id, after=after, limit=_EVENT_PAGE)
        total += len(page.items)
        events = (events + list(page.items))[-_EVENTS_SHOWN:]
        if page.cursor is None:
            break
        after = page.cursor
    return SessionView(snapshot, layout, tuple(events), total, store.clock.now())


@dataclass(frozen=True, slots=True)
class MetricsView:
    day: str
    hourly: Mapping[str, tuple[MetricSummary, ...]]  # agent -> its hours
    totals: tuple[MetricSummary, ...]  # per agent, the whole day
    projects: tuple[ProjectStats, ...]
    days: tuple[str, ...] = field(default=())  # the day and the six before it, for the picker


def parse_day(value: str | None, now: float) -> str:
    """`YYYY-MM-DD` (UTC) from the query, or today's."""
    if not value:
        return datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%d")
    try:
        datetime.strptime(value, "%Y-%m-%d")  # noqa: DTZ007 - only the format is checked
    except ValueError:
        raise ValidationError.bad_value("day", value, "a date as YYYY-MM-DD (UTC)", "the metrics page") from None
    return value


async def load_metrics(store: Store, day: str) -> MetricsView:
    """Per agent and hour, per agent for the day, and per project, for one UTC day."""
    hourly: dict[str, list[MetricSummary]] = {}
    for row in await agent_stats(store, day, by_hour=True):
        hourly.setdefault(row.agent, []).append(row)
    totals = day_totals([row for rows in hourly.values() for row in rows], day)  # from the same read
    prefix = "project:"
    project_ids = sorted({r.agent[len(prefix):] for r in await store.read_metrics(day, name=SESSION_METRIC)
                          if r.agent.startswith(prefix)})
    projects = [await project_stats(store, pid, [day]) for pid in project_ids]
    base = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    days = tuple((base - timedelta(days=n)).strftime("%Y-%m-%d") for n in range(7))
    return MetricsView(day, {a: tuple(rows) for a, rows in hourly.items()}, tuple(totals), tuple(projects), days)
