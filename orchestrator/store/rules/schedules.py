"""Schedules: which slots of a cron expression to start now, and the session id of a slot.

Pure: given a schedule, the time and whether its previous session is unfinished,
`plan_firing` says which slots start and which slot is handled last. Every worker
calls it; the session id of a slot is derived from the schedule's name and the slot
time, so a slot starts exactly one session however many workers fire it.

Cron expressions are read by croniter (5 fields, or 6 with seconds last), in the
schedule's IANA time zone, so "0 9 * * *" in Europe/Berlin follows daylight saving.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from orchestrator.errors import ValidationError
from orchestrator.store.records.flow import ScheduleRecord

__all__ = ["ON_TIME_GRACE", "Firing", "check_schedule", "next_slot", "plan_firing", "slot_session_id"]

ON_TIME_GRACE = 60.0  # a slot this late (at most half its period) still counts as on time


@dataclass(frozen=True, slots=True)
class Firing:
    """Slots to start (oldest first), due slots skipped (counted among the newest
    `max_catch_up + 1` only: a long outage is not walked through), the new last slot."""

    starts: tuple[float, ...] = ()
    skipped: int = 0
    last_slot: float | None = None


def _zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError.bad_value("timezone", name, "an IANA time zone such as UTC or Europe/Berlin",
                                        where) from exc


def check_schedule(record: ScheduleRecord) -> None:
    """The cron expression parses and the time zone exists (raised before anything is written)."""
    where = f"schedule {record.name!r}"
    _zone(record.timezone, where)
    if not croniter.is_valid(record.cron):
        raise ValidationError.bad_value("cron", record.cron, "a cron expression such as '0 * * * *' (minute hour "
                                        "day month weekday) or '*/10 * * * * *' (seconds last)", where)


def _iter(record: ScheduleRecord, at: float) -> croniter:
    start = datetime.fromtimestamp(at, tz=UTC).astimezone(_zone(record.timezone, record.name))
    return croniter(record.cron, start)


def next_slot(record: ScheduleRecord, after: float) -> float:
    """The first slot strictly after `after`."""
    return float(_iter(record, after).get_next(float))


def _due(record: ScheduleRecord, after: float, now: float, most: int) -> list[float]:
    """Up to `most` latest slots s with after < s <= now, oldest first (walks back from now)."""
    it = _iter(record, now + 1e-3)
    out: list[float] = []
    while len(out) < most:
        s = float(it.get_prev(float))
        if s <= after or s > now:
            break
        out.append(s)
    return out[::-1]


def plan_firing(record: ScheduleRecord, now: float, *, previous_unfinished: bool = False) -> Firing:
    """What a worker does for `record` at `now`.

    Due slots are those after `last_slot` (or the creation time) up to `now`. A due slot
    less late than ON_TIME_GRACE and half its period is on time and starts under every
    policy; after an outage the
    missed ones follow `catch_up`: "skip" drops them, "latest" starts the newest,
    "all" starts the newest `max_catch_up`. With `overlap="skip"` nothing starts while
    the previous session is unfinished (the slots are handled as skipped).
    """
    if record.paused:
        return Firing()
    after = record.last_slot if record.last_slot is not None else record.created_at
    due = _due(record, after, now, record.max_catch_up + 1)
    if not due:
        return Firing()
    # _due walks back at most max_catch_up + 1 slots: count the rest only as "more than that"
    total = len(due)
    latest = due[-1]
    if record.catch_up == "all":
        starts = due[-record.max_catch_up:]
    elif record.catch_up == "latest":
        starts = [latest]
    else:
        grace = min(ON_TIME_GRACE, (next_slot(record, latest) - latest) / 2)
        starts = [latest] if now - latest <= grace else []
    if record.overlap == "skip":
        starts = [] if previous_unfinished else starts[-1:]
    return Firing(tuple(starts), total - len(starts), latest)


def slot_session_id(name: str, slot: float) -> str:
    """`schedule.<name>.<UTC slot time>`: the same slot always names the same session."""
    stamp = datetime.fromtimestamp(slot, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"schedule.{name}.{stamp}"
