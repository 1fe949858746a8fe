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
from orchestrator.errors import ConfigError
from orchestrator.scheduler import run, submit
from orchestrator.store import SessionSnapshot, SessionStatus, open_store

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
