"""The state API: external sessions recorded by code running its own loop, and the
dict-shaped calls on top of it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from orchestrator.codec import Secret
from orchestrator.errors import (
    ClaimRejectedError,
    LeaseLostError,
    SessionStateError,
    TaskCompletedError,
    TaskNotFoundError,
    UserProjectNotFoundError,
    ValidationError,
)
from orchestrator.metrics import agent_stats, day_of, project_stats
from orchestrator.state import SessionRecorder, StateAPI
from orchestrator.store import (
    ClaimPolicy,
    NewTask,
    OwnerKind,
    SessionStatus,
    Store,
    TaskStatus,
)
from orchestrator.testing import FakeClock

# Store-specific behaviour runs on SQLite and in-process DynamoDB (moto); the rest on SQLite.
pytestmark = [pytest.mark.anyio, pytest.mark.backends("sqlite")]

SEED_AGENTS = ("nl_input", "ui_selection", "parser", "component_decision", "match_rate", "search",
               "generation", "assembly", "download")


@pytest.mark.backends("sqlite", "moto")
async def test_deploy_script_reports_progress_with_phase_and_step(store: Store) -> None:
    rec = await SessionRecorder.start(store, "task-cdk-deploy-1763204866", pipeline="cdk_deploy",
                                      tasks=["cdk"], project_id="miyabi-webui")
    await rec.task_started("cdk")
    await rec.progress("cdk", 5, 29, phase="CloudFormation Stack Creation", step="CloudFront Distribution")
    snap = await store.load_session(rec.session_id)
    assert snap.session.owner_kind is OwnerKind.EXTERNAL
    assert snap.session.status is SessionStatus.RUNNING
    assert snap.session.current_agents == ("cdk",)
    for progress in (snap.session.progress, snap.tasks["cdk"].progress):
        assert (progress.current, progress.total, progress.percentage) == (5, 29, 17.2)
        assert (progress.phase, progress.step) == ("CloudFormation Stack Creation", "CloudFront Distribution")
    await rec.task_completed("cdk", {"stack": "web"})
    done = await rec.finish()
    assert done.status is SessionStatus.COMPLETED
    task = await store.get_task(rec.session_id, "cdk")
    assert (task.status, task.output, task.attempt) == (TaskStatus.COMPLETED, {"stack": "web"}, 1)


async def test_context_manager_fails_the_session_with_the_exception(store: Store) -> None:
    with pytest.raises(RuntimeError, match="stack rollback"):
        async with await SessionRecorder.start(store, pipeline="deploy", tasks=["cdk"]) as rec:
            await rec.task_started("cdk")
            raise RuntimeError("stack rollback")
    session = await store.get_session(rec.session_id)
    assert session.status is SessionStatus.FAILED
    assert session.reason is not None and "stack rollback" in session.reason
    assert (await store.get_task(rec.session_id, "cdk")).status is TaskStatus.CANCELLED


async def test_context_manager_completes_and_flushes_metrics(store: Store, fake_clock: FakeClock) -> None:
    async with await SessionRecorder.start(store, pipeline="deploy", tasks=["cdk"], project_id="web") as rec:
        await rec.task_started("cdk")
        fake_clock.advance(2.0)
        await rec.task_completed("cdk")
        await rec.metric("deploy_bytes", "cdk", value=1024)
    assert (await store.get_session(rec.session_id)).status is SessionStatus.COMPLETED
    day, _ = day_of(fake_clock.now())
    (cdk,) = await agent_stats(store, day, "cdk")
    assert (cdk.count, cdk.sum_ms) == (1, 2000.0)
    stats = await project_stats(store, "web", [day])
    assert (stats.total, stats.completed) == (1, 1)
    (custom,) = await store.read_metrics(day, name="deploy_bytes")
    assert custom.sum_ms == 1024


async def test_context_manager_cancels_the_session_when_cancelled(store: Store) -> None:
    with anyio.CancelScope() as scope:
        async with await SessionRecorder.start(store, pipeline="deploy", tasks=["cdk"]) as rec:
            await rec.task_started("cdk")
            scope.cancel()
            await anyio.sleep(0)
    session = await store.get_session(rec.session_id)
    assert session.status is SessionStatus.CANCELLED
    assert (await store.get_task(rec.session_id, "cdk")).status is TaskStatus.CANCELLED


@pytest.mark.backends("sqlite", "moto")
async def test_external_sessions_cannot_be_claimed(store: Store) -> None:
    rec = await SessionRecorder.start(store, pipeline="deploy", tasks=["cdk"])
    with pytest.raises(ClaimRejectedError, match="external"):
        await store.claim_session(rec.session_id, "worker-1", 30.0)
    await rec.finish("FAILED", "broken")
    with pytest.raises(ClaimRejectedError):
        await store.claim_session(rec.session_id, "worker-1", 30.0, ClaimPolicy(redrive_failed=True, force=True))


@pytest.mark.backends("sqlite", "moto")
async def test_attach_continues_with_the_right_token(store: Store) -> None:
    first = await SessionRecorder.start(store, pipeline="deploy", tasks=["build", "cdk"])
    await first.task_started("build")
    await first.task_completed("build", "ok")
    other = await SessionRecorder.attach(store, first.session_id, first.token)
    assert other.task_status("build") is TaskStatus.COMPLETED
    await other.task_started("cdk")
    await other.task_completed("cdk")
    assert (await other.finish()).status is SessionStatus.COMPLETED


async def test_attach_with_a_wrong_token_is_rejected(store: Store) -> None:
    rec = await SessionRecorder.start(store, pipeline="deploy", tasks=["cdk"])
    with pytest.raises(LeaseLostError, match="token"):
        await SessionRecorder.attach(store, rec.session_id, "not-the-token")


async def test_the_store_never_holds_the_token(store: Store) -> None:
    rec = await SessionRecorder.start(store, pipeline="deploy")
    session = await store.get_session(rec.session_id)
    assert session.lease_owner is not None and rec.token not in session.lease_owner


@pytest.mark.backends("sqlite", "moto")
async def test_a_task_completes_exactly_once(store: Store) -> None:
    rec = await SessionRecorder.start(store, pipeline="deploy", tasks=["cdk"])
    await rec.task_completed("cdk", 1)
    with pytest.raises(TaskCompletedError):
        await rec.task_completed("cdk", 2)
    assert (await store.get_task(rec.session_id, "cdk")).output == 1


@pytest.mark.backends("sqlite", "moto")
async def test_failed_task_starts_a_new_attempt(store: Store) -> None:
    rec = await SessionRecorder.start(store, pipeline="deploy", tasks=[NewTask("cdk", agent="cdk_agent")])
    await rec.task_started("cdk")
    await rec.task_failed("cdk", TimeoutError("throttled"))
    await rec.task_started("cdk")
    await rec.task_completed("cdk")
    task = await store.get_task(rec.session_id, "cdk")
    assert (task.status, task.attempt) == (TaskStatus.COMPLETED, 2)
    assert task.history[0].error is not None and "throttled" in task.history[0].error.message


async def test_unknown_task_is_refused_before_any_write(store: Store) -> None:
    rec = await SessionRecorder.start(store, pipeline="deploy", tasks=["cdk"])
    with pytest.raises(TaskNotFoundError, match="declare every task"):
        await rec.task_started("cdn")


async def test_finish_completed_refuses_while_a_task_runs(store: Store) -> None:
    rec = await SessionRecorder.start(store, pipeline="deploy", tasks=["cdk"])
    await rec.task_started("cdk")
    with pytest.raises(SessionStateError, match="cdk"):
        await rec.finish()
    assert (await store.get_session(rec.session_id)).status is SessionStatus.RUNNING


async def test_logs_are_session_events(store: Store) -> None:
    rec = await SessionRecorder.start(store, pipeline="deploy", tasks=["cdk"])
    await rec.log("Deployment started", task_id="cdk", phase="CloudFormation Stack Creation")
    page = await store.read_events(rec.session_id)
    (event,) = [e for e in page.items if e.kind == "log"]
    assert (event.message, event.task_id, dict(event.data)) == (
        "Deployment started", "cdk", {"phase": "CloudFormation Stack Creation"}
    )


@pytest.mark.backends("sqlite")
async def test_secrets_never_reach_the_store(store: Store, tmp_path: Path) -> None:
    secret = "sk-live-7f3a9c1e-do-not-store"
    rec = await SessionRecorder.start(
        store, pipeline="deploy", tasks=[NewTask("cdk", agent="cdk", input={"key": Secret(secret)})],
        input={"api_key": Secret(secret, name="API_KEY")}, metadata={"auth": Secret(secret)},
    )
    await rec.task_started("cdk", input={"token": Secret(secret)})
    await rec.log("using credentials", task_id="cdk", token=Secret(secret))
    await rec.task_completed("cdk", {"echo": Secret(secret)})
    await rec.finish()
    await store.aclose()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "state.db" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


# -- the dict-shaped calls ------------------------------------------------------------------


@pytest.mark.backends("sqlite", "moto")
async def test_dict_api_pipeline_session_and_agent_executions(store: Store) -> None:
    api = StateAPI(store, pipeline="t-developer", agents=SEED_AGENTS)
    project_id = "proj-42"
    await api.save_pipeline_session({
        "session_id": project_id, "user_id": "u-1", "project_name": "My Todo App",
        "pipeline_type": "PRODUCTION", "status": "ACTIVE", "current_agent": "nl_input", "progress": 0,
    })
    await api.update_agent_execution({"execution_id": f"{project_id}-nl_input", "status": "RUNNING",
                                      "input_data": json.dumps({"query": "todo app"})})
    await api.update_agent_execution({"execution_id": f"{project_id}-nl_input", "status": "COMPLETED",
                                      "output_data": json.dumps({"intent": "todo"})})
    await api.save_pipeline_session({"session_id": project_id, "status": "ACTIVE",
                                     "current_agent": "ui_selection", "progress": 1})
    assert (await store.get_session(project_id)).current_agents == ("ui_selection",)
    await api.update_agent_execution({"execution_id": f"{project_id}-ui_selection", "status": "FAILED",
                                      "error_message": "model timeout"})
    snap = await store.load_session(project_id)
    s = snap.session
    assert (s.status, s.project_id, s.user_id, s.pipeline_type) == (
        SessionStatus.RUNNING, project_id, "u-1", "PRODUCTION")
    assert s.metadata["project_name"] == "My Todo App"
    assert (s.progress.current, s.progress.total) == (1, 9)
    assert s.current_agents == ()  # nothing runs after the failure
    assert snap.tasks["nl_input"].output == {"intent": "todo"}
    failed = snap.tasks["ui_selection"]
    assert failed.status is TaskStatus.FAILED
    assert failed.last_error is not None and failed.last_error.message == "model timeout"
    await api.save_pipeline_session({"session_id": project_id, "status": "FAILED",
                                     "error_message": "ui_selection failed"})
    ended = await store.get_session(project_id)
    assert (ended.status, ended.reason) == (SessionStatus.FAILED, "ui_selection failed")


async def test_dict_api_abandoned_session_is_cancelled(store: Store) -> None:
    api = StateAPI(store, agents=SEED_AGENTS)
    await api.save_pipeline_session({"session_id": "p-1", "status": "ACTIVE", "progress": 0})
    await api.save_pipeline_session({"session_id": "p-1", "status": "ABANDONED"})
    assert (await store.get_session("p-1")).status is SessionStatus.CANCELLED


async def test_dict_api_record_metric_reaches_the_store(store: Store) -> None:
    api = StateAPI(store)
    at = datetime(2025, 11, 15, 20, 0, tzinfo=UTC)
    await api.record_metric({"metric_name": "agent_execution_time", "agent_name": "generation",
                             "value": 1.5, "unit": "s", "timestamp": at})
    await api.record_metric({"metric_name": "agent_execution_time", "agent_name": "generation",
                             "value": 0.5, "unit": "s", "timestamp": at})
    await api.flush()
    (row,) = await store.read_metrics("2025-11-15", name="agent_execution_time", agent="generation")
    assert (row.hour, row.count, row.sum_ms, row.mean_ms) == (20, 2, 2000.0, 1000.0)


@pytest.mark.parametrize(
    ("call", "data", "error", "match"),
    [
        ("save_pipeline_session", {"status": "ACTIVE"}, ValidationError, "session_id is missing"),
        ("save_pipeline_session", {"session_id": "p-1", "status": "DONE"}, ValidationError, "'DONE' .*unknown"),
        ("save_pipeline_session", {"session_id": "p-1", "progres": 1}, ValidationError, "unknown key"),
        ("save_pipeline_session", {"session_id": "p-1", "progress": 12}, ValidationError, "exceeds its 9 agents"),
        ("save_pipeline_session", {"session_id": "p-1", "metadata": "{oops"}, ValidationError, "not valid JSON"),
        ("update_agent_execution", {"status": "RUNNING"}, ValidationError, "pass execution_id"),
        ("update_agent_execution", {"execution_id": "p-1-parser", "status": "RUNNING"}, SessionStateError,
         "names no session"),
        ("record_metric", {"metric_name": "x", "value": "fast"}, ValidationError, "finite number"),
        ("record_metric", {"value": 1}, ValidationError, "metric_name is missing"),
    ],
)
async def test_dict_api_calls_validate_their_input(
    store: Store, call: str, data: dict[str, object], error: type[Exception], match: str
) -> None:
    api = StateAPI(store, agents=SEED_AGENTS)
    with pytest.raises(error, match=match):
        await getattr(api, call)(data)
    assert (await store.list_project_sessions("p-1")).items == ()
    assert api.metrics.pending == 0


async def test_dict_api_unknown_execution_status_is_refused(store: Store) -> None:
    api = StateAPI(store, agents=SEED_AGENTS)
    await api.save_pipeline_session({"session_id": "p-1", "status": "ACTIVE"})
    with pytest.raises(ValidationError, match="status 'DONE'"):
        await api.update_agent_execution({"execution_id": "p-1-parser", "status": "DONE"})
    assert (await store.get_task("p-1", "parser")).status is TaskStatus.PENDING


async def test_a_second_state_api_must_attach_with_the_token(store: Store) -> None:
    first = StateAPI(store, agents=SEED_AGENTS)
    rec = await first.save_pipeline_session({"session_id": "p-1", "status": "ACTIVE"})
    second = StateAPI(store, agents=SEED_AGENTS)
    with pytest.raises(SessionStateError, match="attach"):
        await second.save_pipeline_session({"session_id": "p-1", "status": "ACTIVE", "progress": 1})
    await second.attach("p-1", rec.token)
    await second.update_agent_execution({"execution_id": "p-1-nl_input", "status": "COMPLETED"})
    assert (await store.get_task("p-1", "nl_input")).status is TaskStatus.COMPLETED


@pytest.mark.backends("sqlite", "moto")
async def test_dict_api_user_project_is_stored_without_any_session(store: Store) -> None:
    api = StateAPI(store, agents=SEED_AGENTS)
    saved = await api.save_user_project({
        "user_id": "u-1", "project_id": "proj-7", "project_name": "My Todo App",
        "tech_stack": json.dumps(["React", "Node.js", "MongoDB"]), "size_mb": 2.5, "session_id": "gen-1",
    })
    found = await api.get_user_project("u-1", "proj-7")
    assert found == saved == await store.get_user_project("u-1", "proj-7")
    assert (found.project_name, found.tech_stack, found.size_mb, found.download_count) == (
        "My Todo App", ("React", "Node.js", "MongoDB"), 2.5, 0)
    assert found.metadata["session_id"] == "gen-1"
    assert await api.get_user_project("u-2", "proj-7") is None
    assert (await store.list_project_sessions("proj-7")).items == ()


async def test_saving_a_user_project_again_keeps_fields_not_given(store: Store) -> None:
    api = StateAPI(store)
    await api.save_user_project({"user_id": "u-1", "project_id": "p-1", "project_name": "Todo",
                                 "tech_stack": ["React"], "file_path": "/d/p-1.zip", "size_mb": 1.0})
    again = await api.save_user_project({"user_id": "u-1", "project_id": "p-1", "size_mb": 2.0})
    assert (again.project_name, again.tech_stack, again.file_path, again.size_mb) == (
        "Todo", ("React",), "/d/p-1.zip", 2.0)


async def test_record_download_counts_once_per_download_id(store: Store, fake_clock: FakeClock) -> None:
    api = StateAPI(store)
    await api.save_user_project({"user_id": "u-1", "project_id": "p-1", "project_name": "Todo"})
    fake_clock.advance(3)
    first = await api.record_download("u-1", "p-1", "req-1")
    retried = await api.record_download("u-1", "p-1", "req-1")
    second = await api.record_download("u-1", "p-1", "req-2")
    assert (first.download_count, retried.download_count, second.download_count) == (1, 1, 2)
    assert first.last_accessed == fake_clock.now()
    with pytest.raises(UserProjectNotFoundError):
        await api.record_download("u-1", "no-such", "req-3")


async def test_download_count_is_not_set_through_save_user_project(store: Store) -> None:
    api = StateAPI(store)
    imported = await api.save_user_project({"user_id": "u-1", "project_id": "p-1", "project_name": "Todo",
                                            "download_count": 4})
    assert imported.download_count == 4
    with pytest.raises(ValidationError, match="record_download"):
        await api.save_user_project({"user_id": "u-1", "project_id": "p-1", "download_count": 5})
    same = await api.save_user_project({"user_id": "u-1", "project_id": "p-1", "download_count": 4,
                                        "description": "kept"})
    assert (same.download_count, same.description) == (4, "kept")


async def test_list_user_projects_returns_every_page(store: Store) -> None:
    api = StateAPI(store)
    for i in range(105):
        await api.save_user_project({"user_id": "u-1", "project_id": f"p-{i:03d}", "project_name": f"P{i}"})
    listed = await api.list_user_projects("u-1")
    assert [p.project_id for p in listed] == [f"p-{i:03d}" for i in range(105)]


async def test_bad_user_project_dicts_are_refused_before_writing(store: Store) -> None:
    api = StateAPI(store)
    bad: list[dict[str, object]] = [
        {"user_id": "u-1", "project_id": "p-1", "tech_stack": "not json"},
        {"user_id": "u-1", "project_id": "p-1", "tech_stack": [1, 2]},
        {"user_id": "u-1", "project_id": "p-1", "size_mb": "big"},
        {"user_id": "u-1", "project_id": "p/1"},
        {"user_id": "u-1", "project_id": "p-1", "colour": "red"},
    ]
    for data in bad:
        with pytest.raises(ValidationError):
            await api.save_user_project(data)
    assert await api.list_user_projects("u-1") == []
