"""Schedules: add, pause, resume, delete, trigger, and fire the due slots (every worker does).

`fire_schedules` is what each `worker` (and the Lambda worker handler) runs every few
seconds: for every schedule of a pipeline it can run, the rulebook
(`rules.schedules.plan_firing`) says which slots start; each slot's session id is
derived from the schedule and the slot time, so however many workers fire it, a slot
creates one session; the schedule's last slot then advances with a write conditioned
on the version read, and the loser of that race reads it again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

from orchestrator.errors import ScheduleNotFoundError, SessionNotFoundError, SessionStateError, ValidationError
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, submit
from orchestrator.store.protocol import FlowStore, Store
from orchestrator.store.records import SessionStatus
from orchestrator.store.records.flow import CatchUp, Overlap, ScheduleRecord
from orchestrator.store.rules.schedules import check_schedule, next_slot, plan_firing, slot_session_id

__all__ = [
    "FireReport",
    "add_schedule",
    "delete_schedule",
    "fire_schedules",
    "flow_store",
    "list_schedules",
    "next_run",
    "pause_schedule",
    "resume_schedule",
    "trigger_schedule",
]

_log = logging.getLogger("orchestrator.schedules")
_FINAL = (SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED)
_SAVE_TRIES = 5


def flow_store(store: Store) -> FlowStore:
    """`store` as a FlowStore (both backends are), or a clear error."""
    if not isinstance(store, FlowStore):
        raise ValidationError(f"{store!r} has no schedules or resource limits (it does not implement FlowStore); "
                              f"use a SQLite or DynamoDB store")
    return cast(FlowStore, store)


@dataclass(slots=True)
class FireReport:
    """What one firing pass did: sessions started, and slots skipped, by schedule."""

    started: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


async def add_schedule(
    store: Store, name: str, pipeline: Pipeline, *, cron: str, timezone: str = "UTC", input: Any = None,
    app: str = "", catch_up: CatchUp = "skip", max_catch_up: int = 10, overlap: Overlap = "allow",
) -> ScheduleRecord:
    """Store a schedule that starts `pipeline` at each slot of `cron` (checked before anything is written).

    The first slot is the first one after now: nothing is caught up from before it existed.
    """
    record = ScheduleRecord(name=name, cron=cron, pipeline=pipeline.name, app=app, timezone=timezone, input=input,
                            catch_up=catch_up, max_catch_up=max_catch_up, overlap=overlap)
    check_schedule(record)
    pipeline.validate()
    store.codec.to_jsonable(input, where=f"input of schedule {name!r}")
    return await flow_store(store).put_schedule(record)


async def list_schedules(store: Store) -> list[ScheduleRecord]:
    """Every schedule of the store, by name."""
    return await flow_store(store).list_schedules()


async def delete_schedule(store: Store, name: str) -> None:
    """Delete a schedule (the sessions it started are kept); ScheduleNotFoundError if none."""
    await flow_store(store).delete_schedule(name)


async def _change(store: Store, name: str, **changes: Any) -> ScheduleRecord:
    flow = flow_store(store)
    for _ in range(_SAVE_TRIES):
        record = await flow.get_schedule(name)
        saved = await flow.save_schedule(replace(record, **changes))
        if saved is not None:
            return saved
    raise SessionStateError(f"schedule {name!r} changed under each of {_SAVE_TRIES} attempts (workers are firing "
                            f"it); retry", schedule=name)


async def pause_schedule(store: Store, name: str) -> ScheduleRecord:
    """No slot starts until `resume_schedule`; the slots in between are never caught up."""
    return await _change(store, name, paused=True)


async def resume_schedule(store: Store, name: str) -> ScheduleRecord:
    """Fire again from now on (slots missed while paused are not caught up)."""
    return await _change(store, name, paused=False, last_slot=store.clock.now())


def next_run(record: ScheduleRecord, now: float) -> float | None:
    """When the schedule starts next (None while paused)."""
    if record.paused:
        return None
    after = max(record.last_slot if record.last_slot is not None else record.created_at, now)
    return next_slot(record, after)


async def _start(store: Store, pipeline: Pipeline, record: ScheduleRecord, session_id: str, slot: float,
                 options: RunOptions | None) -> bool:
    """Create the slot's session; False if another worker created it first."""
    stamp = datetime.fromtimestamp(slot, tz=UTC).isoformat()
    try:
        await submit(pipeline, record.input, store=store, session_id=session_id, options=options,
                     metadata={"schedule": record.name, "slot": stamp})
    except SessionStateError:
        return False
    return True


async def trigger_schedule(store: Store, name: str, pipeline: Pipeline, *,
                           options: RunOptions | None = None) -> str:
    """Start the schedule's pipeline now, outside its slots; returns the session id."""
    flow = flow_store(store)
    record = await flow.get_schedule(name)
    if record.pipeline != pipeline.name:
        raise ValidationError(f"schedule {name!r} starts pipeline {record.pipeline!r}, not {pipeline.name!r}; pass "
                              f"its app ({record.app or 'MOD:' + record.pipeline})", schedule=name)
    now = store.clock.now()
    sid = slot_session_id(name, now).replace(f"schedule.{name}.", f"schedule.{name}.manual-")
    await _start(store, pipeline, record, sid, now, options)
    await _change(store, name, last_session=sid)
    return sid


async def _unfinished(store: Store, session_id: str | None) -> bool:
    if session_id is None:
        return False
    try:
        return (await store.get_session(session_id)).status not in _FINAL
    except SessionNotFoundError:
        return False


async def fire_schedules(store: Store, pipelines: Mapping[str, Pipeline], *,
                         options: RunOptions | None = None) -> FireReport:
    """Start the due slots of every schedule whose pipeline is in `pipelines` (see the module doc)."""
    report = FireReport()
    flow = flow_store(store)
    for listed in await flow.list_schedules():
        pipeline = pipelines.get(listed.pipeline)
        if pipeline is None or listed.paused:
            continue  # a worker that runs that pipeline fires it
        record = listed
        for _ in range(_SAVE_TRIES):
            firing = plan_firing(record, store.clock.now(),
                                 previous_unfinished=record.overlap == "skip"
                                 and await _unfinished(store, record.last_session))
            if firing.last_slot is None:
                break
            last = record.last_session
            started: list[str] = []
            for slot in firing.starts:
                last = slot_session_id(record.name, slot)
                if await _start(store, pipeline, record, last, slot, options):
                    started.append(last)
            if await flow.save_schedule(replace(record, last_slot=firing.last_slot, last_session=last)) is not None:
                if started:
                    report.started[record.name] = started
                if firing.skipped:
                    report.skipped[record.name] = firing.skipped
                    _log.info("schedule %s: %d due slot(s) skipped (catch-up %s, overlap %s)", record.name,
                              firing.skipped, record.catch_up, record.overlap)
                break
            try:
                record = await flow.get_schedule(record.name)
            except ScheduleNotFoundError:
                break
    return report
