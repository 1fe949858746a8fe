"""`run` and `resume` of a session that stops WAITING: exit 6, say what it waits for, and
print the commands that continue it (which, run as printed, do continue it).

A session waiting for a person is neither done (exit 0) nor failed (exit 1): a script
must be able to tell, and a person must not have to guess the next command.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from cli_helpers import APPS, Result, cli, cli_env

EXIT_OK = 0
EXIT_WAITING = 6


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'waiting.db'}"


def continuation(result: Result, verb: str) -> list[str]:
    """The printed command line that uses `verb` (approve, signal, resume), as argv."""
    [line] = [line for line in result.out.splitlines() if f" {verb} " in line and line.startswith("  ")]
    return shlex.split(line.split("   (or")[0])


def run_printed(argv: list[str], tmp: Path, *extra: str) -> Result:
    """Run a printed command exactly as a user would paste it (from the apps' directory)."""
    proc = subprocess.run([*argv, *extra], cwd=APPS, env=cli_env(tmp), capture_output=True, text=True,
                          timeout=90, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_a_run_that_waits_for_approval_exits_6_and_names_what_it_waits_for(url: str, tmp_path: Path) -> None:
    ran = cli("run", "demo_app:approval", "--session-id", "ap", store=url, tmp=tmp_path)
    assert ran.code == EXIT_WAITING, ran.err
    assert "session ap WAITING (1/3 tasks completed)" in ran.out
    assert "task review waits for signal 'approval' with no deadline. Continue it with:" in ran.out


def test_the_printed_approve_and_resume_commands_finish_the_session(url: str, tmp_path: Path) -> None:
    ran = cli("run", "demo_app:approval", "--session-id", "ap", store=url, tmp=tmp_path)
    assert ran.code == EXIT_WAITING, ran.err
    approve, resume = continuation(ran, "approve"), continuation(ran, "resume")
    assert approve[-3:] == ["approve", "ap", "review"] and "--store" in approve
    assert resume[-4:] == ["resume", "ap", "--app", "demo_app:approval"]
    assert "worker --app demo_app:approval" in ran.out
    approved = run_printed(approve, tmp_path)
    assert approved.code == EXIT_OK and "delivered to waiting task review" in approved.out, approved.err
    resumed = run_printed(resume, tmp_path)
    assert resumed.code == EXIT_OK and "session ap COMPLETED (3/3 tasks completed)" in resumed.out, resumed.err


def test_a_resume_that_waits_again_exits_6_and_names_the_next_signal(url: str, tmp_path: Path) -> None:
    ran = cli("run", "demo_app:signals", "--session-id", "sg", store=url, tmp=tmp_path)
    assert ran.code == EXIT_WAITING, ran.err
    assert "task hold waits for signal 'go-ahead' until " in ran.out and "(in 59m" in ran.out
    signal = continuation(ran, "signal")
    assert signal[-6:] == ["signal", "sg", "hold", "go-ahead", "--data", "JSON"]
    assert run_printed(signal[:-2], tmp_path, "--data", '{"n": 1}').code == EXIT_OK
    resumed = run_printed(continuation(ran, "resume"), tmp_path)
    assert resumed.code == EXIT_WAITING, resumed.err
    # The deadline of the attempt's first wait still holds (the task record's `not_before`).
    assert "task hold waits for signal 'confirm' until " in resumed.out
    assert run_printed(continuation(resumed, "signal")[:-2], tmp_path, "--data", "2").code == EXIT_OK
    done = run_printed(continuation(resumed, "resume"), tmp_path)
    assert done.code == EXIT_OK and "session sg COMPLETED" in done.out, done.err


def test_a_waiting_run_in_json_lists_its_waits_and_exits_6(url: str, tmp_path: Path) -> None:
    ran = cli("run", "demo_app:signals", "--session-id", "sg", "--json", store=url, tmp=tmp_path)
    assert ran.code == EXIT_WAITING, ran.err
    body = json.loads(ran.out)
    assert body["status"] == "WAITING"
    [wait] = body["waiting"]
    assert wait["task_id"] == "hold" and wait["signal"] == "go-ahead" and wait["until"] is not None
