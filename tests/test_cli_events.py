"""`orchestrator events`: the whole story of a session, in order, readable by a person and by a program.

Times are human-readable in text (never a raw epoch), ISO 8601 UTC in `--json`;
`--follow` streams while a run is going (a `run` in another process, its agent held
on a gate file) and ends by itself once the session's closing event is printed.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from cli_helpers import APPS, cli, cli_env, console_script

from orchestrator.clock import SystemClock
from orchestrator.store import Event, open_store

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ ")
EPOCH = re.compile(r"\b1\d{9}(\.\d+)?\b")  # seconds since 1970 between 2001 and 2286
WAIT_S = 60.0
CLOCK = SystemClock()  # bounds the waits on other processes


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'events.db'}"


def stored_events(url: str, session_id: str) -> list[Event]:
    async def go() -> list[Event]:
        async with open_store(url) as store:
            return list((await store.read_events(session_id, limit=1000)).items)

    result: list[Event] = anyio.run(go)
    return result


def start(url: str, tmp: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([console_script(), "--store", url, *args], cwd=APPS, env=cli_env(tmp),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Lines:
    """The stdout lines of a child process, read on a thread so every wait can be bounded."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self._queue.put(line)
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, wanted: str, timeout: float = WAIT_S) -> list[str]:
        """Lines read until one whose JSON `kind` is `wanted` (AssertionError after `timeout`)."""
        deadline = CLOCK.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - CLOCK.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {wanted!r} event within {timeout}s; read {self.seen}") from None
            assert line is not None, f"the output ended before a {wanted!r} event; read {self.seen}"
            self.seen.append(line)
            if json.loads(line)["kind"] == wanted:
                return self.seen

    def rest(self, timeout: float = WAIT_S) -> list[str]:
        """Every line up to the end of the output."""
        deadline = CLOCK.monotonic() + timeout
        while True:
            line = self._queue.get(timeout=max(0.0, deadline - CLOCK.monotonic()))
            if line is None:
                return self.seen
            self.seen.append(line)


def wait_for_file(path: Path, timeout: float = WAIT_S) -> None:
    deadline = CLOCK.monotonic() + timeout
    while not path.exists():
        assert CLOCK.monotonic() < deadline, f"{path} did not appear within {timeout}s"
        time.sleep(0.05)


def stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_events_follow_streams_while_a_run_is_going_and_ends_after_the_end_event(
    sqlite_url: str, tmp_path: Path
) -> None:
    started, gate = tmp_path / "started", tmp_path / "gate"
    payload = json.dumps({"started": str(started), "gate": str(gate)})
    runner = start(sqlite_url, tmp_path, "run", "demo_app:gate", "--input", payload, "--session-id", "fl-1",
                   "--json")
    follower: subprocess.Popen[str] | None = None
    try:
        wait_for_file(started)  # the session exists and its agent waits on the gate
        follower = start(sqlite_url, tmp_path, "events", "fl-1", "--follow", "--json")
        lines = Lines(follower)
        during = [json.loads(line)["kind"] for line in lines.until("claim")]
        assert runner.poll() is None and follower.poll() is None  # printed while the run is going
        assert during[0] == "created"
        gate.write_text("open", encoding="utf-8")
        after = [json.loads(line) for line in lines.rest()]
        assert follower.wait(timeout=WAIT_S) == 0
        assert runner.wait(timeout=WAIT_S) == 0
    finally:
        stop(runner, *([follower] if follower is not None else []))
    assert after[-1]["kind"] == "end" and after[-1]["data"]["status"] == "COMPLETED"
    assert [e["kind"] for e in after] == [e.kind for e in stored_events(sqlite_url, "fl-1")]


def test_events_follow_stops_after_a_cancel_that_ended_a_pending_session(sqlite_url: str, tmp_path: Path) -> None:
    assert cli("submit", "demo_app:small", "--session-id", "pend", store=sqlite_url, tmp=tmp_path).code == 0
    assert cli("cancel", "pend", "--reason", "not needed", store=sqlite_url, tmp=tmp_path).code == 0
    followed = cli("events", "pend", "--follow", "--json", store=sqlite_url, tmp=tmp_path, timeout=WAIT_S)
    assert followed.code == 0, followed.err
    kinds = [json.loads(line)["kind"] for line in followed.out.splitlines()]
    assert kinds == ["created", "cancel"]


def test_events_json_at_is_iso_8601_utc_and_at_epoch_is_the_stored_time(sqlite_url: str, tmp_path: Path) -> None:
    assert cli("run", "demo_app:small", "--session-id", "iso", store=sqlite_url, tmp=tmp_path).code == 0
    printed = [json.loads(line) for line in
               cli("events", "iso", "--json", store=sqlite_url, tmp=tmp_path).out.splitlines()]
    stored = stored_events(sqlite_url, "iso")
    assert [(p["kind"], p["at_epoch"]) for p in printed] == [(e.kind, e.at) for e in stored]
    for p, e in zip(printed, stored, strict=True):
        assert ISO_UTC.match(p["at"]), p["at"]
        assert datetime.fromisoformat(p["at"]) == datetime.fromtimestamp(e.at, tz=UTC)


def test_events_text_shows_human_readable_times_and_no_raw_epoch(sqlite_url: str, tmp_path: Path) -> None:
    marker = tmp_path / "never"
    cli("run", "demo_app:flaky", "--session-id", "txt", "--input", json.dumps({"marker": str(marker)}),
        store=sqlite_url, tmp=tmp_path)  # fails: retry, failed, end
    assert cli("cancel", "txt", "--reason", "given up", store=sqlite_url, tmp=tmp_path).code == 0
    text = cli("events", "txt", store=sqlite_url, tmp=tmp_path)
    assert text.code == 0, text.err
    lines = text.out.splitlines()
    kinds = [e.kind for e in stored_events(sqlite_url, "txt")]
    assert {"created", "claim", "failed", "end", "cancel"} <= set(kinds)
    assert len(lines) == len(kinds)
    for line in lines:
        assert TEXT_LINE.match(line), line
        assert not EPOCH.search(line), f"a raw epoch time in {line!r}"
