"""`orchestrator ui` on the command line: what it refuses before serving anything."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cli_helpers import cli, spawn

from orchestrator.testing._servers import stop_server, wait_until_answers


def test_a_non_loopback_host_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    result = cli("ui", "--host", "0.0.0.0", "--port", "1", store=f"sqlite://{tmp_path / 's.db'}", tmp=tmp_path,
                 env={"ORCHESTRATOR_UI_TOKEN": ""})
    assert result.code == 2
    assert result.err.startswith("error: --host 0.0.0.0") and "ORCHESTRATOR_UI_TOKEN" in result.err
    assert len(result.err.strip().splitlines()) == 1 and result.out == ""


def test_without_the_ui_extra_the_command_says_which_pip_command_adds_it(tmp_path: Path) -> None:
    # A folder first on the path whose `starlette` cannot be imported: as on an install without the extra.
    shadow = tmp_path / "no_extra" / "starlette"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'starlette'\", "
                                        "name='starlette')\n", encoding="utf-8")
    result = cli("ui", store=f"sqlite://{tmp_path / 's.db'}", tmp=tmp_path,
                 env={"PYTHONPATH": str(tmp_path / "no_extra")})
    assert result.code == 2
    assert result.err.strip() == ("error: `orchestrator ui` needs the ui extra (starlette is not installed): "
                                  "pip install 'durable-orchestrator[ui]'")


def _first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    with ThreadPoolExecutor(1) as pool:  # bounded: a server that never prints fails the test
        return pool.submit(proc.stdout.readline).result(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_with_a_token_the_dashboard_prints_its_url_with_it_and_refuses_requests_without_it(tmp_path: Path) -> None:
    port = _free_port()
    proc = spawn("ui", "--port", str(port), "--token", "s3cret", store=f"sqlite://{tmp_path / 's.db'}", tmp=tmp_path)
    try:
        assert f"http://127.0.0.1:{port}/?token=s3cret" in _first_line(proc)
        wait_until_answers(proc, f"http://127.0.0.1:{port}/healthz", "orchestrator ui", 30.0)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert "No sessions yet" in resp.read().decode()
    finally:
        stop_server(proc)


def test_open_hands_the_dashboards_url_to_the_browser(tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n', encoding="utf-8")
    browser.chmod(0o755)
    port = _free_port()
    proc = spawn("ui", "--port", str(port), "--open", store=f"sqlite://{tmp_path / 's.db'}", tmp=tmp_path,
                 env={"BROWSER": str(browser)})
    try:
        wait_until_answers(proc, f"http://127.0.0.1:{port}/healthz", "orchestrator ui", 30.0)
        for _ in range(300):  # bounded: 15 s
            if opened.exists() and opened.read_text(encoding="utf-8").strip():
                break
            time.sleep(0.05)
        assert opened.read_text(encoding="utf-8").strip() == f"http://127.0.0.1:{port}/"
    finally:
        stop_server(proc)


def test_a_port_in_use_is_one_error_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("ui", "--port", str(port), store=f"sqlite://{tmp_path / 's.db'}", tmp=tmp_path)
    assert result.code == 2
    assert result.err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "--port" in result.err
    assert len(result.err.strip().splitlines()) == 1
