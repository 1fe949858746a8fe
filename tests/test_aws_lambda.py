"""The Lambda handlers, called with a fake context against a SQLite store."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.aws_lambda import resume_failed_handler, worker_handler
from orchestrator.errors import ConfigError, ValidationError
from orchestrator.schedules import flow_store
from orchestrator.scheduler import run, submit
from orchestrator.store import Event, ScheduleRecord, SessionSnapshot, SessionStatus, open_store

APPS = Path(__file__).resolve().parent / "apps"


@dataclass
class FakeContext:
    remaining_ms: int

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def demo(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(APPS))
    monkeypatch.chdir(APPS)
    return importlib.import_module("demo_app")


def _env(url: str, app: str, **extra: str) -> dict[str, str]:
    return {"ORCHESTRATOR_STORE": url, "ORCHESTRATOR_APP": app, **extra}


def _load(url: str, sid: str) -> SessionSnapshot:
    async def go() -> SessionSnapshot:
        store = open_store(url)
        try:
            return await store.load_session(sid)
        finally:
            await store.aclose()

    result: SessionSnapshot = anyio.run(go)
    return result


def test_resume_failed_handler_resumes_and_returns_a_json_summary(demo: Any, tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'l.db'}"
    marker = tmp_path / "fixed"

    async def fail_one() -> None:
        store = open_store(url)
        try:
            await run(demo.flaky, {"marker": str(marker)}, store=store, session_id="lam-1")
        finally:
            await store.aclose()

    anyio.run(fail_one)
    marker.write_text("ok")
    summary = resume_failed_handler({}, FakeContext(300_000),
                                    env=_env(url, "demo_app:flaky", ORCHESTRATOR_OLDER_THAN="0s"))
    assert json.loads(json.dumps(summary)) == summary
    assert summary["ok"] is True and summary["resumed"] == {"lam-1": "COMPLETED"}
    assert _load(url, "lam-1").session.status is SessionStatus.COMPLETED


def test_resume_failed_handler_event_can_ask_for_a_dry_run(demo: Any, tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'l.db'}"

    async def fail_one() -> None:
        store = open_store(url)
        try:
            await run(demo.flaky, {"marker": str(tmp_path / "never")}, store=store, session_id="lam-dry")
        finally:
            await store.aclose()

    anyio.run(fail_one)
    summary = resume_failed_handler({"dry_run": True, "older_than": "0s"}, FakeContext(300_000),
                                    env=_env(url, "demo_app:flaky"))
    assert summary["dry_run"] is True and summary["candidates"] == 1 and summary["resumed"] == {}
    assert _load(url, "lam-dry").session.status is SessionStatus.FAILED


def test_handler_without_an_app_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ORCHESTRATOR_APP"):
        resume_failed_handler({}, FakeContext(300_000), env={"ORCHESTRATOR_STORE": f"sqlite://{tmp_path}/x.db"})


def test_worker_handler_processes_a_bounded_batch(demo: Any, tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'l.db'}"

    async def submit_all() -> None:
        store = open_store(url)
        try:
            await store.initialize()
            for i in range(3):
                await submit(demo.small, None, store=store, session_id=f"b-{i}")
        finally:
            await store.aclose()

    anyio.run(submit_all)
    summary = worker_handler({"max_sessions": 2}, FakeContext(300_000),
                             env=_env(url, "demo_app:small", ORCHESTRATOR_IDLE_EXIT="0.2s"))
    assert summary["ok"] is True and len(summary["results"]) == 2
    statuses = sorted(_load(url, f"b-{i}").session.status.value for i in range(3))
    assert statuses == ["COMPLETED", "COMPLETED", "PENDING"]


def test_worker_handler_stops_and_releases_before_the_deadline(demo: Any, tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'l.db'}"
    started, gate = tmp_path / "started", tmp_path / "gate"  # the gate never opens

    async def submit_one() -> None:
        store = open_store(url)
        try:
            await store.initialize()
            await submit(demo.gate, {"started": str(started), "gate": str(gate)}, store=store, session_id="slow")
        finally:
            await store.aclose()

    anyio.run(submit_one)
    # 31 s left with a 30 s safety margin: about one second of work.
    summary = worker_handler({}, FakeContext(31_000), env=_env(url, "demo_app:gate"))
    assert summary["stopped_for_deadline"] is True
    assert summary["released"] == ["slow"]
    assert started.exists()
    assert _load(url, "slow").session.status is SessionStatus.PENDING


def _submit(url: str, pipeline: Any, inputs: dict[str, Any]) -> None:
    async def go() -> None:
        store = open_store(url)
        try:
            await store.initialize()
            for sid, value in inputs.items():
                await submit(pipeline, value, store=store, session_id=sid)
        finally:
            await store.aclose()

    anyio.run(go)


def _events(url: str, sid: str) -> list[Event]:
    async def go() -> list[Event]:
        store = open_store(url)
        try:
            return list((await store.read_events(sid)).items)
        finally:
            await store.aclose()

    result: list[Event] = anyio.run(go)
    return result


def test_worker_handler_takes_the_lease_length_from_the_environment(demo: Any, tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'l.db'}"
    _submit(url, demo.small, {"leased": None})

    summary = worker_handler({}, FakeContext(300_000),
                             env=_env(url, "demo_app:small", ORCHESTRATOR_LEASE="45s", ORCHESTRATOR_IDLE_EXIT="0.2s"))

    assert summary["results"] == {"leased": "COMPLETED"}
    [claim] = [e for e in _events(url, "leased") if e.kind == "claim"]
    # The claim is recorded right after the lease is taken: its expiry is 45 s (not the default 30) ahead.
    assert 44 < claim.data["lease_expires_at"] - claim.at <= 45


def test_worker_handler_event_agent_limits_hold_across_the_sessions_of_a_batch(demo: Any, tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'l.db'}"
    _submit(url, demo.wide, {"w-1": {"want": 2, "wait": 0.5}, "w-2": {"want": 2, "wait": 0.5}})

    summary = worker_handler({"agent_limits": {"probe": 1}, "concurrency": 2, "max_sessions": 2},
                             FakeContext(300_000), env=_env(url, "demo_app:wide", ORCHESTRATOR_IDLE_EXIT="0.2s"))

    assert summary["results"] == {"w-1": "COMPLETED", "w-2": "COMPLETED"}
    peaks = [t.output["peak"] for sid in ("w-1", "w-2") for t in _load(url, sid).tasks.values()]
    assert peaks == [1] * 6


def test_worker_handler_takes_the_progress_interval_from_the_environment(demo: Any, tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'l.db'}"
    _submit(url, demo.progress, {"probed": {"store": url, "wait": 3.0}})

    summary = worker_handler({}, FakeContext(300_000), env=_env(
        url, "demo_app:progress", ORCHESTRATOR_PROGRESS_INTERVAL="0.05s", ORCHESTRATOR_IDLE_EXIT="0.2s"))

    assert summary["results"] == {"probed": "COMPLETED"}
    assert _load(url, "probed").tasks["watch"].output == {"seen": True}


@pytest.mark.parametrize(("setting", "fragment"), [
    ({"ORCHESTRATOR_LEASE": "0s"}, "lease (ORCHESTRATOR_LEASE) '0s' must be more than 0"),
    ({"ORCHESTRATOR_AGENT_LIMITS": "step=zero"}, "is not AGENT=N"),
    ({"ORCHESTRATOR_AGENT_LIMITS": "nosuch=1"}, "agent(s) nosuch that no pipeline given defines"),
    ({"ORCHESTRATOR_PROGRESS_INTERVAL": "often"}, "is not a duration"),
])
@pytest.mark.parametrize("handler", [worker_handler, resume_failed_handler])
def test_a_bad_knob_is_refused_before_the_store_is_opened(
    demo: Any, tmp_path: Path, handler: Any, setting: dict[str, str], fragment: str
) -> None:
    db = tmp_path / "never.db"
    with pytest.raises(ValidationError) as info:
        handler({}, FakeContext(300_000), env=_env(f"sqlite://{db}", "demo_app:small", **setting))
    assert fragment in str(info.value)
    assert not db.exists()


def test_worker_handler_starts_a_due_schedule_slot_and_runs_it(demo: Any, tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'l.db'}"

    async def add() -> None:
        store = open_store(url)
        try:
            await store.initialize()
            # created two minutes ago: a slot of "every minute" is due, and "latest" starts it
            await flow_store(store).put_schedule(ScheduleRecord(
                "minutely", "* * * * *", "small", app="demo_app:small", catch_up="latest",
                created_at=store.clock.now() - 120))
        finally:
            await store.aclose()

    anyio.run(add)
    summary = worker_handler({}, FakeContext(300_000), env=_env(url, "demo_app:small", ORCHESTRATOR_IDLE_EXIT="0.2s"))

    [sid] = summary["scheduled"]
    assert sid.startswith("schedule.minutely.") and summary["results"] == {sid: "COMPLETED"}
