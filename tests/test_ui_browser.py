"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright).

`orchestrator ui` runs as a child process on a free 127.0.0.1 port, a worker runs the
pipeline in another, and the browser only reads the DOM: task boxes carry
`data-status`, the page never reloads (a marker set on `window` survives), and every
wait is bounded by Playwright's timeouts. Screenshots go to the test's temporary folder.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from cli_helpers import cli, spawn
from orchestrator.store import NewSession, NewTask, open_store
from orchestrator.testing._servers import stop_server, wait_until_answers

pytestmark = pytest.mark.slow

WAIT_MS = 30_000  # the bound of every wait on the page
expect.set_options(timeout=WAIT_MS)  # `expect` has its own default (5 s), too short on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("the dashboard's browser tests need Chromium: `apt-get install chromium` (.ci/run does it)")
    with sync_playwright() as pw:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    context.set_default_timeout(WAIT_MS)
    p = context.new_page()
    try:
        yield p
    finally:
        context.close()


@pytest.fixture(params=["sqlite", "moto-server"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'state.db'}"
    endpoint = request.getfixturevalue("moto_upstream")
    return f"dynamodb://t-{uuid.uuid4().hex[:12]}?region=us-east-1&endpoint={endpoint}"


def _start_ui(store: str, tmp: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    proc = spawn("ui", "--port", str(port), *extra, store=store, tmp=tmp)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(proc, f"{base}/healthz", "orchestrator ui", 30.0)
    except BaseException:
        stop_server(proc)
        raise
    return proc, base


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


def test_the_dashboard_follows_a_pipeline_live_and_approves_it(page: Page, store_url: str, tmp_path: Path,
                                                               shots: Path) -> None:
    assert cli("init", store=store_url, tmp=tmp_path).code == 0
    ui, base = _start_ui(store_url, tmp_path)
    worker = None
    try:
        page.goto(f"{base}/")
        expect(page.locator('[data-state="empty"]')).to_contain_text("No sessions yet")

        gate = tmp_path / "gate"
        submitted = cli("submit", "ui_app:ui_demo", "--session-id", "demo-1", "--project", "p-ui",
                        "--input", json.dumps({"gate": str(gate)}), store=store_url, tmp=tmp_path)
        assert submitted.code == 0, submitted.err
        assert cli("submit", "ui_app:failing", "--session-id", "fail-1", store=store_url, tmp=tmp_path).code == 0
        worker = spawn("worker", "--app", "ui_app:ui_demo,ui_app:failing", "--poll-interval", "0.2s",
                       "--worker-id", "e2e-worker", store=store_url, tmp=tmp_path)

        page.goto(f"{base}/sessions/demo-1")
        page.evaluate("window.__notReloaded = true")
        box = page.locator('svg.dag g.task[data-task="hold"]')
        expect(box).to_have_attribute("data-status", "RUNNING")
        expect(page.locator('svg.dag g.task[data-task="publish"]')).to_have_attribute("data-status", "PENDING")
        page.screenshot(path=str(shots / "1-running.png"))

        gate.write_text("open", encoding="utf-8")
        expect(box).to_have_attribute("data-status", "COMPLETED")
        expect(page.locator('svg.dag g.task[data-task="flaky"]')).to_have_attribute("data-status", "COMPLETED")
        expect(page.locator('svg.dag g.task[data-task="review"]')).to_have_attribute("data-status", "WAITING")
        expect(page.locator('svg.dag g.task.dynamic[data-task="extra"]')).to_have_count(1)
        assert page.evaluate("window.__notReloaded") is True

        page.locator('svg.dag g.task[data-task="flaky"]').click()
        failed = page.locator('#task-panel li.attempt[data-status="FAILED"]')
        expect(failed).to_contain_text("upstream flaked on the first attempt")
        failed.locator("details.traceback summary").click()
        expect(failed.locator("details.traceback pre")).to_be_visible()
        expect(failed.locator("details.traceback pre")).to_contain_text("RuntimeError")
        page.screenshot(path=str(shots / "2-traceback.png"))

        page.locator('svg.dag g.task[data-task="review"]').click()
        expect(page.locator('#task-panel .task-detail[data-task="review"]')).to_have_attribute("data-status", "WAITING")
        page.locator('#task-panel button[name="approve"]').click()
        expect(page.locator("#confirm-text")).to_contain_text("Approve task review of session demo-1?")
        page.locator("#confirm-ok").click()
        expect(page.locator("#result")).to_have_attribute("data-ok", "1")
        expect(page.locator("#result")).to_contain_text("delivered to waiting task review")
        expect(page.locator("#session-status")).to_have_attribute("data-status", "COMPLETED")
        expect(page.locator('svg.dag g.task[data-task="publish"]')).to_have_attribute("data-status", "COMPLETED")
        assert page.evaluate("window.__notReloaded") is True
        page.locator("main").screenshot(path=str(shots / "3-session.png"))  # the page without the store path

        page.goto(f"{base}/")
        expect(page.locator('tr[data-session="demo-1"]')).to_have_attribute("data-status", "COMPLETED")
        expect(page.locator('tr[data-session="fail-1"]')).to_have_attribute("data-status", "FAILED")

        page.goto(f"{base}/sessions/fail-1#task=boom")  # a link straight to a task opens its panel
        panel = page.locator('#task-panel .task-detail[data-task="boom"]')
        expect(panel).to_have_attribute("data-status", "FAILED")
        panel.locator("details.traceback summary").click()
        expect(panel.locator("details.traceback pre")).to_contain_text("ValueError: this task always fails")

        page.goto(f"{base}/metrics")
        flaky_row = page.locator('#agent-totals tr[data-agent="flaky"]')
        for _ in range(30):  # a worker flushes its counters every 5 s: reload until they are there (bounded)
            if flaky_row.count():
                break
            page.wait_for_timeout(500)
            page.reload()
        expect(flaky_row).to_be_visible()
        expect(page.locator('.agent-metrics[data-agent="flaky"] svg.chart')).to_have_count(3)
        page.screenshot(path=str(shots / "4-metrics.png"), full_page=True)
    finally:
        if worker is not None:
            stop_server(worker)
        stop_server(ui)
    assert sorted(p.name for p in shots.iterdir()) == ["1-running.png", "2-traceback.png", "3-session.png",
                                                       "4-metrics.png"]


class _EvilPage(BaseHTTPRequestHandler):
    """Serves a page of another origin that posts to the dashboard when its button is pressed."""

    target = ""

    def do_GET(self) -> None:
        body = (f'<form method="post" action="{self.target}" enctype="text/plain">'
                f'<input name="task" value="review"><button id="go">win a prize</button></form>').encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_action_from_a_page_of_another_origin_is_refused(page: Page, tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path / 'state.db'}"
    gate = tmp_path / "gate"
    gate.write_text("open", encoding="utf-8")
    ran = cli("run", "ui_app:ui_demo", "--session-id", "demo-2", "--input", json.dumps({"gate": str(gate)}),
              store=store, tmp=tmp_path)
    assert ran.code == 6, ran.err  # stops WAITING for the approval (exit 6)
    ui, base = _start_ui(store, tmp_path)
    _EvilPage.target = f"{base}/api/sessions/demo-2/cancel"
    evil = ThreadingHTTPServer(("127.0.0.1", 0), _EvilPage)
    thread = threading.Thread(target=evil.serve_forever, daemon=True)
    thread.start()
    try:
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        page.locator("#go").click()
        expect(page.locator("body")).to_contain_text("refused")
        page.goto(f"{base}/sessions/demo-2")
        expect(page.locator("#session-status")).to_have_attribute("data-status", "WAITING")
    finally:
        evil.shutdown()
        evil.server_close()
        thread.join(timeout=10)
        stop_server(ui)


def test_a_session_of_500_tasks_is_drawn_and_a_task_found_by_its_id(page: Page, tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path / 'state.db'}"

    async def create() -> None:
        tasks = [NewTask(f"t{layer}-{n:02d}", "worker", depends_on=(f"t{layer - 1}-{n:02d}",) if layer else ())
                 for layer in range(10) for n in range(50)]
        async with open_store(store) as s:
            await s.create_session(NewSession("big", "bench"), tasks)

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API runs an event loop in this thread
        pool.submit(anyio.run, create).result(timeout=60)
    ui, base = _start_ui(store, tmp_path)
    try:
        page.goto(f"{base}/sessions/big")
        expect(page.locator("svg.dag g.task")).to_have_count(500)
        expect(page.locator("svg.dag path.edge")).to_have_count(450)
        page.locator('#find-task input[name="task"]').fill("t9-49")
        page.locator('#find-task button[type="submit"]').click()
        expect(page.locator('#task-panel .task-detail[data-task="t9-49"]')).to_contain_text("t8-49")
        expect(page.locator('svg.dag g.task.selected')).to_have_attribute("data-task", "t9-49")
        page.locator('[data-zoom="0.8"]').click()
        expect(page.locator("#zoom-level")).to_have_text("80%")
    finally:
        stop_server(ui)
