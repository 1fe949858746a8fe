"""The table views of the CLI (not `--json`): every status shown, agent text shown as written.

`status` once rendered a PENDING or CANCELLED task as `[]PENDING[/]` and crashed with
rich's MarkupError; agent and user text (errors, reasons, phases) was parsed as markup,
so `[/path]` crashed `status` and `list` and `[error]` vanished. These tests seed a
SQLite file and a DynamoDB table (the moto server) with every task status and such text,
then run the installed script. They also pin one definition of progress across views
(COMPLETED tasks of all tasks: a failed session never reads 3/3), and that `status`
says which signal a waiting task waits for, and until when.
"""

from __future__ import annotations

import io
import re
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from cli_helpers import Result, cli
from rich.console import Console
from rich.style import Style
from rich.text import Text

from orchestrator.cli._common import STATUS_STYLE
from orchestrator.cli._progress import SessionWatcher
from orchestrator.cli.inspect import _status_view
from orchestrator.store import (
    ErrorInfo,
    NewSession,
    NewTask,
    Progress,
    SessionSnapshot,
    SessionStatus,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    open_store,
)

# Agent and user text that rich would read as markup: a closing tag, an unknown style, a real one.
ERROR = "cannot write [/tmp/out.txt]: [error] disk full"
RETRY_ERROR = "flaky [/dev/null] [error] retry me"
PHASE = "copying [/src] to [bold]dist[/bold]"
SKIP_REASON = "upstream [/path] failed"
REASON = "task [t-1] failed: [/var/log/x] [error]"
NEEDS_HUMAN = "look at [/etc/app.conf] [error] by hand"
CANCEL_REASON = "stopped by [/admin] [error]"
SIGNAL = "ok-[/deploy]"

ALL = "all-statuses"
FLAGGED = "flagged"
CANCELLED = "cancelled"


#: A session in each session status.
SESSIONS = {SessionStatus.RUNNING: ALL, SessionStatus.FAILED: FLAGGED, SessionStatus.CANCELLED: CANCELLED,
            **{s: f"s-{s.value.lower()}" for s in (SessionStatus.PENDING, SessionStatus.WAITING,
                                                   SessionStatus.COMPLETED)}}


def _task(status: TaskStatus) -> str:
    return f"t-{status.value.lower()}"


async def _seed(url: str) -> SessionSnapshot:
    """A session in each session status: one RUNNING with a task in each task status, one FAILED
    and flagged, one CANCELLED, and plain PENDING, WAITING and COMPLETED ones."""
    async with open_store(url) as store:
        await store.initialize()
        await store.create_session(NewSession(ALL, "views", project_id="proj"),
                                   [NewTask(_task(s), "agent-x") for s in TaskStatus])
        lease = await store.claim_session(ALL, "seeder", 600)
        started = [TaskStatus.RUNNING, TaskStatus.WAITING, TaskStatus.COMPLETED, TaskStatus.FAILED,
                   TaskStatus.CANCELLED, TaskStatus.PENDING]
        await store.write_tasks(lease, [
            *(TaskWrite(TaskWriteKind.START, _task(s), 1) for s in started),
            TaskWrite(TaskWriteKind.SKIP, _task(TaskStatus.SKIPPED), 0, reason=SKIP_REASON),
        ])
        now = store.clock.now()
        await store.write_tasks(lease, [
            TaskWrite(TaskWriteKind.PROGRESS, _task(TaskStatus.RUNNING), 1, progress=Progress(1, 3, phase=PHASE)),
            # What the scheduler writes when an agent calls ctx.wait_for_signal(SIGNAL, timeout=7200).
            TaskWrite(TaskWriteKind.WAIT, _task(TaskStatus.WAITING), 1, not_before=now + 7200, waiting_for=SIGNAL),
            TaskWrite(TaskWriteKind.COMPLETE, _task(TaskStatus.COMPLETED), 1, output={"ok": True}),
            TaskWrite(TaskWriteKind.FAIL, _task(TaskStatus.FAILED), 1,
                      error=ErrorInfo("builtins.RuntimeError", ERROR, retryable=False)),
            TaskWrite(TaskWriteKind.CANCEL, _task(TaskStatus.CANCELLED), 1, reason=CANCEL_REASON),
            TaskWrite(TaskWriteKind.RETRY, _task(TaskStatus.PENDING), 1,
                      error=ErrorInfo("builtins.OSError", RETRY_ERROR), not_before=now + 3600),
        ])

        await store.create_session(NewSession(FLAGGED, "views"), [NewTask("t-1", "agent-x")])
        flagged = await store.claim_session(FLAGGED, "seeder", 600)
        await store.finish_session(flagged, SessionStatus.FAILED, REASON, needs_human_reason=NEEDS_HUMAN)

        await store.create_session(NewSession(CANCELLED, "views"), [NewTask("t-1", "agent-x")])
        await store.request_cancel(CANCELLED, CANCEL_REASON)

        await store.create_session(NewSession(SESSIONS[SessionStatus.PENDING], "views"), [NewTask("t-1", "agent-x")])
        for status in (SessionStatus.WAITING, SessionStatus.COMPLETED):
            sid = SESSIONS[status]
            await store.create_session(NewSession(sid, "views"), [NewTask("t-1", "agent-x")])
            held = await store.claim_session(sid, "seeder", 600)
            if status is SessionStatus.WAITING:
                assert await store.wait_session(held, None)
            else:
                await store.finish_session(held, status, None)
        return await store.load_session(ALL)


@pytest.fixture(params=["sqlite", "moto-server"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file, or a fresh table on the shared moto server (DynamoDB over HTTP)."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'views.db'}"
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        yield f"dynamodb://views-{uuid.uuid4().hex[:10]}?region=us-east-1&endpoint={endpoint}"


@pytest.fixture
def seeded(store_url: str) -> tuple[str, SessionSnapshot]:
    url = store_url
    snap = anyio.run(_seed, url)
    assert {t.task_id: t.status for t in snap.tasks.values()} == {_task(s): s for s in TaskStatus}
    return url, snap


def _shown(result: Result) -> str:
    """stdout with runs of whitespace as one space: a table may wrap a caption at any space."""
    assert result.code == 0 and "Traceback" not in result.err, result.err
    return " ".join(result.out.split())


def test_status_shows_every_task_status_and_agent_text_as_written(
    seeded: tuple[str, SessionSnapshot], tmp_path: Path
) -> None:
    url, _ = seeded
    result = cli("status", ALL, store=url, tmp=tmp_path)
    shown = _shown(result)
    for status in TaskStatus:
        [row] = [line for line in result.out.splitlines() if line.startswith("│") and f" {_task(status)} " in line]
        assert status.value in row, row
    assert f"RuntimeError: {ERROR}" in shown
    assert f"OSError: {RETRY_ERROR}" in shown
    assert f"1/3 {PHASE}" in shown
    assert "[error]" in shown and "[/tmp/out.txt]" in shown


def test_status_shows_reason_and_needs_human_as_written(seeded: tuple[str, SessionSnapshot], tmp_path: Path) -> None:
    url, _ = seeded
    shown = _shown(cli("status", FLAGGED, store=url, tmp=tmp_path))
    assert f"needs-human: {NEEDS_HUMAN}" in shown and f"reason: {REASON}" in shown and "FAILED" in shown
    cancelled = _shown(cli("status", CANCELLED, store=url, tmp=tmp_path))
    assert f"reason: {CANCEL_REASON}" in cancelled and "CANCELLED" in cancelled


def test_status_renders_a_session_in_every_session_status(seeded: tuple[str, SessionSnapshot], tmp_path: Path) -> None:
    url, _ = seeded
    assert set(SESSIONS) == set(SessionStatus)
    for status, sid in SESSIONS.items():
        title = _shown(cli("status", sid, store=url, tmp=tmp_path)).split(" created ")[0]
        assert f"{sid} views v1 {status.value} " in title, title


def test_list_shows_every_session_and_its_note_as_written(seeded: tuple[str, SessionSnapshot], tmp_path: Path) -> None:
    url, _ = seeded
    result = cli("list", store=url, tmp=tmp_path)
    shown = _shown(result)
    for status, sid in SESSIONS.items():
        [row] = [line for line in result.out.splitlines() if line.startswith(f"│ {sid} ")]
        assert f" {status.value} " in row, row
    assert f"needs-human: {NEEDS_HUMAN}" in shown and CANCEL_REASON in shown
    assert f"{len(SessionStatus)} session(s)" in shown
    flagged = _shown(cli("list", "--needs-human", store=url, tmp=tmp_path))
    assert NEEDS_HUMAN in flagged and CANCEL_REASON not in flagged


def test_a_failed_run_prints_the_agent_error_as_written(tmp_path: Path) -> None:
    marker = f"{tmp_path}/[error]/[/missing]"
    ran = cli("run", "demo_app:flaky", "--input", json.dumps({"marker": marker}), "--session-id", "bad",
              store=f"sqlite://{tmp_path / 'run.db'}", tmp=tmp_path)
    assert ran.code == 1 and "Traceback" not in ran.err, ran.err
    assert "session bad FAILED" in ran.out and marker in ran.out


def test_every_status_has_a_style() -> None:
    assert {s.value for s in TaskStatus} | {s.value for s in SessionStatus} <= set(STATUS_STYLE)
    assert all(STATUS_STYLE.values())


def test_the_status_view_colours_each_status_and_keeps_text_literal(seeded: tuple[str, SessionSnapshot]) -> None:
    _, snap = seeded
    out = io.StringIO()
    console = Console(file=out, width=220, force_terminal=True, color_system="standard", markup=True)
    segments = list(console.render(_status_view(snap)))
    for status in TaskStatus:
        expected = Style.parse(STATUS_STYLE[status.value])
        styles = [seg.style for seg in segments if seg.text.strip() == status.value and seg.style is not None]
        assert any(style + expected == style for style in styles), (status, styles)
    # Even a console with markup on shows the stored text, because the view holds Text, not markup.
    console.print(_status_view(snap))
    plain = Text.from_ansi(out.getvalue()).plain
    assert ERROR in " ".join(plain.split())


def test_status_says_which_signal_a_waiting_task_waits_for_and_until_when(
    seeded: tuple[str, SessionSnapshot], tmp_path: Path
) -> None:
    url, _ = seeded
    shown = _shown(cli("status", ALL, store=url, tmp=tmp_path))
    assert re.search(rf"task t-waiting waits for signal {re.escape(repr(SIGNAL))} until \S+ \S+ "
                     r"\(in (1h5\dm|2h00m)\)", shown), shown
    [wait] = cli("status", ALL, "--json", store=url, tmp=tmp_path).json()["waiting"]
    assert wait["task_id"] == "t-waiting" and wait["signal"] == SIGNAL and wait["until"] is not None


def _failed_run(url: str, tmp_path: Path) -> None:
    ran = cli("run", "demo_app:flaky", "--session-id", "bad", store=url, tmp=tmp_path)
    assert ran.code == 1 and "session bad FAILED (1/3 tasks completed)" in ran.out, (ran.out, ran.err)


def test_list_and_status_agree_with_run_on_a_failed_sessions_progress(store_url: str, tmp_path: Path) -> None:
    _failed_run(store_url, tmp_path)
    [row] = [line for line in cli("list", store=store_url, tmp=tmp_path).out.splitlines() if " bad " in line]
    assert " 1/3 " in row and "3/3" not in row, row
    [listed] = cli("list", "--json", store=store_url, tmp=tmp_path).json()["sessions"]
    assert (listed["progress"]["current"], listed["progress"]["total"]) == (1, 3)
    assert "bad flaky v1 FAILED 1/3 tasks completed" in _shown(cli("status", "bad", store=store_url, tmp=tmp_path))


def test_the_progress_bar_of_a_failed_run_stops_short_of_100_percent(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'bar.db'}"
    _failed_run(url, tmp_path)

    async def load() -> SessionSnapshot:
        async with open_store(url) as store:
            return await store.load_session("bad")

    out = io.StringIO()
    with SessionWatcher("bad", live=True, stream=out) as watcher:
        watcher.update(anyio.run(load))
    bar = [line for line in out.getvalue().splitlines() if "session bad [FAILED]" in line]
    assert bar and all("33%" in line and "100%" not in line for line in bar), out.getvalue()
