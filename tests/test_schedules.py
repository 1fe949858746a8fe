"""Schedules fired by four workers sharing one store: one session per slot, catch-up, overlap.

Each "worker" is its own store instance (its own SQLite connection or DynamoDB client)
firing at the same moments of a shared FakeClock, so a simulated ten minutes takes no
real time. SQLite on a file and the moto server (one request at a time: moto is not
atomic under concurrent requests) and dynalite share their state atomically.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from orchestrator.agents import AgentContext, agent
from orchestrator.errors import ScheduleNotFoundError, ValidationError
from orchestrator.graph import Pipeline
from orchestrator.schedules import (
    add_schedule,
    fire_schedules,
    list_schedules,
    next_run,
    pause_schedule,
    resume_schedule,
    trigger_schedule,
)
from orchestrator.store import SessionStatus, Store, open_store
from orchestrator.store.records.flow import CatchUp, Overlap
from orchestrator.testing import FakeClock

pytestmark = [pytest.mark.anyio, pytest.mark.backends("sqlite", "moto-server", "dynalite")]

MINUTE = 60.0


@agent
async def write_report(ctx: AgentContext) -> str:
    return "ok"


report = Pipeline("report", agents=[write_report]).task("write", write_report)
PIPELINES = {"report": report}


@pytest.fixture
async def workers(store_url: str, fake_clock: FakeClock) -> AsyncIterator[list[Store]]:
    """Four store instances on one store, all on the test's FakeClock (at a minute boundary)."""
    fake_clock.set(1_750_000_020.0 - 1_750_000_020.0 % MINUTE)
    stores = [open_store(store_url, clock=fake_clock) for _ in range(4)]
    for s in stores:
        await s.initialize()
    try:
        yield stores
    finally:
        for s in stores:
            await s.aclose()


async def _fire_all(stores: list[Store]) -> None:
    async with anyio.create_task_group() as tg:
        for s in stores:
            tg.start_soon(fire_schedules, s, PIPELINES)


async def _scheduled(store: Store, name: str = "every-minute") -> list[str]:
    page = await store.list_sessions(SessionStatus.PENDING, limit=100)
    return sorted(s.session_id for s in page.items if s.session_id.startswith(f"schedule.{name}."))


async def _add(store: Store, *, catch_up: CatchUp = "skip", overlap: Overlap = "allow") -> None:
    await add_schedule(store, "every-minute", report, cron="*/1 * * * *", catch_up=catch_up, overlap=overlap,
                       app="tests:report", input={"kind": "daily"})


async def test_four_workers_start_exactly_one_session_per_slot_over_ten_minutes(
        workers: list[Store], fake_clock: FakeClock) -> None:
    await _add(workers[0])
    for _ in range(10):
        fake_clock.advance(MINUTE)
        await _fire_all(workers)
        await _fire_all(workers)  # firing again in the same minute starts nothing more
    ids = await _scheduled(workers[0])
    assert len(ids) == 10
    start = fake_clock.now() - 9 * MINUTE
    slots = [(await workers[0].get_session(sid)).metadata["slot"] for sid in ids]
    assert len(set(slots)) == 10
    first = await workers[0].get_session(ids[0])
    assert first.input == {"kind": "daily"} and first.pipeline == "report" and first.created_at == start


async def test_after_a_five_slot_outage_catch_up_latest_starts_one(
        workers: list[Store], fake_clock: FakeClock) -> None:
    await _add(workers[0], catch_up="latest")
    fake_clock.advance(MINUTE)
    await _fire_all(workers)
    fake_clock.advance(5 * MINUTE + 30)  # five slots pass with no worker up; the last is 30 s late
    await _fire_all(workers)
    assert len(await _scheduled(workers[0])) == 2


async def test_after_a_five_slot_outage_catch_up_all_starts_five(
        workers: list[Store], fake_clock: FakeClock) -> None:
    await _add(workers[0], catch_up="all")
    fake_clock.advance(MINUTE)
    await _fire_all(workers)
    fake_clock.advance(5 * MINUTE + 30)
    await _fire_all(workers)
    assert len(await _scheduled(workers[0])) == 1 + 5


async def test_after_an_outage_catch_up_skip_starts_none_of_the_missed_slots(
        workers: list[Store], fake_clock: FakeClock) -> None:
    await _add(workers[0], catch_up="skip")
    fake_clock.advance(MINUTE)
    await _fire_all(workers)
    fake_clock.advance(5 * MINUTE + 45)  # five slots missed, the latest 45 s late (over half a period)
    await _fire_all(workers)
    assert len(await _scheduled(workers[0])) == 1
    fake_clock.advance(MINUTE - 45 + 10)  # the next slot, 10 s late, is on time
    await _fire_all(workers)
    assert len(await _scheduled(workers[0])) == 2


async def test_overlap_skip_starts_nothing_while_the_previous_session_is_unfinished(
        workers: list[Store], fake_clock: FakeClock) -> None:
    await _add(workers[0], overlap="skip")
    fake_clock.advance(MINUTE)
    await _fire_all(workers)
    [previous] = await _scheduled(workers[0])
    fake_clock.advance(MINUTE)
    await _fire_all(workers)
    assert await _scheduled(workers[0]) == [previous]
    await workers[0].request_cancel(previous, "done by hand")  # it ends
    fake_clock.advance(MINUTE)
    await _fire_all(workers)
    assert len(await _scheduled(workers[0])) == 1  # the new one (the cancelled one is no longer PENDING)


async def test_a_paused_schedule_starts_nothing_and_resumes_without_catching_up(
        workers: list[Store], fake_clock: FakeClock) -> None:
    await _add(workers[0], catch_up="all")
    paused = await pause_schedule(workers[0], "every-minute")
    assert next_run(paused, fake_clock.now()) is None
    fake_clock.advance(3 * MINUTE)
    await _fire_all(workers)
    assert await _scheduled(workers[0]) == []
    resumed = await resume_schedule(workers[1], "every-minute")
    assert next_run(resumed, fake_clock.now()) == fake_clock.now() + MINUTE
    await _fire_all(workers)
    assert await _scheduled(workers[0]) == []
    fake_clock.advance(MINUTE)
    await _fire_all(workers)
    assert len(await _scheduled(workers[0])) == 1


async def test_trigger_starts_a_session_now_and_a_worker_without_the_pipeline_fires_nothing(
        workers: list[Store], fake_clock: FakeClock) -> None:
    await _add(workers[0])
    sid = await trigger_schedule(workers[0], "every-minute", report)
    assert sid.startswith("schedule.every-minute.manual-")
    fake_clock.advance(MINUTE)
    await fire_schedules(workers[1], {})
    assert await _scheduled(workers[0]) == [sid]
    assert (await list_schedules(workers[0]))[0].last_session == sid


async def test_a_bad_cron_or_time_zone_is_refused_before_anything_is_written(workers: list[Store]) -> None:
    with pytest.raises(ValidationError, match="cron"):
        await add_schedule(workers[0], "bad", report, cron="61 * * * *")
    with pytest.raises(ValidationError, match="timezone"):
        await add_schedule(workers[0], "bad", report, cron="0 * * * *", timezone="Mars/Olympus")
    assert await list_schedules(workers[0]) == []
    with pytest.raises(ScheduleNotFoundError):
        await pause_schedule(workers[0], "bad")
