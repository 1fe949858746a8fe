"""Fleet-wide resource limits and schedules across worker processes, observed by the agents themselves.

Four `orchestrator worker` processes share one store; the agents of `flow_app` count,
under a file lock, how many of them are inside the agent at once across every process
and log when each started (`$FLOW_MARK_DIR`). SQLite on a file, the moto server (one
request at a time: moto is not atomic under concurrent requests) and dynalite (an
independent implementation serving requests concurrently, without transactions). The
schedule test runs four workers for about five slots of a two-second cron and checks,
from the schedule's own record, that every slot in between started exactly one session.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_helpers import APPS, spawn

from orchestrator.scheduler import submit
from orchestrator.store import SessionStatus, open_store
from orchestrator.store.records.flow import Rate, ResourceLimit, ScheduleRecord
from orchestrator.store.rules.schedules import next_slot, slot_session_id
from orchestrator.schedules import add_schedule, flow_store

pytestmark = pytest.mark.slow

_WAIT_S = 180.0


def _app() -> Any:
    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    return importlib.import_module("flow_app")


def _url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    table = f"flow-{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        return f"sqlite://{tmp_path / 'fleet.db'}"
    if kind == "dynalite":
        return f"dynamodb://{table}?region=us-east-1&endpoint={request.getfixturevalue('dynalite_endpoint')}" \
               "&transactions=0"
    return f"dynamodb://{table}?region=us-east-1&endpoint={request.getfixturevalue('moto_endpoint')}"


async def _prepare(url: str, limit: ResourceLimit, pipeline_name: str, count: int, prefix: str) -> list[str]:
    flow_app = _app()
    pipeline = getattr(flow_app, pipeline_name)
    store = open_store(url)
    try:
        await store.initialize()
        await flow_store(store).set_limit(limit)
        return [await submit(pipeline, None, store=store, session_id=f"{prefix}-{i:03d}") for i in range(count)]
    finally:
        await store.aclose()


async def _statuses(url: str, ids: list[str]) -> set[SessionStatus]:
    store = open_store(url)
    try:
        await store.initialize()
        return {(await store.get_session(sid)).status for sid in ids}
    finally:
        await store.aclose()


def _workers(url: str, tmp_path: Path, n: int, *extra: str) -> list[subprocess.Popen[str]]:
    env = {"FLOW_MARK_DIR": str(tmp_path)}
    return [spawn("worker", "--app", "flow_app:llm", "--app", "flow_app:hold", "--concurrency", "4",
                  "--idle-exit", "2s", "--poll-interval", "0.1s", "--worker-id", f"w{i}", "--quiet", *extra,
                  store=url, tmp=tmp_path, env=env) for i in range(n)]


def _finish(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=_WAIT_S)
        assert proc.returncode == 0, err


def _starts(tmp_path: Path) -> list[float]:
    return sorted(float(line.split()[0]) for line in (tmp_path / "starts.log").read_text().splitlines())


@pytest.mark.parametrize("kind", ["sqlite", "moto-server", "dynalite"])
def test_four_workers_never_run_more_agents_than_the_fleet_limit_and_reach_it(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = _url(kind, tmp_path, request)
    ids = anyio.run(_prepare, url, ResourceLimit("openai", 3), "llm", 40, "c")
    _finish(_workers(url, tmp_path, 4))
    assert anyio.run(_statuses, url, ids) == {SessionStatus.COMPLETED}
    assert len(_starts(tmp_path)) == 40
    assert (tmp_path / "max").read_text() == "3"  # never more than 3 at once, and 3 was reached
    assert (tmp_path / "inside").read_text() == "0"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["sqlite", "moto-server"])
def test_a_rate_of_60_a_minute_over_four_workers_never_starts_more_than_60_in_any_minute(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The issue's acceptance, in real time (about 70 s a backend); dynalite runs the same
    window's decisions in the flow contract."""
    url = _url(kind, tmp_path, request)
    ids = anyio.run(_prepare, url, ResourceLimit("openai", None, Rate(60, 60.0)), "llm", 64, "r")
    _finish(_workers(url, tmp_path, 4, "--idle-exit", "5s"))
    assert anyio.run(_statuses, url, ids) == {SessionStatus.COMPLETED}
    starts = _starts(tmp_path)
    assert len(starts) == 64
    # every window of 60 s, anchored at each start, holds at most 60 starts
    assert max(sum(1 for t in starts if s <= t < s + 60.0) for s in starts) <= 60
    assert starts[60] - starts[0] >= 60.0 - 0.5  # the 61st start waited for the window (clock resolution)


@pytest.mark.parametrize("kind", ["sqlite", "moto-server", "dynalite"])
def test_the_slot_of_a_sigkilled_holder_is_reused_once_its_lease_lapses(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = _url(kind, tmp_path, request)
    [held] = anyio.run(_prepare, url, ResourceLimit("openai", 1), "hold", 1, "h")
    [holder] = _workers(url, tmp_path, 1, "--lease", "3s")
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("holding-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob("holding-*")), "the stuck agent never started"
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=_WAIT_S)
    state = anyio.run(_holders, url)
    assert [h.split("/")[0] for h in state] == [held]  # the dead worker's unit is still held, for now
    (tmp_path / "release").write_text("go")  # a re-run of the stuck agent returns at once
    ids = anyio.run(_submit_more, url)
    _finish(_workers(url, tmp_path, 2, "--lease", "3s"))
    assert anyio.run(_statuses, url, [held, *ids]) == {SessionStatus.COMPLETED}
    assert (tmp_path / "max").read_text() == "1"
    assert anyio.run(_holders, url) == []


async def _holders(url: str) -> list[str]:
    store = open_store(url)
    try:
        await store.initialize()
        return [h.holder for h in (await flow_store(store).resource_state("openai")).holders]
    finally:
        await store.aclose()


async def _submit_more(url: str) -> list[str]:
    flow_app = _app()
    store = open_store(url)
    try:
        await store.initialize()
        return [await submit(flow_app.llm, None, store=store, session_id=f"after-{i}")
                for i in range(3)]
    finally:
        await store.aclose()


@pytest.mark.parametrize("kind", ["sqlite", "moto-server"])
def test_four_worker_processes_start_exactly_one_session_per_schedule_slot(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = _url(kind, tmp_path, request)

    async def add() -> None:
        store = open_store(url)
        try:
            await store.initialize()
            # every 2 seconds (croniter's sixth field); "all": a slot a busy worker fires late still starts
            await add_schedule(store, "every-2s", _app().ticker, cron="* * * * * */2", catch_up="all",
                               app="flow_app:ticker")
        finally:
            await store.aclose()

    anyio.run(add)
    procs = [spawn("worker", "--app", "flow_app:ticker", "--poll-interval", "0.1s", "--worker-id", f"s{i}",
                   "--quiet", store=url, tmp=tmp_path) for i in range(4)]
    time.sleep(10.0)  # about five slots
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    _finish(procs)
    record, started = anyio.run(_fired, url)
    assert record.last_slot is not None
    slots, at = [], record.created_at
    while (at := next_slot(record, at)) <= record.last_slot:
        slots.append(slot_session_id("every-2s", at))
    assert len(slots) >= 3 and started == sorted(slots)  # each slot once, none twice, none missing


async def _fired(url: str) -> tuple[ScheduleRecord, list[str]]:
    store = open_store(url)
    try:
        await store.initialize()
        ids = [s.session_id for status in SessionStatus
               for s in (await store.list_sessions(status, limit=1000)).items]
        return await flow_store(store).get_schedule("every-2s"), sorted(i for i in ids if i.startswith("schedule."))
    finally:
        await store.aclose()
