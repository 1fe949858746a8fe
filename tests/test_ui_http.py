"""The dashboard over HTTP (Starlette's TestClient): pages, live fragments, actions, refusals.

The store is a real SQLite file, filled by running the `ui_app` pipelines in-process.
"""

from __future__ import annotations

import html
import importlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest
from starlette.testclient import TestClient

from orchestrator.scheduler import run
from orchestrator.store import MetricSummary, SessionStatus, Store, StoreConfig, TaskStatus, open_store
from orchestrator.ui import Settings, create_app
from orchestrator.ui.queries import MetricsView, load_metrics, parse_day
from orchestrator.ui.security import CSRF_HEADER

APPS = Path(__file__).resolve().parent / "apps"
BASE = "http://127.0.0.1:8765"


@pytest.fixture
def ui_app(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(APPS))
    return importlib.import_module("ui_app")


@pytest.fixture
def db_url(tmp_path: Path, ui_app: Any) -> str:
    """A store with a session waiting for an approval, one FAILED, one COMPLETED (in project p-1)."""
    url = f"sqlite://{tmp_path / 'state.db'}"
    (tmp_path / "gate").write_text("open", encoding="utf-8")

    async def seed() -> None:
        async with open_store(url) as store:
            await run(ui_app.ui_demo, {"gate": str(tmp_path / "gate")}, store=store, session_id="waits",
                      user_id="ann", pipeline_type="demo")
            await run(ui_app.failing, store=store, session_id="fails", project_id="p-1", user_id="bob")
            await run(ui_app.single, store=store, session_id="done", project_id="p-1")

    anyio.run(seed)
    return url


def _settings(url: str, **kwargs: Any) -> Settings:
    return Settings(store=StoreConfig.from_url(url), store_url=url, csrf_token="csrf-1", **kwargs)


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(db_url)), base_url=BASE) as c:
        yield c


def _post(client: TestClient, path: str, body: dict[str, Any], **headers: str) -> Any:
    return client.post(path, json=body, headers={CSRF_HEADER: "csrf-1", "origin": BASE, **headers})


def _status(url: str, sid: str) -> tuple[SessionStatus, dict[str, TaskStatus]]:
    async def go() -> tuple[SessionStatus, dict[str, TaskStatus]]:
        async with open_store(url) as store:
            snap = await store.load_session(sid)
            return snap.session.status, {t: r.status for t, r in snap.tasks.items()}

    return anyio.run(go)


# -- pages ----------------------------------------------------------------------------------------


def test_the_sessions_page_lists_every_session_with_its_status(client: TestClient) -> None:
    page = client.get("/").text
    assert 'data-session="waits" data-status="WAITING"' in page
    assert 'data-session="fails" data-status="FAILED"' in page
    assert 'data-session="done" data-status="COMPLETED"' in page


def test_the_sessions_list_shows_sessions_that_need_attention_first(client: TestClient) -> None:
    page = client.get("/").text
    assert page.index('data-session="waits"') < page.index('data-session="fails"') < page.index('data-session="done"')


@pytest.mark.parametrize(("query", "shown"), [
    ("status=FAILED", {"fails"}),
    ("project=p-1", {"fails", "done"}),
    ("user=ann", {"waits"}),
    ("type=demo", {"waits"}),
    ("user=ann&type=demo", {"waits"}),
    ("user=ann&status=COMPLETED", set()),
    ("user=nobody", set()),
    ("project=p-1&status=COMPLETED", {"done"}),
])
def test_the_sessions_filters_keep_only_matching_sessions(client: TestClient, query: str, shown: set[str]) -> None:
    page = client.get(f"/?{query}").text
    assert {sid for sid in ("waits", "fails", "done") if f'data-session="{sid}"' in page} == shown


def test_the_sessions_list_pages_with_a_cursor(client: TestClient) -> None:
    first = client.get("/?limit=2").text
    assert first.count('<tr data-session="') == 2 and "next page" in first
    cursor = first.split('class="next" href="/?')[1].split('"')[0].replace("&amp;", "&")
    second = client.get(f"/?{cursor}").text
    assert second.count('<tr data-session="') == 1 and "end of list" in second


def test_a_bad_filter_is_a_400_page_naming_it(client: TestClient) -> None:
    resp = client.get("/?status=SLEEPING")
    assert resp.status_code == 400 and "status" in resp.text and "SLEEPING" in resp.text


def test_an_empty_store_says_how_to_run_a_session(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'empty.db'}"
    with TestClient(create_app(_settings(url)), base_url=BASE) as c:
        page = c.get("/").text
    assert "No sessions yet" in page and f"orchestrator --store {url} run MODULE:PIPELINE" in page


def test_an_unreachable_store_shows_the_error_and_doctor(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory", encoding="utf-8")
    url = f"sqlite://{tmp_path / 'a-file' / 'state.db'}"
    with TestClient(create_app(_settings(url)), base_url=BASE) as c:
        resp = c.get("/")
    assert resp.status_code == 503
    assert "The store cannot be reached" in resp.text and f"orchestrator --store {url} doctor" in resp.text


def test_a_missing_dynamodb_table_is_named_and_never_created_by_the_dashboard(moto_upstream: str) -> None:
    url = f"dynamodb://t-missing?region=us-east-1&endpoint={moto_upstream}"
    with TestClient(create_app(_settings(url)), base_url=BASE) as c:
        resp = c.get("/")
    assert resp.status_code == 503 and "t-missing" in resp.text
    assert html.escape(f"orchestrator --store {url} doctor") in resp.text
    client = boto3.client("dynamodb", endpoint_url=moto_upstream, region_name="us-east-1")
    assert "t-missing" not in client.list_tables()["TableNames"]


def test_the_session_page_draws_every_task_with_its_status_and_marks_added_ones(client: TestClient) -> None:
    page = client.get("/sessions/waits").text
    for task, status in (("hold", "COMPLETED"), ("review", "WAITING"), ("publish", "PENDING"),
                         ("extra", "COMPLETED")):
        assert f'data-task="{task}" data-status="{status}"' in page
    assert 'class="task s-COMPLETED dynamic" data-task="extra"' in page
    assert page.count('<path class="edge"') == 7  # hold->flaky/spawn/review, three into publish, spawn->extra
    assert 'data-from="spawn" data-to="extra"' in page


def test_the_session_page_shows_the_event_history_newest_first(client: TestClient) -> None:
    page = client.get("/sessions/waits").text
    events = page.split('<table class="events">')[1]
    assert "task flaky attempt 1 failed: upstream flaked on the first attempt" in events
    assert events.index("task review waits for signal") < events.index("attempt 1 failed")


def test_the_session_page_shows_the_lease_owner_and_fence(client: TestClient) -> None:
    page = client.get("/sessions/waits").text
    assert "<dt>lease owner</dt><dd>none</dd>" in page and "<dt>fence</dt><dd>1</dd>" in page


def test_the_live_sessions_list_answers_204_while_nothing_changed(client: TestClient) -> None:
    first = client.get("/fragments/sessions?status=FAILED")
    assert 'data-session="fails"' in first.text
    again = client.get("/fragments/sessions?status=FAILED",
                       headers={"x-live-fingerprint": first.headers["x-fingerprint"]})
    assert again.status_code == 204


def test_an_unknown_session_is_a_404_page(client: TestClient) -> None:
    resp = client.get("/sessions/nope")
    assert resp.status_code == 404 and "nope" in resp.text


def test_the_live_fragment_answers_204_while_nothing_changed(client: TestClient) -> None:
    first = client.get("/fragments/sessions/waits")
    assert first.status_code == 200
    again = client.get("/fragments/sessions/waits", headers={"x-live-fingerprint": first.headers["x-fingerprint"]})
    assert again.status_code == 204


def test_the_task_panel_shows_attempts_with_the_error_and_traceback(client: TestClient) -> None:
    panel = client.get("/fragments/sessions/waits/tasks/flaky").text
    assert 'data-attempt="1" data-status="FAILED"' in panel and 'data-attempt="2" data-status="COMPLETED"' in panel
    assert "upstream flaked on the first attempt" in panel and "Traceback" in panel


def test_a_long_output_is_truncated_with_a_download_of_all_of_it(client: TestClient) -> None:
    panel = client.get("/fragments/sessions/waits/tasks/flaky").text
    assert "download the output (truncated)" in panel and "row 399" not in panel
    download = client.get("/sessions/waits/tasks/flaky/output")
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.json()["rows"][-1] == "row 399"


def test_the_task_panel_shows_progress_and_checkpoint(client: TestClient) -> None:
    panel = client.get("/fragments/sessions/waits/tasks/hold").text
    assert "2/2 · done" in panel and "holding" in panel


def test_the_task_panel_of_a_waiting_task_names_the_signal_it_waits_for(client: TestClient) -> None:
    panel = client.get("/fragments/sessions/waits/tasks/review").text
    assert '<dt>waits for</dt><dd>signal <code class="signal">approval</code></dd>' in panel
    assert '<dt>until</dt><dd>no deadline</dd>' in panel
    assert 'name="name" placeholder="signal name" size="12" required value="approval"' in panel


def test_the_metrics_page_charts_each_agent_and_the_projects(client: TestClient) -> None:
    page = client.get("/metrics").text
    assert 'data-agent="flaky"' in page and '<svg class="chart"' in page
    assert 'data-project="p-1"' in page


class FlushAfterFirstRead:
    """A Store whose metrics appear after its first metrics read (a worker flushed in between)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._reads = 0

    async def read_metrics(self, day: str, **kwargs: Any) -> list[MetricSummary]:
        self._reads += 1
        return [] if self._reads == 1 else await self._store.read_metrics(day, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_the_metrics_table_and_charts_come_from_one_read(db_url: str) -> None:
    async def view() -> MetricsView:
        async with open_store(db_url) as store:
            day = parse_day(None, store.clock.now())
            return await load_metrics(FlushAfterFirstRead(store), day)  # type: ignore[arg-type]

    shown = anyio.run(view)
    assert {t.agent for t in shown.totals} == set(shown.hourly)  # no agent in the table without its charts


def test_a_bad_metrics_day_is_refused(client: TestClient) -> None:
    assert client.get("/metrics?day=yesterday").status_code == 400


# -- actions --------------------------------------------------------------------------------------


def test_approving_from_the_dashboard_delivers_the_approval_signal(client: TestClient, db_url: str) -> None:
    resp = _post(client, "/api/sessions/waits/approve", {"task": "review"})
    assert resp.status_code == 200 and resp.json()["ok"] is True
    assert "delivered to waiting task review" in resp.json()["message"]


def test_a_signal_to_a_completed_task_is_refused_with_the_reason(client: TestClient) -> None:
    resp = _post(client, "/api/sessions/waits/signal", {"task": "hold", "name": "go", "data": "1"})
    assert resp.status_code == 409 and "COMPLETED" in resp.json()["error"]


def test_a_signal_with_bad_json_is_refused_before_anything_is_written(client: TestClient) -> None:
    resp = _post(client, "/api/sessions/waits/signal", {"task": "review", "name": "go", "data": "{oops"})
    assert resp.status_code == 400 and "not JSON" in resp.json()["error"]


def test_cancel_from_the_dashboard_cancels_a_session_nobody_holds(client: TestClient, db_url: str) -> None:
    resp = _post(client, "/api/sessions/waits/cancel", {})
    assert resp.json()["status"] == "CANCELLED"
    assert _status(db_url, "waits")[0] is SessionStatus.CANCELLED


def test_fork_from_the_dashboard_leaves_a_pending_copy(client: TestClient, db_url: str) -> None:
    resp = _post(client, "/api/sessions/fails/fork", {"task": "boom"}).json()
    status, tasks = _status(db_url, resp["session_id"])
    assert status is SessionStatus.PENDING and tasks == {"prep": TaskStatus.COMPLETED, "boom": TaskStatus.PENDING}


def test_resume_without_the_pipeline_says_how_to_start_the_dashboard_with_it(client: TestClient) -> None:
    resp = _post(client, "/api/sessions/fails/resume", {})
    assert resp.status_code == 400 and "orchestrator ui --app MODULE:PIPELINE" in resp.json()["error"]


def test_resume_with_the_pipeline_redrives_the_session_in_the_dashboard(db_url: str, ui_app: Any) -> None:
    settings = _settings(db_url, pipelines={"failing": ui_app.failing})
    with TestClient(create_app(settings), base_url=BASE) as c:
        resp = _post(c, "/api/sessions/fails/resume", {})
        assert resp.status_code == 200 and "resuming session fails" in resp.json()["message"]
        for _ in range(200):  # bounded: the redrive fails again, quickly
            if "ended FAILED" in c.get("/sessions/fails").text:
                break
            time.sleep(0.05)
        assert "resume started here ended FAILED" in c.get("/sessions/fails").text


def test_clearing_needs_human_unflags_the_session(client: TestClient, db_url: str) -> None:
    async def flag() -> None:
        async with open_store(db_url) as store:
            await store.set_needs_human("fails", "looked bad")

    anyio.run(flag)
    assert "needs-human" in client.get("/?needs_human=1").text
    resp = _post(client, "/api/sessions/fails/clear-needs-human", {})
    assert resp.status_code == 200
    assert 'data-session="fails"' not in client.get("/?needs_human=1").text


def test_an_unknown_action_is_refused(client: TestClient) -> None:
    assert _post(client, "/api/sessions/waits/explode", {}).status_code == 400


# -- cross-site requests and access ---------------------------------------------------------------


def test_a_post_from_another_origin_is_refused(client: TestClient, db_url: str) -> None:
    resp = _post(client, "/api/sessions/waits/cancel", {}, origin="http://evil.example")
    assert resp.status_code == 403 and "cross-origin" in resp.json()["error"]
    assert _status(db_url, "waits")[0] is SessionStatus.WAITING


def test_a_cross_site_fetch_is_refused_by_its_fetch_metadata(client: TestClient) -> None:
    resp = _post(client, "/api/sessions/waits/cancel", {}, **{"sec-fetch-site": "cross-site"})
    assert resp.status_code == 403


def test_a_post_without_the_csrf_header_is_refused(client: TestClient) -> None:
    resp = client.post("/api/sessions/waits/cancel", json={}, headers={"origin": BASE})
    assert resp.status_code == 403 and CSRF_HEADER in resp.json()["error"]


def test_a_foreign_host_name_is_refused_on_a_loopback_server(client: TestClient) -> None:
    assert client.get("/", headers={"host": "rebound.example:8765"}).status_code == 421


def test_a_token_server_refuses_requests_without_the_token(db_url: str) -> None:
    app = create_app(_settings(db_url, host="0.0.0.0", access_token="s3cret"))
    with TestClient(app, base_url="http://dash.example:8765") as c:
        assert c.get("/").status_code == 401
        assert c.get("/", headers={"authorization": "Bearer s3cret"}).status_code == 200


def test_a_token_in_the_url_is_kept_in_a_cookie(db_url: str) -> None:
    app = create_app(_settings(db_url, host="0.0.0.0", access_token="s3cret"))
    with TestClient(app, base_url="http://dash.example:8765") as c:
        first = c.get("/?token=s3cret", follow_redirects=False)
        assert first.status_code == 303 and "token" not in first.headers["location"]
        assert c.get("/").status_code == 200  # the cookie came along


def test_static_files_are_served_from_the_package(client: TestClient) -> None:
    assert "POLL_MS" in client.get("/static/ui.js").text
    assert client.get("/static/ui.css").status_code == 200
