"""Operational errors on the command line: one `error:` line, the documented exit code, no traceback.

docs/cli.md promises it; these tests break things the way they break in production (a
store that goes away mid-run, an app module that raises at import, a store directory
that cannot be created) and run the installed script in a child process.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import Result, cli, spawn
from sqlite_helpers import made_read_only, without_write_access

from orchestrator.cli._common import TextLogFormatter, operational_error
from orchestrator.errors import SessionNotFoundError, StoreUnavailableError
from orchestrator.testing._workers import child_env
from orchestrator.testing.moto_server import MotoServer

EXIT_USAGE = 2
EXIT_STORE = 5


def assert_one_error_line(result: Result, code: int, *fragments: str) -> None:
    assert result.code == code, result.err
    assert "Traceback" not in result.err, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.err
    for fragment in fragments:
        assert fragment in errors[0], result.err


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"exited early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture
def private_moto() -> Iterator[MotoServer]:
    """A moto server of this test alone, so the test can take it away."""
    server = MotoServer.start()
    try:
        yield server
    finally:
        server.stop()


# -- a store outage while a session runs ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "resume"])
def test_a_store_outage_during_a_run_prints_one_error_line_and_exits_5(
    command: str, private_moto: MotoServer, tmp_path: Path
) -> None:
    url = f"dynamodb://outage-{command}?region=us-east-1&endpoint={private_moto.endpoint}&max_attempts=2&timeout=1"
    started, gate = tmp_path / "started", tmp_path / "gate"
    payload = json.dumps({"started": str(started), "gate": str(gate)})
    assert cli("init", store=url, tmp=tmp_path).code == 0
    if command == "run":
        args = ["run", "demo_app:gate", "--input", payload, "--session-id", "g-1"]
    else:
        assert cli("submit", "demo_app:gate", "--input", payload, "--session-id", "g-1", store=url,
                   tmp=tmp_path).code == 0
        args = ["resume", "g-1", "--app", "demo_app:gate"]
    proc = spawn(*args, store=url, tmp=tmp_path)
    try:
        wait_for(started, proc)  # the agent runs, the progress display polls
        private_moto.stop()
        gate.touch()
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert_one_error_line(Result(proc.returncode, out, err), EXIT_STORE, private_moto.endpoint)


# -- an app that cannot be loaded -------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "attribute", "fragments"),
    [
        ('raise RuntimeError("no credentials for the model API")\n', "p",
         ["importing module 'broken_app' raised RuntimeError: no credentials for the model API", "broken_app.py:1"]),
        ("def build(:\n", "p", ["importing module 'broken_app' raised SyntaxError", "broken_app.py:1"]),
        ('def make():\n    raise KeyError("MODEL")\n', "make", ["calling the factory raised KeyError"]),
    ],
    ids=["raises-at-import", "syntax-error", "factory-raises"],
)
def test_an_app_that_fails_to_load_is_one_error_line_and_a_usage_error(
    source: str, attribute: str, fragments: list[str], tmp_path: Path
) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "broken_app.py").write_text(source, encoding="utf-8")
    env = {"PYTHONPATH": os.pathsep.join([str(apps), child_env()["PYTHONPATH"]])}
    result = cli("run", f"broken_app:{attribute}", store=f"sqlite://{tmp_path / 'cli.db'}", tmp=tmp_path, env=env)
    assert_one_error_line(result, EXIT_USAGE, "app 'broken_app:", *fragments)
    assert not (tmp_path / "cli.db").exists()  # refused before the store was opened


# -- a SQLite store whose directory cannot be created -------------------------------------


def test_a_store_directory_under_a_file_is_one_error_line_and_exits_5(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("", encoding="utf-8")
    target = tmp_path / "plain-file" / "state" / "x.db"
    result = cli("run", "demo_app:small", store=f"sqlite://{target}", tmp=tmp_path)
    assert_one_error_line(result, EXIT_STORE, f"cannot create the store directory {target.parent}", "--store")


def test_a_store_directory_in_an_unwritable_directory_is_one_error_line_and_exits_5(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "placeholder.db").write_bytes(b"")
    target = locked / "state" / "x.db"
    with made_read_only(locked / "placeholder.db"):
        result = cli("init", store=f"sqlite://{target}", tmp=tmp_path, wrapper=without_write_access())
    assert_one_error_line(result, EXIT_STORE, f"cannot create the store directory {target.parent}")
    assert not target.parent.exists()


# -- a bad store URL ------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["busy_timeout=-1", "lease_seconds=60"])
def test_a_bad_sqlite_url_parameter_is_refused_before_the_file_is_created(query: str, tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    result = cli("run", "demo_app:small", store=f"sqlite://{db}?{query}", tmp=tmp_path)
    assert_one_error_line(result, EXIT_USAGE, query.split("=")[0])
    assert not db.exists()


# -- the one place errors are rendered --------------------------------------------------------


def test_an_exception_group_of_operational_errors_is_rendered_as_its_first_error() -> None:
    first = StoreUnavailableError("the store went away")
    group = BaseExceptionGroup("task group", [first, ExceptionGroup("inner", [SessionNotFoundError("gone")])])
    assert operational_error(group) is first


def test_an_exception_group_holding_a_bug_is_not_operational() -> None:
    group = ExceptionGroup("task group", [StoreUnavailableError("the store went away"), KeyError("bug")])
    assert operational_error(group) is None
    assert operational_error(KeyError("bug")) is None


def _record_with(exc: KeyError | StoreUnavailableError) -> logging.LogRecord:
    try:
        raise exc
    except (KeyError, StoreUnavailableError):
        return logging.LogRecord("orchestrator.scheduler", logging.WARNING, __file__, 1, "final flush failed",
                                 None, sys.exc_info())


def test_a_log_record_of_an_operational_error_is_one_line_without_its_traceback() -> None:
    line = TextLogFormatter(tracebacks=False).format(_record_with(StoreUnavailableError("the store went away")))
    assert line.endswith("final flush failed (StoreUnavailableError: the store went away)")
    assert "\n" not in line


def test_a_log_record_keeps_its_traceback_for_a_bug_or_at_debug() -> None:
    assert "Traceback" in TextLogFormatter(tracebacks=False).format(_record_with(KeyError("bug")))
    debug = TextLogFormatter(tracebacks=True).format(_record_with(StoreUnavailableError("the store went away")))
    assert "Traceback" in debug
