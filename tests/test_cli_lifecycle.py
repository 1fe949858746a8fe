"""What an operator sees of a session's lifecycle from the command line, and the run knobs.

`orchestrator events` after a crash and a takeover, the worker's line per claim and per
finish, lifecycle logs as JSON lines with their ids, and `--lease`, `--agent-limit` and
`--progress-interval` taking effect (or refused with one `error:` line). Each runs the
installed script in a child process.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_helpers import APPS, Result, cli, spawn

from orchestrator.scheduler import submit
from orchestrator.store import open_store

pytestmark = pytest.mark.slow

EXIT_USAGE = 2


def _demo() -> Any:
    import importlib
    import sys

    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    return importlib.import_module("demo_app")


def _url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite://{tmp_path / 'life.db'}"
    return f"dynamodb://life-{uuid.uuid4().hex[:10]}?region=us-east-1&endpoint={request.getfixturevalue('moto_endpoint')}"


def _submit_gate(url: str, tmp_path: Path, sid: str) -> dict[str, str]:
    paths = {"started": str(tmp_path / f"{sid}.started"), "gate": str(tmp_path / f"{sid}.gate")}

    async def go() -> None:
        store = open_store(url)
        try:
            await store.initialize()
            await submit(_demo().gate, paths, store=store, session_id=sid)
        finally:
            await store.aclose()

    anyio.run(go)
    return paths


def _wait_for(path: str, polls: int = 3000) -> None:
    """Poll every 20 ms, at most `polls` times (a minute)."""
    for _ in range(polls):
        if Path(path).exists():
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def _assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.code == EXIT_USAGE, (result.out, result.err)
    assert "Traceback" not in result.err, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.err
    for fragment in fragments:
        assert fragment in errors[0], result.err


# -- the history after a crash ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "moto-server"])
def test_after_a_sigkill_and_a_takeover_events_show_the_claim_the_takeover_and_the_end(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _url(kind, tmp_path, request)
    paths = _submit_gate(url, tmp_path, "crashed")
    first = spawn("worker", "--app", "demo_app:gate", "--worker-id", "first", "--lease", "2s",
                  "--poll-interval", "0.1s", store=url, tmp=tmp_path)
    try:
        _wait_for(paths["started"])
    finally:
        first.kill()  # SIGKILL: no release, no end; the lease lapses
        first.communicate(timeout=30)
    Path(paths["gate"]).write_text("open")

    second = cli("worker", "--app", "demo_app:gate", "--worker-id", "second", "--lease", "2s",
                 "--poll-interval", "0.1s", "--max-sessions", "1", store=url, tmp=tmp_path)
    assert second.code == 0, second.err
    events = cli("events", "crashed", store=url, tmp=tmp_path)

    assert events.code == 0, events.err
    lines = events.out.splitlines()
    [claim] = [ln for ln in lines if " claim " in ln]
    [takeover] = [ln for ln in lines if " takeover " in ln]
    assert "first holds the session at fence 1" in claim
    assert "second took the session over from first at fence 2" in takeover
    assert "first (fence 1) stopped renewing its lease" in takeover
    assert " WARNING " in takeover
    assert " end " in lines[-1] and lines[-1].endswith("session COMPLETED")
    assert lines.index(claim) < lines.index(takeover)


# -- the worker's lines -------------------------------------------------------------------------


def test_worker_prints_one_line_per_claimed_and_one_per_finished_session(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'life.db'}"
    paths = _submit_gate(url, tmp_path, "lined")
    Path(paths["gate"]).write_text("open")

    result = cli("worker", "--app", "demo_app:gate", "--worker-id", "w1", "--max-sessions", "1",
                 "--poll-interval", "0.1s", store=url, tmp=tmp_path)

    assert result.code == 0, result.err
    [claimed] = [ln for ln in result.out.splitlines() if ln.startswith("claimed ")]
    [finished] = [ln for ln in result.out.splitlines() if ln.startswith("finished ")]
    assert claimed == "claimed  lined gate (claim, fence 1)"
    assert finished.startswith("finished lined gate COMPLETED in ")


def test_worker_quiet_prints_no_line_per_session(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'life.db'}"
    paths = _submit_gate(url, tmp_path, "hushed")
    Path(paths["gate"]).write_text("open")

    result = cli("worker", "--app", "demo_app:gate", "-q", "--max-sessions", "1", "--poll-interval", "0.1s",
                 store=url, tmp=tmp_path)

    assert result.code == 0, result.err
    assert not [ln for ln in result.out.splitlines() if ln.startswith(("claimed ", "finished "))], result.out
    assert "1 session(s) run" in result.out


# -- lifecycle logs -----------------------------------------------------------------------------


def test_json_logs_of_a_run_carry_the_session_and_task_ids(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'life.db'}"

    result = cli("--log-format", "json", "--log-level", "INFO", "run", "demo_app:retry_once",
                 "--session-id", "logged", store=url, tmp=tmp_path)

    assert result.code == 0, result.err
    records = [json.loads(ln) for ln in result.err.splitlines() if ln.startswith("{")]
    lifecycle = [r for r in records if r["logger"] == "orchestrator.lifecycle"]
    by_event = {r["event"]: r for r in lifecycle}
    assert (by_event["claim"]["session_id"], by_event["claim"]["owner"], by_event["claim"]["fence"]) == (
        "logged", by_event["claim"]["owner"], 1)
    retry = by_event["retry"]
    assert (retry["session_id"], retry["task_id"], retry["attempt"], retry["error_type"]) == (
        "logged", "wobble", 1, "builtins.RuntimeError")
    end = by_event["end"]
    assert (end["session_id"], end["status"], end["level"]) == ("logged", "COMPLETED", "INFO")
    assert isinstance(end["duration_s"], float)


# -- the knobs ----------------------------------------------------------------------------------


def test_lease_option_sets_the_lease_length_the_claim_records(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'life.db'}"

    result = cli("run", "demo_app:small", "--session-id", "leased", "--lease", "45s", store=url, tmp=tmp_path)

    assert result.code == 0, result.err
    listed = cli("events", "leased", "--json", store=url, tmp=tmp_path)
    [claim] = [e for e in map(json.loads, listed.out.splitlines()) if e["kind"] == "claim"]

    async def created_at() -> float:
        store = open_store(url)
        try:
            await store.initialize()
            return (await store.get_session("leased")).created_at
        finally:
            await store.aclose()

    assert claim["data"]["lease_expires_at"] == anyio.run(created_at) + 45


def test_agent_limit_of_one_lets_one_such_agent_run_at_a_time(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'life.db'}"
    wait = json.dumps({"want": 2, "wait": 1.0})

    limited = cli("run", "demo_app:wide", "--input", wait, "--agent-limit", "probe=1", "--json",
                  store=url, tmp=tmp_path)
    free = cli("run", "demo_app:wide", "--input", wait, "--json", store=url, tmp=tmp_path)

    assert limited.code == 0 and free.code == 0, (limited.err, free.err)
    assert {t: o["peak"] for t, o in limited.json()["outputs"].items()} == {"p1": 1, "p2": 1, "p3": 1}
    assert max(o["peak"] for o in free.json()["outputs"].values()) == 2  # without the limit they overlap


def test_worker_agent_limit_is_shared_by_the_sessions_it_runs(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'life.db'}"

    async def submit_two() -> None:
        store = open_store(url)
        try:
            await store.initialize()
            for sid in ("wide-1", "wide-2"):
                await submit(_demo().wide, {"want": 2, "wait": 0.5}, store=store, session_id=sid)
        finally:
            await store.aclose()

    anyio.run(submit_two)
    result = cli("worker", "--app", "demo_app:wide", "--agent-limit", "probe=1", "--concurrency", "2",
                 "--max-sessions", "2", "--poll-interval", "0.1s", "--json", store=url, tmp=tmp_path)

    assert result.code == 0, result.err
    assert result.json()["results"] == {"wide-1": "COMPLETED", "wide-2": "COMPLETED"}

    async def peaks() -> list[int]:
        store = open_store(url)
        try:
            await store.initialize()
            return [t.output["peak"] for sid in ("wide-1", "wide-2")
                    for t in (await store.load_session(sid)).tasks.values()]
        finally:
            await store.aclose()

    assert anyio.run(peaks) == [1] * 6


@pytest.mark.parametrize(("interval", "seen"), [("0.05s", True), ("1h", False)])
def test_progress_interval_option_sets_how_often_progress_is_written(
    tmp_path: Path, interval: str, seen: bool
) -> None:
    url = f"sqlite://{tmp_path / 'life.db'}"
    spec = json.dumps({"store": url, "wait": 3.0})

    result = cli("run", "demo_app:progress", "--input", spec, "--progress-interval", interval, "--json",
                 store=url, tmp=tmp_path)

    assert result.code == 0, result.err
    assert result.json()["outputs"]["watch"] == {"seen": seen}


@pytest.mark.parametrize(("args", "fragment"), [
    (["--lease", "0s"], "--lease '0s' must be more than 0"),
    (["--lease", "soon"], "--lease 'soon' is not a duration"),
    (["--progress-interval", "-1s"], "--progress-interval"),
    (["--agent-limit", "step"], "--agent-limit 'step' is not AGENT=N"),
    (["--agent-limit", "step=0"], "a limit must be 1 or more"),
    (["--agent-limit", "nosuch=1"], "agent(s) nosuch that no pipeline given defines"),
])
def test_a_bad_knob_is_one_error_line_and_nothing_runs(tmp_path: Path, args: list[str], fragment: str) -> None:
    url = f"sqlite://{tmp_path / 'life.db'}"

    result = cli("run", "demo_app:small", "--session-id", "never", *args, store=url, tmp=tmp_path)

    _assert_one_error_line(result, fragment)
    assert not (tmp_path / "never.log").exists()  # no agent ran
    assert cli("show", "never", store=url, tmp=tmp_path).code != 0  # no session was created


@pytest.mark.parametrize("command", [["worker", "--app", "demo_app:small"],
                                     ["resume-failed", "--app", "demo_app:small"],
                                     ["resume", "some-session", "--app", "demo_app:small"]])
def test_every_running_command_refuses_a_bad_lease_before_it_runs(tmp_path: Path, command: list[str]) -> None:
    result = cli(*command, "--lease", "-5s", store=f"sqlite://{tmp_path / 'life.db'}", tmp=tmp_path)

    _assert_one_error_line(result, "--lease")


@pytest.mark.parametrize("command", [["resume", "redriven"], ["resume-failed", "--older-than", "0s"]])
def test_resume_and_resume_failed_claim_with_the_lease_given(tmp_path: Path, command: list[str]) -> None:
    url = f"sqlite://{tmp_path / 'life.db'}"
    marker = tmp_path / "fixed"
    failed = cli("run", "demo_app:flaky", "--session-id", "redriven", "--input", json.dumps({"marker": str(marker)}),
                 store=url, tmp=tmp_path)
    assert failed.code == 1, failed.err
    marker.write_text("ok")

    result = cli(*command, "--app", "demo_app:flaky", "--lease", "45s", store=url, tmp=tmp_path)

    assert result.code == 0, result.err
    listed = cli("events", "redriven", "--json", store=url, tmp=tmp_path)
    claims = [e for e in map(json.loads, listed.out.splitlines()) if e["kind"] == "claim"]
    assert [c["data"]["how"] for c in claims] == ["claim", "redrive"]
    redrive = claims[-1]
    # Recorded right after the claim: its lease ends 45 s (not the default 30) after it.
    assert 44 < redrive["data"]["lease_expires_at"] - redrive["at_epoch"] <= 45
