"""`run` and `resume` of a session that stops WAITING: exit 6, say what it waits for, and
print the commands that continue it (which, run as printed, do continue it).

A session waiting for a person is neither done (exit 0) nor failed (exit 1): a script
must be able to tell, and a person must not have to guess the next command. Printed
commands name the store this one used (`--store`), so they work when pasted; `status
--watch` follows a session through WAITING until it is final.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
from pathlib import Path

import anyio
import pytest
from cli_helpers import APPS, Result, cli, cli_env, spawn

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
    assert re.search(r"task hold waits for signal 'go-ahead' until \S+ \S+ \(in 5\dm\d\ds\)", ran.out), ran.out
    signal = continuation(ran, "signal")
    assert signal[-6:] == ["signal", "sg", "hold", "go-ahead", "--data", "JSON"]
    assert run_printed(signal[:-2], tmp_path, "--data", '{"n": 1}').code == EXIT_OK
    resumed = run_printed(continuation(ran, "resume"), tmp_path)
    assert resumed.code == EXIT_WAITING, resumed.err
    # The second wait has its own deadline: none (the first wait's hour is not carried over).
    assert "task hold waits for signal 'confirm' with no deadline" in resumed.out, resumed.out
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


class Lines:
    """A child's stdout, read line by line on a thread, so a test can wait for a line (bounded)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._new = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        with self._new:
            if not self._new.wait_for(lambda: any(text in line for line in self.lines), timeout=timeout):
                raise AssertionError(f"{text!r} not printed within {timeout}s:\n" + "\n".join(self.lines))

    def joined(self, timeout: float = 10.0) -> list[str]:
        self._thread.join(timeout)
        return self.lines


def wait_for_file(path: Path, timeout: float = 60.0) -> None:
    async def poll() -> None:
        with anyio.fail_after(timeout):
            while not path.exists():
                await anyio.sleep(0.05)

    anyio.run(poll)


def test_status_watch_follows_a_session_through_running_waiting_and_completed_then_exits(
    url: str, tmp_path: Path
) -> None:
    started, gate = tmp_path / "started", tmp_path / "gate"
    spec = json.dumps({"started": str(started), "gate": str(gate)})
    run = spawn("run", "demo_app:watched", "--session-id", "wt", "--input", spec, store=url, tmp=tmp_path)
    watch: subprocess.Popen[str] | None = None
    try:
        wait_for_file(started)
        watch = spawn("status", "wt", "--watch", store=url, tmp=tmp_path)
        lines = Lines(watch)
        lines.wait_for("wt  watched v1  RUNNING")
        gate.write_text("go", encoding="utf-8")
        assert run.wait(timeout=60) == EXIT_WAITING
        lines.wait_for("wt  watched v1  WAITING")
        assert cli("approve", "wt", "review", store=url, tmp=tmp_path).code == EXIT_OK
        assert cli("resume", "wt", "--app", "demo_app:watched", store=url, tmp=tmp_path).code == EXIT_OK
        assert watch.wait(timeout=60) == EXIT_OK  # it exits by itself once the session is final
        titles = [line for line in lines.joined() if line.startswith("wt  watched v1  ")]
        states = [t.split()[3] for t in titles]
        firsts = [states.index(s) for s in ("RUNNING", "WAITING", "COMPLETED")]
        assert firsts == sorted(firsts) and states[-1] == "COMPLETED", titles
        assert "task review waits for signal 'approval' with no deadline" in " ".join(lines.lines)
    finally:
        for proc in (run, watch):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            if proc is not None:
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()


def test_a_failed_run_prints_a_resume_command_that_works_as_printed(url: str, tmp_path: Path) -> None:
    marker = tmp_path / "fixed"
    ran = cli("run", "demo_app:flaky", "--session-id", "bad", "--input", json.dumps({"marker": str(marker)}),
              store=url, tmp=tmp_path)
    assert ran.code == 1, ran.err
    [line] = [line for line in ran.out.splitlines() if line.startswith("resume it with: ")]
    marker.write_text("ok", encoding="utf-8")
    resumed = run_printed(shlex.split(line.removeprefix("resume it with: ")), tmp_path)
    assert resumed.code == EXIT_OK and "session bad COMPLETED (3/3 tasks completed)" in resumed.out, resumed.err
