"""Kill a worker mid-run with SIGKILL, resume the session from another process, count re-runs.

1. `submit` stores a PENDING session; a worker *process* claims it and runs it.
2. Once `slow_a` and `slow_b` are in flight (and `prepare`, `quick_c` completed), the
   worker gets SIGKILL: no cleanup, no lease release, whatever it buffered is lost.
3. The session stays RUNNING under a dead owner until its lease expires; then this
   process claims it (`resume`), keeps the COMPLETED tasks and outputs, and runs
   only what was left: the two in-flight tasks run again, the rest once.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import Process

from examples._common import REPO_ROOT
from examples.crash_and_resume.pipeline import FAST_LEASE, GATE, pipeline, side_effects
from orchestrator.scheduler import RunResult, resume, submit
from orchestrator.store import SessionRecord, Store, TaskStatus

__all__ = ["CrashRun", "run_example"]


@dataclass(frozen=True, slots=True)
class CrashRun:
    session_id: str
    killed_pid: int
    at_kill: dict[str, TaskStatus]  # task statuses stored when the worker died
    dead_session: SessionRecord  # the session as the dead worker left it
    result: RunResult  # the resumed run
    runs: dict[str, int]  # task -> times its agent body ran

    @property
    def ran_once(self) -> list[str]:
        return sorted(t for t, n in self.runs.items() if n == 1)

    @property
    def ran_again(self) -> list[str]:
        return sorted(t for t, n in self.runs.items() if n > 1)


async def _wait_for(what: str, check: Callable[[], Awaitable[bool]], proc: Process | None, timeout: float) -> None:
    """Poll `check` until true; fail fast if the worker process died first, or after `timeout`."""
    with anyio.move_on_after(timeout) as waited:
        while not await check():
            if proc is not None and proc.returncode is not None:
                raise RuntimeError(f"the worker process exited ({proc.returncode}) before {what}")
            await anyio.sleep(0.05)
    if waited.cancelled_caught:
        raise TimeoutError(f"gave up after {timeout:g}s waiting for {what}")


async def run_example(store: Store, store_url: str, workdir: Path, *, verbose: bool = False) -> CrashRun:
    """Run the whole scenario; `store_url` must open `store`'s data from another process."""
    say = print if verbose else (lambda *_: None)
    workdir.mkdir(parents=True, exist_ok=True)
    sid = await submit(pipeline, {"workdir": str(workdir)}, store=store, options=FAST_LEASE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    # stdin/stdout/stderr=None: the worker shares this terminal, as a separate process would.
    proc = await anyio.open_process([sys.executable, "-m", "examples.crash_and_resume.worker", store_url],
                                    cwd=REPO_ROOT, env=env, stdin=None, stdout=None, stderr=None)
    try:
        started = workdir / "started"

        async def in_flight() -> bool:
            # Both slow agents entered their bodies and quick_c's completion is stored.
            if len(list(started.glob("slow_*"))) < 2:
                return False
            return (await store.get_task(sid, "quick_c")).status is TaskStatus.COMPLETED

        await _wait_for("slow_a and slow_b to be in flight", in_flight, proc, 60)
        say(f"   worker pid {proc.pid} is running slow_a and slow_b: sending SIGKILL")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.returncode is None:
            proc.kill()
        with anyio.CancelScope(shield=True):
            await proc.aclose()  # reaps the child
    snap = await store.load_session(sid)
    at_kill = {tid: t.status for tid, t in snap.tasks.items()}
    say(f"   stored after the kill: session {snap.session.status.value}, owner {snap.session.lease_owner}; "
        + ", ".join(f"{t}={s.value}" for t, s in at_kill.items()))
    (workdir / GATE).touch()  # the slow agents may finish this time

    async def lease_expired() -> bool:
        session = await store.get_session(sid)
        return session.lease_expires_at is None or session.lease_expires_at < store.clock.now()

    await _wait_for("the dead worker's lease to expire", lease_expired, None, 30)
    say(f"   lease expired; resuming session {sid} in process {os.getpid()}")
    result = await resume(pipeline, sid, store=store, options=FAST_LEASE)
    runs = {task: len(lines) for task, lines in side_effects(workdir).items()}
    return CrashRun(sid, proc.pid, at_kill, snap.session, result, runs)
