"""`CommandAgent`: run a subprocess as a task, streaming its output and progress.

The command runs in its own process group (a new session), so a timeout or a
cancellation stops everything it started, grandchildren included: SIGTERM to the
group, then SIGKILL after a grace period. POSIX only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, Process

from orchestrator.agents.context import AgentContext
from orchestrator.agents.errors import AgentTimeoutError, CommandFailedError, NonRetryableError
from orchestrator.agents.retry import RetryPolicy
from orchestrator.agents.spec import Agent, AgentSpec

__all__ = ["CommandAgent"]

DEFAULT_PROGRESS_PATTERN = r"\[(\d+)/(\d+)\]"
_MAX_LINE = 64 * 1024  # longer lines are cut into pieces, so one line cannot exhaust memory

Argv = Sequence[str] | Callable[[AgentContext], Sequence[str]]


def _check_argv(argv: Any, name: str) -> list[str]:
    if isinstance(argv, str) or not isinstance(argv, Sequence) or not argv:
        raise ValueError(
            f"CommandAgent {name!r}: argv {argv!r} must be a non-empty sequence of strings, "
            f"e.g. ['make', 'build'] (no shell is used)"
        )
    if not all(isinstance(a, str) for a in argv):
        raise ValueError(f"CommandAgent {name!r}: argv {list(argv)!r} holds a non-string item")
    return list(argv)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class CommandAgent(Agent):
    """Run `argv` (or `argv(ctx)`), log each output line, report `[n/total]` progress.

        deploy = CommandAgent("deploy", ["cdk", "deploy", "--all"], timeout=1800)

    Returns `{"returncode": 0, "stdout_tail": [last lines]}`; a non-zero exit raises
    `CommandFailedError` with the last stderr lines (retried per `retry`). The command's
    own `timeout` (per attempt) kills its process group and raises `AgentTimeoutError`;
    the spec carries no engine timeout, so the kill always finishes before the error.
    A progress line `[5/29] deploy: stack-a` becomes `ctx.progress(5, 29, phase="deploy",
    step="stack-a")`; a custom `progress_pattern` may name groups `current`, `total`,
    `phase`, `step`. When the command exits, whatever it left in its group is stopped.
    """

    def __init__(
        self,
        name: str,
        argv: Argv,
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        progress_pattern: str | None = DEFAULT_PROGRESS_PATTERN,
        timeout: float | None = None,
        retry: RetryPolicy = RetryPolicy(),
        tail_lines: int = 20,
        kill_grace: float = 5.0,
        drain_timeout: float = 1.0,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"CommandAgent {name!r}: timeout={timeout} must be > 0 seconds")
        if tail_lines < 0 or kill_grace < 0 or drain_timeout < 0:
            raise ValueError(f"CommandAgent {name!r}: tail_lines, kill_grace and drain_timeout must be >= 0")
        self.name = name
        self.argv: Argv = argv if callable(argv) else _check_argv(argv, name)
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.progress_re = re.compile(progress_pattern) if progress_pattern else None
        self.command_timeout = timeout
        self.retry = retry
        self.tail_lines = tail_lines
        self.kill_grace = kill_grace
        self.drain_timeout = drain_timeout

    def spec(self) -> AgentSpec:
        return AgentSpec(name=self.name, fn=self.run, retry=self.retry, timeout=None, executor="async")

    def __repr__(self) -> str:
        return f"CommandAgent({self.name!r}, {self.argv!r})"

    async def run(self, ctx: AgentContext) -> dict[str, Any]:
        argv = _check_argv(self.argv(ctx), self.name) if callable(self.argv) else list(self.argv)
        env = {**os.environ, **self.env} if self.env is not None else None
        try:
            process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env=env,
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise NonRetryableError(
                f"command {argv[0]!r} for task {ctx.task_id} could not be started: {exc}; "
                f"check the program path, cwd and permissions"
            ) from exc
        stdout_tail: deque[str] = deque(maxlen=self.tail_lines)
        stderr_tail: deque[str] = deque(maxlen=self.tail_lines)
        try:
            with anyio.move_on_after(self.command_timeout) as scope:
                returncode = await self._supervise(process, ctx, stdout_tail, stderr_tail)
            if scope.cancelled_caught:
                with anyio.CancelScope(shield=True):
                    await self._terminate_group(process)
                assert self.command_timeout is not None
                raise AgentTimeoutError(self.name, self.command_timeout)
        finally:
            # Also reached on cancellation: the shield lets the kill finish before re-raising.
            with anyio.CancelScope(shield=True):
                await self._terminate_group(process)
                await process.aclose()
        if returncode != 0:
            raise CommandFailedError(argv, returncode, "\n".join(stderr_tail))
        return {"returncode": returncode, "stdout_tail": list(stdout_tail)}

    async def _supervise(
        self, process: Process, ctx: AgentContext, stdout_tail: deque[str], stderr_tail: deque[str]
    ) -> int:
        """Pump both streams until EOF and wait for the exit status."""
        assert process.stdout is not None and process.stderr is not None
        finished = anyio.Event()
        open_streams = 2

        async def pump(stream: ByteReceiveStream, name: str, tail: deque[str]) -> None:
            nonlocal open_streams
            try:
                await self._pump(stream, name, tail, ctx)
            finally:
                open_streams -= 1
                if open_streams == 0:
                    finished.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump, process.stdout, "stdout", stdout_tail)
            tg.start_soon(pump, process.stderr, "stderr", stderr_tail)
            returncode = await process.wait()
            # Processes the command left in its group may hold the pipes open: give them
            # a moment to flush, then stop them so the pumps see EOF.
            with anyio.move_on_after(self.drain_timeout):
                await finished.wait()
            if not finished.is_set():
                await self._terminate_group(process)
        return returncode

    async def _pump(self, stream: ByteReceiveStream, name: str, tail: deque[str], ctx: AgentContext) -> None:
        buffer = b""
        while True:
            try:
                chunk = await stream.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            while len(buffer) > _MAX_LINE:
                lines.append(buffer[:_MAX_LINE])
                buffer = buffer[_MAX_LINE:]
            for raw in lines:
                self._line(raw, name, tail, ctx)
        if buffer:
            self._line(buffer, name, tail, ctx)

    def _line(self, raw: bytes, name: str, tail: deque[str], ctx: AgentContext) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        tail.append(line)
        ctx.log(line, stream=name)
        if self.progress_re is not None:
            self._progress(line, ctx)

    def _progress(self, line: str, ctx: AgentContext) -> None:
        assert self.progress_re is not None
        match = self.progress_re.search(line)
        if match is None:
            return
        named = match.groupdict()
        try:
            current = int(named["current"] if "current" in named else match.group(1))
            total = int(named["total"] if "total" in named else match.group(2))
        except (IndexError, TypeError, ValueError):
            return
        if "phase" in named or "step" in named:
            phase, step = named.get("phase"), named.get("step")
        else:
            rest = line[match.end() :].strip()
            head, sep, tail = rest.partition(":")
            phase = head.strip() or None
            step = tail.strip() or None if sep else None
        ctx.progress(current, total, phase=phase, step=step)

    async def _terminate_group(self, process: Process) -> None:
        """SIGTERM the command's process group, SIGKILL it after `kill_grace`; reap the leader."""
        pgid = process.pid  # start_new_session: the leader's pid is the group id
        if process.returncode is not None and not _group_alive(pgid):
            return
        _signal_group(pgid, signal.SIGTERM)
        with anyio.move_on_after(self.kill_grace):
            await process.wait()
            while _group_alive(pgid):
                await anyio.sleep(0.02)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
        await process.wait()
