"""Per-task overhead of `run()` against bare anyio running the same DAG, in one process run.

    python bench/overhead.py [--n 1000] [--dynamodb-n 200] [--skip-dynamodb]

Shapes: a chain of N no-op tasks, and a fan-out 1 -> N -> 1 at concurrency 32.
Backends: SQLite (a real file; synchronous=NORMAL and FULL) and DynamoDB on a moto server
on 127.0.0.1 (started and stopped here). For DynamoDB it also counts, from botocore
events, the requests and write units per task inside `run()`, with session creation
reported separately. Ratios come from the same run, so machine noise mostly cancels;
request counts do not depend on the machine at all. CPU time (the process's, beside wall
time) does not count the time spent waiting for a core, so it holds on a loaded machine.
bench/compare_commits.py runs this script against two commits' packages, alternately:
from 7dab1d4 to now, SQLite's CPU ms/task moved by 0.99-1.07x (README, Performance).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.agents import agent
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, default_worker_id, execute
from orchestrator.store import Lease, Store, open_store

CONCURRENCY = 32


@agent
async def noop(ctx: Any) -> None:
    return None


def chain(n: int) -> Pipeline:
    p = Pipeline(f"chain{n}", agents=[noop])
    prev: list[str] = []
    for i in range(n):
        p.task(f"t{i}", "noop", depends_on=prev)
        prev = [f"t{i}"]
    return p


def fanout(n: int) -> Pipeline:
    p = Pipeline(f"fan{n}", agents=[noop]).task("root", "noop")
    for i in range(n):
        p.task(f"m{i}", "noop", depends_on=["root"])
    return p.task("end", "noop", depends_on=[f"m{i}" for i in range(n)])


async def bare_anyio(pipeline: Pipeline, concurrency: int) -> float:
    """The same DAG with anyio events and a limiter: the floor any runner pays."""
    tasks = pipeline.tasks
    done = {tid: anyio.Event() for tid in tasks}
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(tid: str) -> None:
        for dep in tasks[tid].depends_on:
            await done[dep].wait()
        async with limiter:
            await noop(None)
        done[tid].set()

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for tid in tasks:
            tg.start_soon(one, tid)
    return time.perf_counter() - start


class Counting:
    """DynamoDB requests and consumed write units, from botocore events."""

    def __init__(self, store: Store) -> None:
        self.ops: Counter[str] = Counter()
        self.wcu = 0.0
        self.counting = True
        events = getattr(store, "client_events", None)
        assert events is not None, f"{store!r} has no client_events: request counting is for DynamoDB"
        events.register("before-call.dynamodb", self._before)
        events.register("after-call.dynamodb", self._after)

    def _before(self, model: Any, **_: Any) -> None:
        if self.counting:
            self.ops[model.name] += 1

    def _after(self, parsed: Any = None, **_: Any) -> None:
        if not self.counting or not isinstance(parsed, dict):
            return
        consumed = parsed.get("ConsumedCapacity")
        for item in consumed if isinstance(consumed, list) else [consumed] if consumed else []:
            self.wcu += float(item.get("WriteCapacityUnits") or item.get("CapacityUnits") or 0.0)

    def take(self) -> tuple[Counter[str], float]:
        ops, wcu = self.ops, self.wcu
        self.ops, self.wcu = Counter(), 0.0
        return ops, wcu


async def timed_run(
    store: Store, pipeline: Pipeline, counting: Counting | None, options: RunOptions | None = None
) -> dict[str, Any]:
    options = options or RunOptions(concurrency=CONCURRENCY)
    from orchestrator.store.records import NewSession

    worker = default_worker_id()
    start = time.perf_counter()
    await store.put_pipeline(pipeline.definition())
    record = await store.create_session(
        NewSession(session_id=f"{pipeline.name}-{uuid.uuid4().hex[:8]}", pipeline=pipeline.name),
        pipeline.new_tasks(), owner=worker, lease_seconds=options.lease_seconds,
    )
    created = time.perf_counter()
    create_ops, create_wcu = counting.take() if counting else (Counter(), 0.0)
    lease = Lease(record.session_id, worker, record.fence, record.lease_expires_at, record.signal_seq)
    cpu = time.process_time()
    result = await execute(store, pipeline, lease, options=options)
    end, cpu_end = time.perf_counter(), time.process_time()
    assert result.ok, result.reason
    run_ops, run_wcu = counting.take() if counting else (Counter(), 0.0)
    return {
        "create_s": created - start, "run_s": end - created, "run_cpu_s": cpu_end - cpu,
        "create_ops": create_ops, "create_wcu": create_wcu,
        "run_ops": run_ops, "run_wcu": run_wcu,
    }


def row(label: str, n: int, stats: dict[str, Any], floor: float, cpu_floor: float) -> str:
    per_task_ms = stats["run_s"] * 1000 / n
    ratio = stats["run_s"] / floor if floor > 0 else float("inf")
    cpu_ratio = stats["run_cpu_s"] / cpu_floor if cpu_floor > 0 else float("inf")
    text = (f"  {label:<34} {per_task_ms:8.3f} ms/task   x{ratio:7.1f} bare anyio"
            f"   cpu {stats['run_cpu_s'] * 1000 / n:6.3f} ms/task x{cpu_ratio:5.1f}")
    if stats["run_ops"]:
        reqs = sum(stats["run_ops"].values())
        text += (
            f"   {reqs / n:5.2f} req/task ({reqs} in run: "
            f"{', '.join(f'{k} {v}' for k, v in stats['run_ops'].most_common())})"
            f"   {stats['run_wcu'] / n:5.2f} WCU/task"
            f"   creation: {sum(stats['create_ops'].values())} req, {stats['create_wcu']:.0f} WCU"
        )
    return text


async def bench_store(label: str, make: Callable[[], Store], n: int, dynamodb: bool) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    options = RunOptions(concurrency=CONCURRENCY)
    if dynamodb:
        # moto answers a large transaction in seconds and serves one request at a time, so
        # renewals queue behind the dispatcher's batches; a long lease keeps the run alive.
        options = RunOptions(concurrency=CONCURRENCY, lease_seconds=900, heartbeat_interval=120)
    async with make() as store:
        counting = Counting(store) if dynamodb else None
        for shape, build, conc in (("chain", chain, 1), ("fan-out", fanout, CONCURRENCY)):
            pipeline = build(n)
            gc.collect()  # no garbage of the previous shape collected inside a measurement
            cpu = time.process_time()
            floor = await bare_anyio(pipeline, conc)
            cpu_floor = time.process_time() - cpu
            gc.collect()
            stats = await timed_run(store, pipeline, counting, options)
            print(row(f"{label} {shape}", n, stats, floor, cpu_floor))
            out.append((f"{label} {shape}", stats["run_s"] * 1000 / n))
            if dynamodb:
                reqs = sum(stats["run_ops"].values()) / n
                assert reqs <= 2.1, f"{label} {shape}: {reqs:.2f} requests per task exceeds the 2.1 budget"
    return out


async def main(n: int, dynamodb_n: int, skip_dynamodb: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="orchestrator-bench-") as d:
        await measure(Path(d), n, dynamodb_n, skip_dynamodb)


async def measure(tmp: Path, n: int, dynamodb_n: int, skip_dynamodb: bool) -> None:
    print(f"per-task overhead, N={n} no-op tasks (chain; fan-out 1->N->1 at concurrency {CONCURRENCY}); "
          f"DynamoDB on moto with N={dynamodb_n}")
    await bench_store("sqlite NORMAL", lambda: open_store(f"sqlite://{tmp}/normal.db"), n, False)
    await bench_store("sqlite FULL", lambda: open_store(f"sqlite://{tmp}/full.db?synchronous=FULL"), n, False)
    if skip_dynamodb:
        return
    from orchestrator.testing.moto_server import moto_server

    for key, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(key, value)  # moto accepts any credentials
    with moto_server() as endpoint:
        for tx in ("1", "0"):
            url = (f"dynamodb://bench-{uuid.uuid4().hex[:6]}?endpoint={endpoint}&region=us-east-1&transactions={tx}"
                   "&timeout=60")  # moto serves a 33-item transaction in about a second
            label = f"dynamodb moto tx={'on' if tx == '1' else 'off'}"
            await bench_store(label, lambda url=url: open_store(url), dynamodb_n, True)  # type: ignore[misc]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--dynamodb-n", type=int, default=200,
                        help="tasks for the moto runs (moto's transactions slow down with table size)")
    parser.add_argument("--skip-dynamodb", action="store_true")
    args = parser.parse_args()
    anyio.run(main, args.n, args.dynamodb_n, args.skip_dynamodb)
