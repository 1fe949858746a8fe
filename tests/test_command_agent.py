"""CommandAgent: output streaming, progress parsing, exit status, and killing the process group."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from orchestrator.agents import (
    AgentContext,
    AgentTimeoutError,
    CommandAgent,
    CommandFailedError,
    NonRetryableError,
    spec_of,
)
from orchestrator.testing import FakeAgentContext

pytestmark = pytest.mark.anyio


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


# A child that starts a grandchild ignoring SIGTERM, prints its pid, then hangs.
SPAWNS_GRANDCHILD = py(
    """
    import signal, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c",
        "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.pause()"])
    print(f"grandchild {child.pid}", flush=True)
    signal.pause()
    """
)


def _is_gone(pid: int) -> bool:
    """True once `pid` no longer runs (absent, or a zombie its new parent has not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def _wait_until_gone(pid: int) -> bool:
    for _ in range(500):
        if _is_gone(pid):
            return True
        await anyio.sleep(0.01)
    return False


async def _grandchild_pid(ctx: FakeAgentContext) -> int:
    for _ in range(1000):
        for line in ctx.lines("stdout"):
            if line.startswith("grandchild "):
                return int(line.split()[1])
        await anyio.sleep(0.01)
    raise AssertionError(f"the command never printed its grandchild's pid; logs: {ctx.logs}")


def test_fake_context_satisfies_the_protocol() -> None:
    assert isinstance(FakeAgentContext(), AgentContext)


def test_spec_is_async_without_engine_timeout() -> None:
    spec = spec_of(CommandAgent("build", ["make"], timeout=30))
    assert (spec.name, spec.executor, spec.timeout) == ("build", "async", None)


def test_static_argv_must_be_a_list_of_strings() -> None:
    with pytest.raises(ValueError, match="non-empty sequence of strings"):
        CommandAgent("x", "make build")  # type: ignore[arg-type]


async def test_streams_lines_and_returns_stdout_tail() -> None:
    ctx = FakeAgentContext()
    cmd = CommandAgent(
        "echo",
        py("""
        import sys
        for i in range(5):
            print(f"out {i}")
        print("oops", file=sys.stderr)
        """),
        tail_lines=3,
    )
    result = await cmd.run(ctx)
    assert result == {"returncode": 0, "stdout_tail": ["out 2", "out 3", "out 4"]}
    assert ctx.lines("stdout") == [f"out {i}" for i in range(5)]
    assert ctx.lines("stderr") == ["oops"]


async def test_parses_progress_lines() -> None:
    ctx = FakeAgentContext()
    cmd = CommandAgent(
        "deploy",
        py("""
        print("[1/29] synth")
        print("[5/29] deploy: stack-a")
        print("no progress here")
        """),
    )
    await cmd.run(ctx)
    assert ctx.progress_calls == [(1, 29, "synth", None), (5, 29, "deploy", "stack-a")]


async def test_custom_progress_pattern_with_named_groups() -> None:
    ctx = FakeAgentContext()
    cmd = CommandAgent(
        "tests",
        py('print("ran 3 of 10 in unit")'),
        progress_pattern=r"ran (?P<current>\d+) of (?P<total>\d+) in (?P<phase>\w+)",
    )
    await cmd.run(ctx)
    assert ctx.progress_calls == [(3, 10, "unit", None)]


async def test_argv_from_context_and_env_and_cwd(tmp_path: Path) -> None:
    ctx = FakeAgentContext(input={"name": "world"})
    cmd = CommandAgent(
        "hello",
        lambda c: [sys.executable, "-c", f"import os; print('hi {c.input['name']}', os.environ['X'], os.getcwd())"],
        env={"X": "from-env"},
        cwd=tmp_path,
    )
    result = await cmd.run(ctx)
    assert result["stdout_tail"] == [f"hi world from-env {tmp_path}"]


async def test_non_zero_exit_raises_with_stderr_tail() -> None:
    cmd = CommandAgent(
        "fails",
        py("""
        import sys
        for i in range(30):
            print(f"err {i}", file=sys.stderr)
        sys.exit(3)
        """),
        tail_lines=2,
    )
    with pytest.raises(CommandFailedError) as info:
        await cmd.run(FakeAgentContext())
    assert info.value.returncode == 3
    assert info.value.stderr_tail == "err 28\nerr 29"
    assert "exited with status 3" in str(info.value)


async def test_missing_program_is_not_retryable(tmp_path: Path) -> None:
    cmd = CommandAgent("ghost", [str(tmp_path / "no-such-program")])
    with pytest.raises(NonRetryableError, match="could not be started"):
        await cmd.run(FakeAgentContext())


async def test_timeout_kills_the_whole_process_group() -> None:
    ctx = FakeAgentContext()
    cmd = CommandAgent("hangs", SPAWNS_GRANDCHILD, timeout=1.5, kill_grace=0.2)
    with pytest.raises(AgentTimeoutError, match=r"'hangs' ran past its timeout of 1\.5s"):
        await cmd.run(ctx)
    assert await _wait_until_gone(await _grandchild_pid(ctx))


async def test_cancellation_kills_the_whole_process_group() -> None:
    ctx = FakeAgentContext()
    cmd = CommandAgent("hangs", SPAWNS_GRANDCHILD, kill_grace=0.2)
    outcome: list[str] = []

    async def run() -> None:
        try:
            await cmd.run(ctx)
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        pid = await _grandchild_pid(ctx)
        assert not _is_gone(pid)
        tg.cancel_scope.cancel()
    assert outcome == ["cancelled"]
    assert await _wait_until_gone(pid)


async def test_processes_left_behind_after_exit_are_stopped() -> None:
    ctx = FakeAgentContext()
    cmd = CommandAgent(
        "leaves-daemon",
        py("""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
        print(f"grandchild {child.pid}", flush=True)
        """),
        kill_grace=0.2,
        drain_timeout=0.2,
    )
    result = await cmd.run(ctx)
    assert result["returncode"] == 0
    assert await _wait_until_gone(await _grandchild_pid(ctx))
