"""The installed `orchestrator` console script, end to end in child processes.

Each test runs the real script against a SQLite file and (where marked) a moto server
that serves one request at a time, then checks the JSON it printed against what the
Store holds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_helpers import APPS, cli, console_script, executions, spawn

from orchestrator.store import SessionSnapshot, SessionStatus, TaskStatus, open_store


@pytest.fixture(params=["sqlite", "moto-server"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'cli.db'}"
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        yield f"dynamodb://cli-{uuid.uuid4().hex[:10]}?region=us-east-1&endpoint={endpoint}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'cli.db'}"


def load(url: str, session_id: str) -> SessionSnapshot:
    async def go() -> SessionSnapshot:
        store = open_store(url)
        try:
            await store.initialize()
            return await store.load_session(session_id)
        finally:
            await store.aclose()

    result: SessionSnapshot = anyio.run(go)
    return result


def test_console_script_is_installed_next_to_the_interpreter() -> None:
    assert Path(console_script()).name == "orchestrator"


def test_help_lists_every_command_and_the_exit_codes(tmp_path: Path) -> None:
    result = cli("--help", store=None, tmp=tmp_path)
    assert result.code == 0
    for command in ("init", "doctor", "run", "submit", "worker", "status", "list", "events", "graph", "signal",
                    "approve", "reject", "resume", "cancel", "fork", "resume-failed", "purge", "metrics",
                    "export-iac", "iam-policy", "projects", "ui"):
        assert command in result.out
    assert "Exit codes" in result.out


def test_operator_workflow_init_run_status_list_fail_resume_metrics_graph(store_url: str, tmp_path: Path) -> None:
    assert cli("init", store=store_url, tmp=tmp_path).code == 0
    assert cli("init", store=store_url, tmp=tmp_path).code == 0  # idempotent
    doctor = cli("doctor", "--json", store=store_url, tmp=tmp_path)
    assert doctor.code == 0, doctor.err
    assert doctor.json()["ok"] is True

    ran = cli("run", "demo_app:small", "--input", '{"n": 1}', "--session-id", "ok-1", "--project", "p1",
              "--json", store=store_url, tmp=tmp_path)
    assert ran.code == 0, ran.err
    assert ran.json()["status"] == "COMPLETED"
    stored = load(store_url, "ok-1")
    assert stored.session.status is SessionStatus.COMPLETED
    assert ran.json()["outputs"]["ship"] == stored.tasks["ship"].output == {"task": "ship", "deps": ["code", "docs"]}

    status = cli("status", "ok-1", "--json", store=store_url, tmp=tmp_path).json()
    assert status["session"]["status"] == "COMPLETED" and status["session"]["project_id"] == "p1"
    assert {tid: t["attempt"] for tid, t in status["tasks"].items()} == {
        tid: t.attempt for tid, t in stored.tasks.items()
    }

    marker = tmp_path / "fixed"
    failed = cli("run", "demo_app:flaky", "--input", json.dumps({"marker": str(marker)}), "--session-id", "bad-1",
                 "--json", store=store_url, tmp=tmp_path)
    assert failed.code == 1
    assert failed.json()["tasks"] == {"prep": "COMPLETED", "fragile": "FAILED", "after": "SKIPPED"}

    listed = cli("list", "--status", "FAILED", "--json", store=store_url, tmp=tmp_path).json()
    assert [s["session_id"] for s in listed["sessions"]] == ["bad-1"]
    by_project = cli("list", "--project", "p1", "--json", store=store_url, tmp=tmp_path).json()
    assert [s["session_id"] for s in by_project["sessions"]] == ["ok-1"]

    marker.write_text("ok")
    swept = cli("resume-failed", "--app", "demo_app:flaky", "--older-than", "0s", "--json", store=store_url,
                tmp=tmp_path)
    assert swept.code == 0, swept.err
    assert swept.json()["resumed"] == {"bad-1": "COMPLETED"}
    after = load(store_url, "bad-1")
    assert after.session.status is SessionStatus.COMPLETED and after.session.redrive_count == 1
    assert after.tasks["prep"].attempt == 1  # completed work is kept, never re-run
    assert [(t, a) for t, a, _ in executions(tmp_path, "bad-1")] == [("prep", 1), ("fragile", 1), ("fragile", 2),
                                                                        ("after", 1)]

    metrics = cli("metrics", "--json", store=store_url, tmp=tmp_path)
    assert metrics.code == 0, metrics.err
    agents = {row["agent"]: row for row in metrics.json()["agents"]}
    assert agents["fragile"]["count"] == 2 and agents["fragile"]["errors"] == 1
    assert agents["step"]["count"] == 4 + 2
    assert agents["fragile"]["p95_ms"] is not None

    graph = cli("graph", "bad-1", "--format", "dot", store=store_url, tmp=tmp_path)
    assert graph.code == 0
    assert '"fragile" -> "after"' in graph.out and "COMPLETED" in graph.out


def test_graph_of_a_pipeline_needs_no_store(tmp_path: Path) -> None:
    result = cli("graph", "demo_app:small", "--format", "text", store=None, tmp=tmp_path)
    assert result.code == 0
    assert "ship (step) <- code, docs" in result.out
    assert not (tmp_path / "xdg").exists()


def test_factory_attribute_is_called_to_get_the_pipeline(tmp_path: Path) -> None:
    result = cli("graph", "demo_app:make_small", "--format", "text", store=None, tmp=tmp_path)
    assert result.code == 0 and "plan" in result.out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["status", "missing"], 3, "session 'missing' not found"),
        (["run", "demo_app:smal"], 2, "did you mean 'small'"),
        (["run", "no_such_module:small"], 2, "module 'no_such_module' was not found"),
        (["run", "demo_app:not_a_pipeline"], 2, "is a int, not an orchestrator Pipeline"),
        (["run", "demo_app:small", "--input", "{bad"], 2, "--input is not valid JSON"),
        (["resume-failed", "--app", "demo_app:flaky", "--older-than", "1 hour"], 2, "is not a duration"),
        (["signal", "missing", "t", "go"], 3, "not found"),
    ],
    ids=["unknown-session", "attribute-typo", "unknown-module", "wrong-type", "bad-json", "bad-duration",
         "signal-unknown-session"],
)
def test_expected_errors_print_one_line_and_exit_with_their_code(
    args: list[str], code: int, message: str, sqlite_url: str, tmp_path: Path
) -> None:
    assert cli("init", store=sqlite_url, tmp=tmp_path).code == 0
    result = cli(*args, store=sqlite_url, tmp=tmp_path)
    assert result.code == code, result.err
    assert message in result.err
    assert "Traceback" not in result.err


def test_reading_a_store_that_does_not_exist_says_so_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "typo" / "cli.db"
    result = cli("status", "s1", store=f"sqlite://{db}", tmp=tmp_path)
    assert result.code == 5, result.err
    assert f"store file {db} does not exist" in result.err and "orchestrator init" in result.err
    assert not db.parent.exists()


def test_a_taken_session_id_is_a_conflict(sqlite_url: str, tmp_path: Path) -> None:
    assert cli("run", "demo_app:small", "--session-id", "dup", store=sqlite_url, tmp=tmp_path).code == 0
    again = cli("run", "demo_app:small", "--session-id", "dup", store=sqlite_url, tmp=tmp_path)
    assert again.code == 4
    assert "already exists" in again.err


def test_bad_store_url_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("list", store="postgres://x", tmp=tmp_path)
    assert result.code == 2 and "unknown scheme" in result.err


def test_unreachable_dynamodb_exits_5(tmp_path: Path) -> None:
    url = "dynamodb://t-unreachable?region=us-east-1&endpoint=http://127.0.0.1:9&max_attempts=1&timeout=1"
    result = cli("list", store=url, tmp=tmp_path)
    assert result.code == 5, result.err
    assert "127.0.0.1:9" in result.err


def test_approval_waits_then_approve_lets_a_worker_finish(sqlite_url: str, tmp_path: Path) -> None:
    ran = cli("run", "demo_app:approval", "--session-id", "ap-1", "--json", store=sqlite_url, tmp=tmp_path)
    assert ran.code == 6 and ran.json()["status"] == "WAITING"
    assert load(sqlite_url, "ap-1").tasks["review"].status is TaskStatus.WAITING
    approved = cli("approve", "ap-1", "review", "--comment", "lgtm", store=sqlite_url, tmp=tmp_path)
    assert approved.code == 0, approved.err
    worker = cli("worker", "--app", "demo_app:approval", "--idle-exit", "0.5s", "--poll-interval", "0.1s",
                 "--json", store=sqlite_url, tmp=tmp_path)
    assert worker.code == 0, worker.err
    assert worker.json()["results"] == {"ap-1": "COMPLETED"}
    done = load(sqlite_url, "ap-1")
    assert done.tasks["review"].output == {"approved": True, "comment": "lgtm"}


def test_reject_fails_the_waiting_task_with_the_reason(sqlite_url: str, tmp_path: Path) -> None:
    assert cli("run", "demo_app:approval", "--session-id", "ap-2", store=sqlite_url, tmp=tmp_path).code == 6
    assert cli("reject", "ap-2", "review", "--reason", "too risky", store=sqlite_url, tmp=tmp_path).code == 0
    resumed = cli("resume", "ap-2", "--app", "demo_app:approval", store=sqlite_url, tmp=tmp_path)
    assert resumed.code == 1
    snap = load(sqlite_url, "ap-2")
    assert snap.session.status is SessionStatus.FAILED
    assert snap.tasks["review"].last_error is not None and "too risky" in snap.tasks["review"].last_error.message


def test_submit_then_cancel_a_session_nobody_holds(sqlite_url: str, tmp_path: Path) -> None:
    submitted = cli("submit", "demo_app:small", "--input", "{}", store=sqlite_url, tmp=tmp_path)
    assert submitted.code == 0
    sid = submitted.out.strip()
    assert load(sqlite_url, sid).session.status is SessionStatus.PENDING
    cancelled = cli("cancel", sid, "--reason", "not needed", "--json", store=sqlite_url, tmp=tmp_path)
    assert cancelled.code == 0
    assert cancelled.json()["status"] == "CANCELLED" == load(sqlite_url, sid).session.status.value


def test_fork_keeps_upstream_outputs_and_reruns_the_task_and_its_dependents(sqlite_url: str, tmp_path: Path) -> None:
    assert cli("run", "demo_app:small", "--session-id", "orig", store=sqlite_url, tmp=tmp_path).code == 0
    forked = cli("fork", "orig", "--from", "code", "--app", "demo_app:small", "--session-id", "copy", "--run",
                 "--json", store=sqlite_url, tmp=tmp_path)
    assert forked.code == 0, forked.err
    assert forked.json()["status"] == "COMPLETED"
    ran = sorted(t for t, _, _ in executions(tmp_path, "copy"))
    assert ran == ["code", "ship"]  # plan and docs kept (upstream / independent)
    snap = load(sqlite_url, "copy")
    assert snap.tasks["plan"].output == load(sqlite_url, "orig").tasks["plan"].output
    assert snap.session.metadata["forked_from"] == "orig"


def test_list_pages_with_the_printed_cursor(sqlite_url: str, tmp_path: Path) -> None:
    for i in range(3):
        assert cli("submit", "demo_app:small", "--session-id", f"pg-{i}", store=sqlite_url, tmp=tmp_path).code == 0
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        args = ["list", "--status", "PENDING", "--limit", "2", "--json"] + (["--cursor", cursor] if cursor else [])
        page: dict[str, Any] = cli(*args, store=sqlite_url, tmp=tmp_path).json()
        seen.extend(s["session_id"] for s in page["sessions"])
        cursor = page["cursor"]
        if cursor is None:
            break
    assert sorted(seen) == ["pg-0", "pg-1", "pg-2"]


def test_events_json_lines_match_the_store(sqlite_url: str, tmp_path: Path) -> None:
    marker = tmp_path / "never"
    cli("run", "demo_app:flaky", "--session-id", "ev-1", "--input", json.dumps({"marker": str(marker)}),
        store=sqlite_url, tmp=tmp_path)
    result = cli("events", "ev-1", "--json", store=sqlite_url, tmp=tmp_path)
    assert result.code == 0
    kinds = [json.loads(line)["kind"] for line in result.out.splitlines()]
    assert "failed" in kinds  # the failure is recorded as an event

    async def stored() -> list[str]:
        store = open_store(sqlite_url)
        try:
            return [e.kind for e in (await store.read_events("ev-1", limit=1000)).items]
        finally:
            await store.aclose()

    assert kinds == anyio.run(stored)


def test_export_iac_and_iam_policy_work_without_aws(tmp_path: Path) -> None:
    cfn = cli("export-iac", "--format", "cloudformation", "--table", "orders-state", "--deletion-protection",
              store=None, tmp=tmp_path)
    assert cfn.code == 0
    props = cfn.json()["Resources"]["OrchestratorTable"]["Properties"]
    assert props["TableName"] == "orders-state" and props["DeletionProtectionEnabled"] is True
    tf = cli("export-iac", "--format", "terraform", store="dynamodb://orders-state?region=eu-west-1", tmp=tmp_path)
    assert tf.code == 0 and 'resource "aws_dynamodb_table"' in tf.out
    policy = cli("iam-policy", "--table", "orders-state", "--region", "eu-west-1", store=None, tmp=tmp_path).json()
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert "dynamodb:Scan" not in actions and "dynamodb:Query" in actions


def test_purge_reports_what_it_removed(sqlite_url: str, tmp_path: Path) -> None:
    assert cli("run", "demo_app:small", "--session-id", "old-1", store=sqlite_url, tmp=tmp_path).code == 0
    kept = cli("purge", "--older-than", "90d", "--json", store=sqlite_url, tmp=tmp_path).json()
    assert kept["sessions"] == 0
    purged = cli("purge", "--older-than", "0s", "--json", store=sqlite_url, tmp=tmp_path).json()
    assert purged["sessions"] == 1
    assert cli("status", "old-1", store=sqlite_url, tmp=tmp_path).code == 3


def test_json_logs_go_to_stderr_one_object_per_line(sqlite_url: str, tmp_path: Path) -> None:
    result = cli("--log-format", "json", "--log-level", "DEBUG", "run", "demo_app:small", "--json",
                 store=sqlite_url, tmp=tmp_path)
    assert result.code == 0
    lines = [line for line in result.err.splitlines() if line.startswith("{")]
    assert lines and all("level" in json.loads(line) for line in lines)
    assert result.json()["status"] == "COMPLETED"


def test_debug_logs_show_no_aws_credentials_and_no_request_bodies(moto_endpoint: str, tmp_path: Path) -> None:
    secrets = {"AWS_ACCESS_KEY_ID": "AKIALOGCHECKKEYID", "AWS_SECRET_ACCESS_KEY": "logchecksecret",
               "AWS_SESSION_TOKEN": "LOGCHECKSESSIONTOKEN"}
    url = f"dynamodb://t-{uuid.uuid4().hex[:12]}?region=us-east-1&endpoint={moto_endpoint}"
    result = cli("--log-level", "DEBUG", "init", store=url, tmp=tmp_path, env=secrets)
    assert result.code == 0, result.err
    assert "AKIALOGCHECKKEYID" not in result.err and "LOGCHECKSESSIONTOKEN" not in result.err
    assert "AttributeDefinitions" not in result.err  # CreateTable's body


def test_verbose_says_which_store_is_used(sqlite_url: str, tmp_path: Path) -> None:
    assert cli("init", store=sqlite_url, tmp=tmp_path).code == 0
    result = cli("-v", "list", store=sqlite_url, tmp=tmp_path)
    assert result.code == 0
    assert f"store: sqlite:{sqlite_url.removeprefix('sqlite://')}" in result.err


def test_default_store_is_sqlite_in_the_xdg_state_dir(tmp_path: Path) -> None:
    result = cli("doctor", "--json", store=None, tmp=tmp_path)
    assert result.json()["location"] == str(tmp_path / "xdg" / "orchestrator" / "state.db")
    assert APPS.exists()


def test_projects_lists_a_users_history_with_download_counts(sqlite_url: str, tmp_path: Path) -> None:
    from orchestrator.store import UserProjectRecord

    async def seed() -> None:
        store = open_store(sqlite_url)
        try:
            await store.initialize()
            for pid in ("todo-app", "notes-app", "blog"):
                await store.put_user_project(UserProjectRecord("u-1", pid, pid.title(), tech_stack=("React",),
                                                               size_mb=1.5))
            await store.put_user_project(UserProjectRecord("u-2", "other", "Other"))
            await store.record_download("u-1", "todo-app", "d-1")
            await store.record_download("u-1", "todo-app", "d-2")
        finally:
            await store.aclose()

    anyio.run(seed)
    first = cli("projects", "u-1", "--limit", "2", "--json", store=sqlite_url, tmp=tmp_path).json()
    assert [p["project_id"] for p in first["projects"]] == ["blog", "notes-app"]
    rest = cli("projects", "u-1", "--cursor", first["cursor"], "--json", store=sqlite_url, tmp=tmp_path).json()
    assert rest["cursor"] is None
    [todo] = rest["projects"]
    assert (todo["project_id"], todo["download_count"], todo["tech_stack"], todo["size_mb"]) == (
        "todo-app", 2, ["React"], 1.5)
    table = cli("projects", "u-1", store=sqlite_url, tmp=tmp_path)
    assert table.code == 0 and "3 project(s) of user u-1" in table.out and "Todo-App" in table.out


def test_status_watch_follows_a_session_until_a_worker_completes_it(sqlite_url: str, tmp_path: Path) -> None:
    submitted = cli("submit", "demo_app:small", "--input", "{}", "--session-id", "watched", store=sqlite_url,
                    tmp=tmp_path)
    assert submitted.code == 0, submitted.err
    watcher = spawn("status", "watched", "--watch", "--json", store=sqlite_url, tmp=tmp_path)
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()  # the watcher has seen the session before the worker starts
        worker = cli("worker", "--app", "demo_app:small", "--idle-exit", "0.5s", "--poll-interval", "0.1s",
                     store=sqlite_url, tmp=tmp_path)
        assert worker.code == 0, worker.err
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(timeout=10)
    assert watcher.returncode == 0, err
    views = [json.loads(line) for line in [first, *out.splitlines()] if line.strip()]
    assert views[0]["session"]["status"] == "PENDING"
    assert views[-1]["session"]["status"] == "COMPLETED" == load(sqlite_url, "watched").session.status.value


def test_events_follow_prints_the_whole_history_and_stops_when_the_session_has_ended(
    sqlite_url: str, tmp_path: Path
) -> None:
    assert cli("run", "demo_app:small", "--session-id", "ev-f", store=sqlite_url, tmp=tmp_path).code == 0
    followed = cli("events", "ev-f", "--follow", "--json", store=sqlite_url, tmp=tmp_path, timeout=60)
    assert followed.code == 0, followed.err
    printed = [json.loads(line) for line in followed.out.splitlines() if line.strip()]
    plain = cli("events", "ev-f", "--json", store=sqlite_url, tmp=tmp_path)
    assert printed == [json.loads(line) for line in plain.out.splitlines() if line.strip()]
