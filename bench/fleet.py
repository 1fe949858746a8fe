"""Fleet scaling: N sessions of agents that sleep, drained by 1, 2 and 4 worker processes.

For each store (a SQLite file; a table on a moto server on a free 127.0.0.1 port,
stopped at exit), it submits `--sessions` sessions of a chain of `--agents` agents that
each sleep `--sleep` seconds (LLM-like latency), starts `orchestrator worker` processes
with default settings, opens a gate once every process has imported the app (so
interpreter start-up is not timed), and times from the gate to the last completion.
It then checks that no session or task ran twice (fence 1, every task attempt 1),
prints speedups over one worker, and the idle requests per worker-second of one
in-process worker on an empty store (DynamoDB: requests on the wire; SQLite: store
listings). Run (a few minutes):

    .venv/bin/python bench/fleet.py [--sessions 200] [--agents 5] [--sleep 0.2] [--backends sqlite,moto]

This module is also the app the workers load (`--app fleet:PIPELINE`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from orchestrator import Pipeline, submit
from orchestrator.agents import AgentContext, agent
from orchestrator.recovery import Worker
from orchestrator.store import SessionStatus, Store, open_store
from orchestrator.testing._servers import stop_server

SLEEP_S = float(os.environ.get("FLEET_SLEEP", "0.2"))
AGENTS = int(os.environ.get("FLEET_AGENTS", "5"))
IDLE_S = 24.0  # how long the idle worker is watched: three of its 8 s abandoned-session listings


@agent(name="think")
async def think(ctx: AgentContext) -> int:
    """Waits like an LLM call would."""
    await anyio.sleep(SLEEP_S)
    return 1


def _pipeline() -> Pipeline:
    pipe = Pipeline("fleet", agents=[think])
    for i in range(AGENTS):
        pipe.task(f"s{i}", "think", depends_on=[f"s{i - 1}"] if i else [])
    return pipe


PIPELINE = _pipeline()


def _gate() -> None:
    """In a worker process: say it is ready, then wait for the bench to open the gate."""
    gate = os.environ.get("FLEET_GATE")
    if not gate:
        return
    Path(f"{gate}.ready.{os.getpid()}").touch()
    while not Path(gate).exists():
        time.sleep(0.01)


_gate()


async def _submit(url: str, sessions: int) -> list[str]:
    async with open_store(url) as store:
        return [await submit(PIPELINE, {"i": i}, store=store, session_id=f"f-{i:04d}") for i in range(sessions)]


async def _finished(url: str, ids: list[str]) -> tuple[int, float, Counter[str]]:
    """(completed sessions, latest completion time, problems) as stored."""
    done, last, problems = 0, 0.0, Counter[str]()
    async with open_store(url) as store:
        for sid in ids:
            snap = await store.load_session(sid)
            if snap.session.status is SessionStatus.COMPLETED:
                done += 1
                last = max(last, snap.session.completed_at or 0.0)
                if snap.session.fence != 1:
                    problems["session claimed twice"] += 1
                problems["task run twice"] += sum(t.attempt != 1 for t in snap.tasks.values())
    return done, last, problems


async def _count_done(url: str, total: int) -> int:
    async with open_store(url) as store:
        done, cursor = 0, None
        while True:
            page = await store.list_sessions(SessionStatus.COMPLETED, limit=100, cursor=cursor)
            done += len(page.items)
            cursor = page.cursor
            if cursor is None or done >= total:
                return done


def drain(url: str, workers: int, sessions: int, tmp: Path) -> tuple[float, Counter[str]]:
    """Seconds from the gate to the last completion with `workers` processes; problems found."""
    ids = anyio.run(_submit, url, sessions)
    gate = tmp / f"gate-{workers}-{time.monotonic_ns()}"
    env = {**os.environ, "FLEET_GATE": str(gate), "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-m", "orchestrator", "--store", url, "worker", "--app",
                               "fleet:PIPELINE", "--quiet"], env=env, stdout=subprocess.DEVNULL,
                              stderr=(tmp / f"worker-{workers}-{i}.err").open("w"))
             for i in range(workers)]
    try:
        while len(list(tmp.glob(f"{gate.name}.ready.*"))) < workers:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker exited before the gate opened")
            time.sleep(0.02)
        opened = time.time()
        gate.touch()
        while anyio.run(_count_done, url, sessions) < sessions:
            time.sleep(0.25)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    done, last, problems = anyio.run(_finished, url, ids)
    if done != sessions:
        problems["not completed"] += sessions - done
    return last - opened, problems


class _Listings:
    """Counts a store's listing calls (SQLite has no wire to count on)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list_sessions(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return await self.inner.list_sessions(*args, **kwargs)


async def idle_rate(url: str) -> tuple[float, float, str]:
    """Requests (DynamoDB) or listings (SQLite) per second of one worker on an empty store:
    over the whole watch (the backoff ramping up) and over its second half (settled)."""
    async with open_store(url) as store:
        requests: Counter[str] = Counter()
        events = getattr(store, "client_events", None)
        if events is not None:
            events.register("before-call.dynamodb", lambda model, **_: requests.update([model.name]))
        counted = _Listings(store)
        worker = Worker(counted, PIPELINE)  # type: ignore[arg-type]

        def count() -> int:
            return sum(requests.values()) if events is not None else counted.calls

        half: list[int] = []

        async def midway() -> None:
            await anyio.sleep(IDLE_S / 2)
            half.append(count())

        with anyio.move_on_after(IDLE_S):
            async with anyio.create_task_group() as tg:
                tg.start_soon(midway)
                await worker.run()
        what = ("requests (" + ", ".join(f"{k} x{v}" for k, v in sorted(requests.items())) + ")"
                if events is not None else "store listings")
        return count() / IDLE_S, (count() - half[0]) / (IDLE_S / 2), what


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--backends", default="sqlite,moto")
    parser.add_argument("--idle-only", action="store_true", help="only watch an idle worker's requests")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    counts = [int(n) for n in args.workers.split(",")]
    print(f"{args.sessions} sessions x {AGENTS} agents x {SLEEP_S:g} s (chain), worker defaults; "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for backend in args.backends.split(","):
            moto = None
            if backend == "moto":
                from store_requests import start_moto

                moto, endpoint = start_moto()
            try:
                times: dict[int, float] = {}
                for n in [] if args.idle_only else counts:
                    url = (f"sqlite://{tmp / f'fleet-{n}.db'}" if backend == "sqlite" else
                           f"dynamodb://fleet-{n}?region=us-east-1&endpoint={endpoint}")
                    seconds, problems = drain(url, n, args.sessions, tmp)
                    times[n] = seconds
                    verdict = "ok: no session or task ran twice" if not +problems else dict(+problems)
                    print(f"{backend:6} {n} worker(s): {seconds:6.2f} s  speedup {times[counts[0]] / seconds:4.2f}x"
                          f"  {verdict}")
                url = (f"sqlite://{tmp / 'idle.db'}" if backend == "sqlite" else
                       f"dynamodb://fleet-idle?region=us-east-1&endpoint={endpoint}")
                rate, settled, what = anyio.run(idle_rate, url)
                print(f"{backend:6} idle: {rate:.1f} per worker-second over {IDLE_S:g} s, {settled:.1f} once settled "
                      f"(its second half); {what}")
            finally:
                if moto is not None:
                    stop_server(moto)


if __name__ == "__main__":
    main()
