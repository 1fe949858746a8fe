"""The examples run, and leave the state they claim in the store (not just in their output).

Each test runs an example against a fresh SQLite file (and the t-developer and
miyabi ones also against the one-request-at-a-time moto server), then reads the
store: sessions, tasks, attempts, outputs, edges, events, metrics, produced files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

# `examples` is a top-level package of the checkout, not installed: make it importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples import crash_and_resume, deploy_progress, miyabi_issue, nightly_digest, t_developer
from examples._common import REPO_ROOT, utc_day
from orchestrator.metrics import agent_stats, project_stats
from orchestrator.schedules import list_schedules
from orchestrator.state import StateAPI
from orchestrator.store import OwnerKind, SessionStatus, Store, TaskStatus, open_store

pytestmark = pytest.mark.anyio


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'state.db'}"


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[Store]:
    store = open_store(sqlite_url)
    await store.initialize()
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
async def moto_store(moto_endpoint: str) -> AsyncIterator[Store]:
    store = open_store(f"dynamodb://ex-{uuid.uuid4().hex[:10]}?region=us-east-1&endpoint={moto_endpoint}")
    await store.initialize()
    try:
        yield store
    finally:
        await store.aclose()


async def _check_t_developer(store: Store, workdir: Path) -> None:
    out = await t_developer.run_example(store, workdir, pipeline_type="PRODUCTION")
    snap = await store.load_session(out.result.session_id)
    session = snap.session
    assert (session.status, session.pipeline_type, session.project_id, session.user_id) == (
        SessionStatus.COMPLETED, "PRODUCTION", "todo-app.user-1", "user-1"
    )
    assert set(snap.tasks) == set(t_developer.AGENTS)
    assert all(t.status is TaskStatus.COMPLETED and t.attempt == 1 for t in snap.tasks.values())
    chain = {(e.task_id, e.depends_on) for e in snap.edges}
    assert chain == set(zip(t_developer.AGENTS[1:], t_developer.AGENTS[:-1], strict=True))
    artifact = snap.tasks["download"].output
    assert artifact["tech_stack"] == ["React", "Node.js"]
    assert {"package.json", "README.md", "server/index.js", "src/components/TodoList.jsx", "Dockerfile"} <= set(
        artifact["files"]
    )
    project_dir = Path(artifact["project_dir"])
    assert (project_dir / "src" / "components" / "TodoForm.jsx").read_text().count("<input") == 2
    with zipfile.ZipFile(artifact["zip_path"]) as archive:
        assert sorted(n.split("/", 1)[1] for n in archive.namelist()) == artifact["files"]
    project = await store.get_user_project("user-1", "todo-app.user-1")
    assert (project.download_count, project.tech_stack, project.size_mb, project.file_path) == (
        1, ("React", "Node.js"), artifact["size_mb"], artifact["zip_path"])
    assert project.project_name == artifact["project_name"] and project.last_accessed is not None
    assert out.user_project == project
    sessions = (await store.list_project_sessions("todo-app.user-1")).items
    assert [s.session_id for s in sessions] == [out.result.session_id]  # a download is not a session
    day = utc_day(store.clock.now())  # metrics are stamped by the store's clock
    per_agent = {row.agent: row for row in await agent_stats(store, day)}
    assert all(per_agent[a].count == 1 and per_agent[a].errors == 0 for a in t_developer.AGENTS)
    stats = await project_stats(store, "todo-app.user-1", [day])
    assert (stats.total, stats.completed, stats.failed) == (1, 1, 0)


async def test_t_developer_generates_a_project_and_records_history_on_sqlite(
    sqlite_store: Store, tmp_path: Path
) -> None:
    await _check_t_developer(sqlite_store, tmp_path / "out")


async def test_t_developer_runs_on_the_moto_server(moto_store: Store, tmp_path: Path) -> None:
    await _check_t_developer(moto_store, tmp_path / "out")


async def test_t_developer_is_deterministic_and_counts_downloads(sqlite_store: Store, tmp_path: Path) -> None:
    first = await t_developer.run_example(sqlite_store, tmp_path / "a")
    second = await t_developer.run_example(sqlite_store, tmp_path / "b")
    assert first.artifact["sha256"] == second.artifact["sha256"]
    assert second.user_project.download_count == 2
    api_view = await StateAPI(sqlite_store).get_user_project("user-1", "todo-app.user-1")
    assert api_view is not None and api_view.download_count == 2
    again = await t_developer.record_download(sqlite_store, user_id="user-1", project_id="todo-app.user-1",
                                              artifact=second.artifact, download_id=second.result.session_id)
    assert again.download_count == 2  # the same download id, retried: not counted twice
    assert [p.project_id for p in await StateAPI(sqlite_store).list_user_projects("user-1")] == ["todo-app.user-1"]


async def _check_miyabi(store: Store, workdir: Path) -> None:
    out = await miyabi_issue.run_example(store, workdir, approve_as="tester")
    sid = out.waiting.session_id
    assert out.waiting.status is SessionStatus.WAITING
    assert out.finished is not None and out.finished.status is SessionStatus.COMPLETED
    snap = await store.load_session(sid)
    tasks = snap.tasks
    added = {tid for tid, t in tasks.items() if t.added_by == "coordinator"}
    assert added == {"codegen-settings", "codegen-toggle", "codegen-styles", "codegen-docs", "review", "approval", "pr"}
    assert {tid: tasks[tid].priority for tid in added if tid.startswith("codegen")} == {
        "codegen-settings": 0, "codegen-toggle": 1, "codegen-styles": 2, "codegen-docs": 3
    }
    edges = {(e.task_id, e.depends_on) for e in snap.edges}
    assert {("codegen-toggle", "codegen-settings"), ("codegen-styles", "codegen-toggle"),
            ("review", "codegen-docs"), ("approval", "review"), ("pr", "approval")} <= edges
    assert all(t.status is TaskStatus.COMPLETED for t in tasks.values())
    flaky = tasks["codegen-toggle"]
    assert flaky.attempt == 2 and flaky.history[0].error is not None
    assert "timed out" in flaky.history[0].error.message
    assert all(t.attempt == 1 for tid, t in tasks.items() if tid != "codegen-toggle")
    assert tasks["approval"].output == {"approved": True, "by": "tester"}
    assert snap.signals[("approval", "approval")].payload == {"approved": True, "by": "tester"}
    assert tasks["pr"].output["approved_by"] == "tester"
    patch = Path(tasks["pr"].output["patch"]).read_text()
    assert "+++ b/src/toggle.py" in patch and "+++ b/docs/dark-mode.md" in patch
    assert (workdir / "repo" / "src" / "settings.py").exists()
    events = (await store.read_events(sid, limit=500)).items
    assert any(e.kind == "wait" for e in events)


async def test_miyabi_issue_grows_its_dag_retries_and_waits_for_approval_on_sqlite(
    sqlite_store: Store, tmp_path: Path
) -> None:
    await _check_miyabi(sqlite_store, tmp_path / "work")


async def test_miyabi_issue_runs_on_the_moto_server(moto_store: Store, tmp_path: Path) -> None:
    await _check_miyabi(moto_store, tmp_path / "work")


async def test_miyabi_issue_without_approval_stays_waiting_and_holds_no_lease(
    sqlite_store: Store, tmp_path: Path
) -> None:
    out = await miyabi_issue.run_example(sqlite_store, tmp_path, approve_as=None)
    session = await sqlite_store.get_session(out.waiting.session_id)
    assert session.status is SessionStatus.WAITING and session.lease_owner is None
    task = await sqlite_store.get_task(session.session_id, "approval")
    assert task.status is TaskStatus.WAITING
    assert (await sqlite_store.get_task(session.session_id, "pr")).status is TaskStatus.PENDING


def test_parse_issue_rejects_an_unknown_dependency() -> None:
    text = "# #7 Thing\n\n## Tasks\n- [P1] a: do a -> a.py (after ghost)\n"
    with pytest.raises(ValueError, match="unknown task"):
        miyabi_issue.parse_issue(text)


async def test_deploy_runs_29_command_steps_under_the_scheduler(sqlite_store: Store, tmp_path: Path) -> None:
    result = await deploy_progress.run_scheduled(sqlite_store, tmp_path / "out")
    snap = await sqlite_store.load_session(result.session_id)
    assert snap.session.status is SessionStatus.COMPLETED and snap.session.progress.total == 29
    assert len(snap.tasks) == 29 and all(t.status is TaskStatus.COMPLETED for t in snap.tasks.values())
    assert snap.tasks["step-05"].output == {"returncode": 0, "stdout_tail": ["[5/29] Bootstrap: Staging bucket"]}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"step-{n:02d}.done" for n in range(1, 30)]
    events = (await sqlite_store.read_events(result.session_id, limit=500)).items
    lines = [e.message for e in events if e.kind == "log"]
    assert lines == [f"[{s.number}/29] {s.phase}: {s.name}" for s in deploy_progress.STEPS]


async def test_deploy_progress_is_recorded_by_a_plain_script_through_the_state_api(
    sqlite_store: Store, tmp_path: Path
) -> None:
    ext = await deploy_progress.run_external(sqlite_store, tmp_path / "out")
    session = ext.session
    assert (session.status, session.owner_kind, session.project_id) == (
        SessionStatus.COMPLETED, OwnerKind.EXTERNAL, "miyabi-webui"
    )
    assert (session.progress.current, session.progress.total, session.progress.phase, session.progress.step) == (
        29, 29, "Verification", "Notify"
    )
    assert session.metadata["task_type"] == "cdk_deploy" and session.metadata["log_stream"].startswith("task-")
    task = await sqlite_store.get_task(session.session_id, deploy_progress.app.EXTERNAL_TASK)
    assert task.status is TaskStatus.COMPLETED and task.output["steps"] == 29
    events = (await sqlite_store.read_events(session.session_id, limit=500)).items
    assert sum(e.kind == "log" for e in events) == 29
    assert len(list((tmp_path / "out").glob("step-*.done"))) == 29


async def test_crash_and_resume_reruns_only_the_tasks_in_flight(
    sqlite_store: Store, sqlite_url: str, tmp_path: Path
) -> None:
    out = await crash_and_resume.run_example(sqlite_store, sqlite_url, tmp_path / "work")
    assert out.dead_session.status is SessionStatus.RUNNING
    assert out.dead_session.lease_owner == f"doomed-worker-{out.killed_pid}"
    assert out.at_kill["slow_a"] is TaskStatus.RUNNING and out.at_kill["slow_b"] is TaskStatus.RUNNING
    assert out.at_kill["prepare"] is TaskStatus.COMPLETED and out.at_kill["quick_c"] is TaskStatus.COMPLETED
    snap = await sqlite_store.load_session(out.session_id)
    assert snap.session.status is SessionStatus.COMPLETED and snap.session.fence == out.dead_session.fence + 1
    tasks = snap.tasks
    assert {tid: t.attempt for tid, t in tasks.items()} == {
        "prepare": 1, "quick_c": 1, "slow_a": 2, "slow_b": 2, "combine": 1, "publish": 1
    }
    assert tasks["quick_c"].output["pid"] == out.killed_pid  # kept from the dead worker, not re-run
    assert tasks["slow_a"].output["pid"] == os.getpid()
    assert out.runs == {"prepare": 1, "quick_c": 1, "slow_a": 2, "slow_b": 2, "combine": 1, "publish": 1}


def test_demo_runs_as_a_script_and_leaves_its_sessions_in_the_store(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'demo.db'}"
    env = {**os.environ, "ORCHESTRATOR_STORE": url, "PYTHONPATH": str(REPO_ROOT)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "examples.demo"], cwd=REPO_ROOT, env=env, capture_output=True,
                          timeout=90, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert time.monotonic() - started < 60

    async def stored() -> dict[str, list[str]]:
        store = open_store(url)
        await store.initialize()
        try:
            out: dict[str, list[str]] = {}
            for status in (SessionStatus.COMPLETED, SessionStatus.WAITING, SessionStatus.FAILED):
                page = await store.list_sessions(status, limit=100)
                out[status.value] = sorted(s.pipeline for s in page.items)
            return out
        finally:
            await store.aclose()

    by_status = anyio.run(stored)
    assert by_status["FAILED"] == []
    assert by_status["WAITING"] == ["miyabi-issue"]
    assert {"t-developer", "miyabi-issue", "deploy-progress", "cdk-deploy-script", "crash-and-resume"} <= set(
        by_status["COMPLETED"]
    )


def test_every_command_the_demo_prints_runs_as_printed(tmp_path: Path) -> None:
    """Every one, in the printed order, from the repo root, each in a fresh shell whose PATH
    lacks the venv (not activated)."""
    url = f"sqlite://{tmp_path / 'demo.db'}"
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if Path(p).resolve() != Path(sys.executable).parent.resolve())
    env = {**os.environ, "ORCHESTRATOR_STORE": url, "PYTHONPATH": str(REPO_ROOT), "PATH": path}
    done = subprocess.run([sys.executable, "-m", "examples.demo"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout.split("Try next", 1)[1].splitlines()[1:]
    commands = [line.strip() for line in printed if line.startswith("  ") and not line.strip().startswith("(")]
    assert len(commands) >= 9 and commands[0].startswith("export ORCHESTRATOR_STORE=")
    assert any(" approve " in c for c in commands) and any(" resume " in c for c in commands)
    for command in commands[1:]:  # in order: `approve` comes before the `resume` it lets finish
        ran = subprocess.run(["bash", "-c", f"{commands[0]} && {command}"], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=60, check=False)
        assert ran.returncode == 0, f"{command!r} failed as printed: {ran.stderr[-1000:]}"


async def test_nightly_digest_paces_its_llm_fan_out_under_the_fleet_limit_and_is_scheduled(
    sqlite_store: Store,
) -> None:
    run = await nightly_digest.run_digest(sqlite_store)
    assert (run.status, run.items, run.most_at_once) == ("COMPLETED", 8, 3)
    [schedule] = await list_schedules(sqlite_store)
    assert (schedule.cron, schedule.timezone, schedule.last_session) == ("0 6 * * *", "Europe/Berlin", run.session_id)
