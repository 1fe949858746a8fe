"""Parent-side helpers: spawn child processes, poll for conditions, count side effects."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from orchestrator.errors import LeaseLostError
from orchestrator.store import Store
from orchestrator.testing._workers import child_env

TESTS_DIR = Path(__file__).resolve().parents[1]
POLL_TIMEOUT_S = 30.0


class Child:
    """A child process running `scheduler.apps.main`, its output in files."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        env = child_env()
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
        tag = f"{args[0]}-{time.monotonic_ns()}"
        self.out_path = workdir / f"{tag}.out"
        self.err_path = workdir / f"{tag}.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from scheduler.apps import main; main(sys.argv[1:])", *args],
                stdout=out, stderr=err, env=env,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    async def result(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait (bounded) for the child to exit and return its JSON line."""
        await wait_until(lambda: not self.alive(), timeout=timeout, what=f"child {self.proc.args!r} to exit")
        lines = [ln for ln in self.out_path.read_text().splitlines() if ln.startswith("{")]
        if self.proc.returncode != 0 or not lines:
            raise AssertionError(
                f"child exited {self.proc.returncode}; stderr:\n{self.err_path.read_text()[-4000:]}"
            )
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def stderr(self) -> str:
        return self.err_path.read_text()


async def wait_until(cond: Callable[[], bool | Awaitable[bool]], *, timeout: float = POLL_TIMEOUT_S,
                     what: str = "condition", child: Child | None = None) -> None:
    """Poll `cond` (sync or async) every 10 ms until true; fail after `timeout` s or if `child` died."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if child is not None and not child.alive():
            raise AssertionError(f"child exited ({child.proc.returncode}) before {what}:\n{child.stderr()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.01)


async def crash_when(args: list[str], workdir: Path, cond: Callable[[], bool], what: str) -> None:
    """Run a child (`scheduler.apps.main ARGS`), wait for `cond`, then SIGKILL it (even on failure)."""
    child = Child(args, workdir)
    try:
        await wait_until(cond, child=child, what=what)
    finally:
        child.kill()


def marks(directory: Path, what: str) -> Counter[str]:
    """How many `<task>.<attempt>.<pid>.<what>` files each task left."""
    found: Counter[str] = Counter()
    for path in directory.glob(f"*.{what}"):
        found[path.name.split(".")[0]] += 1
    return found


def open_gate(directory: Path, *tasks: str) -> None:
    for task in tasks:
        (directory / f"go.{task}").write_text("go")


async def wait_lease_expired(store: Store, session_id: str) -> None:
    """Wait (bounded) until the session's lease has expired by the store's clock."""

    async def expired() -> bool:
        session = await store.get_session(session_id)
        return session.lease_expires_at is None or session.lease_expires_at < store.clock.now()

    await wait_until(expired, what=f"the lease of session {session_id} to expire")


def leaf_errors(exc: BaseException | None) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups; [exc] for a plain one."""
    if exc is None:
        return []
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaf_errors(inner)]
    return [exc]


def lease_lost_in(exc: BaseException | None) -> LeaseLostError | None:
    """The LeaseLostError that `exc` is or wraps, if any."""
    return next((e for e in leaf_errors(exc) if isinstance(e, LeaseLostError)), None)
