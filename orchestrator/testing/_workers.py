"""Child-process entry points for multi-process contract tests.

Each child opens the store by URL, waits for a "go" file (so all children race at
once), does one job, and prints one JSON line. Run them with `spawn_worker()`:

    python -m orchestrator.testing._workers claim URL SESSION OWNER GOFILE
    python -m orchestrator.testing._workers metrics URL WRITER DAY ROUNDS GOFILE
    python -m orchestrator.testing._workers hold URL SESSION OWNER READYFILE
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

import orchestrator

__all__ = ["child_env", "finish_worker", "spawn_worker"]

_GO_TIMEOUT_S = 60.0


def child_env() -> dict[str, str]:
    """The environment for a child: ours, with this checkout importable and fake AWS keys."""
    env = dict(os.environ)
    root = str(Path(orchestrator.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return env


def spawn_worker(*args: str) -> subprocess.Popen[str]:
    """Start `python -m orchestrator.testing._workers ARGS...` with piped output."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.testing._workers", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def finish_worker(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> dict[str, Any]:
    """Wait (bounded) for a worker and return its JSON result; kill it on timeout."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"worker {proc.args!r} timed out after {timeout_s}s; stderr:\n{err}") from None
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"worker {proc.args!r} exited {proc.returncode}; stderr:\n{err[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _wait_for(path: str) -> None:
    deadline = time.monotonic() + _GO_TIMEOUT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"no go file {path} after {_GO_TIMEOUT_S}s")
        time.sleep(0.001)


async def _claim(url: str, sid: str, owner: str, go: str) -> dict[str, Any]:
    from orchestrator.errors import ClaimRejectedError
    from orchestrator.store import open_store

    store = open_store(url)
    try:
        await store.initialize()
        await store.get_session(sid)  # connect before the race
        _wait_for(go)
        try:
            lease = await store.claim_session(sid, owner, 60.0)
        except ClaimRejectedError as exc:
            return {"won": False, "fence": None, "error": str(exc)}
        return {"won": True, "fence": lease.fence, "error": None}
    finally:
        await store.aclose()


async def _metrics(url: str, writer: str, day: str, rounds: int, go: str) -> dict[str, Any]:
    from orchestrator.store import MetricSummary, open_store

    store = open_store(url)
    try:
        await store.initialize()
        _wait_for(go)
        for seq in range(1, rounds + 1):
            summary = MetricSummary(
                day=day, hour=3, name="task", agent="worker-agent", count=seq, errors=1,
                sum_ms=10.0 * seq, min_ms=10.0, max_ms=10.0, buckets=(0, 0, 0, 0, seq),
            )
            await store.record_metrics(writer, seq, [summary])
            await store.record_metrics(writer, seq, [summary])  # a retry: must not double count
        return {"ok": True}
    finally:
        await store.aclose()


async def _hold(url: str, sid: str, owner: str, ready: str) -> dict[str, Any]:
    from orchestrator.store import TaskWrite, TaskWriteKind, open_store

    store = open_store(url)
    try:
        await store.initialize()
        lease = await store.claim_session(sid, owner, 30.0)
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t1", 1)])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.COMPLETE, "t1", 1, output={"by": owner})])
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t2", 1)])
        # Write then rename, so the parent never reads a half-written file.
        Path(f"{ready}.tmp").write_text(json.dumps({"fence": lease.fence}))
        os.replace(f"{ready}.tmp", ready)
        while True:  # the parent kills us here, mid-session
            await anyio.sleep(3600)
    finally:
        await store.aclose()


def main(argv: list[str]) -> None:
    cmd, *args = argv
    if cmd == "claim":
        url, sid, owner, go = args
        result = anyio.run(_claim, url, sid, owner, go)
    elif cmd == "metrics":
        url, writer, day, rounds, go = args
        result = anyio.run(_metrics, url, writer, day, int(rounds), go)
    elif cmd == "hold":
        url, sid, owner, ready = args
        result = anyio.run(_hold, url, sid, owner, ready)
    else:
        raise SystemExit(f"unknown worker command {cmd!r}; use claim, metrics or hold")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
