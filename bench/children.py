"""Child sessions: speedup of a map drained by 1, 2 and 4 worker processes, and requests per child.

1. SQLite: a parent maps 200 items whose agent sleeps 0.2 s; 1, 2 and 4 worker processes
   (4 sessions at once each) drain it. Prints wall time and speedup over one worker.
2. DynamoDB (a moto server on a free 127.0.0.1 port, stopped at exit), transactions on and
   off: requests for N children run by a map, minus the requests for the same N
   sessions submitted directly, per child: what the map itself costs (creation, looks,
   results), and the total per child. Run:

    .venv/bin/python bench/children.py [--items 200] [--dynamodb-items 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import children_app
from store_requests import Meter, start_moto

from orchestrator import Worker, open_store, submit
from orchestrator.store import NewSession
from orchestrator.store.dynamodb import DynamoDBStore

_APP = Path(__file__).resolve().parent / "children_app.py"


def speedups(items: int) -> None:
    print(f"SQLite: a map of {items} items (each sleeps 0.2 s) drained by worker processes (4 sessions each);")
    print("  timed from the parent's submission (workers already started) to its completion")
    base: float | None = None
    for workers in (1, 2, 4):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"

            async def init(url: str = url) -> None:
                async with open_store(url):
                    pass

            anyio.run(init)
            procs = [subprocess.Popen([sys.executable, str(_APP), "worker", url], env=dict(os.environ))
                     for _ in range(workers)]
            time.sleep(3.0)  # the workers import and start polling

            async def drain(url: str = url) -> float:
                async with open_store(url) as store:
                    started = time.perf_counter()
                    await submit(children_app.fanout, {"n": items, "sleep": 0.2, "concurrency": 64},
                                 store=store, session_id="parent")
                    while not (await store.get_session("parent")).status.is_final:
                        await anyio.sleep(0.05)
                    return time.perf_counter() - started

            took = anyio.run(drain)
            for proc in procs:
                proc.wait()
            base = base or took
            print(f"  {workers} worker(s): {took:6.2f} s   speedup {base / took:4.2f}x")


async def requests(endpoint: str, items: int, transactions: bool) -> None:
    tx = "" if transactions else "&transactions=0"

    async def measured(label: str, with_map: bool) -> Counter[str]:
        url = f"dynamodb://bench-{label}-{int(transactions)}-{time.monotonic_ns()}?region=us-east-1" \
              f"&endpoint={endpoint}{tx}"
        async with open_store(url) as store:
            assert isinstance(store, DynamoDBStore)
            meter = Meter(store)
            if with_map:
                await submit(children_app.fanout, {"n": items, "sleep": 0.0, "concurrency": items, "poll": 0.5},
                             store=store, session_id="parent")
            else:
                for i in range(items):
                    await submit(children_app.square, {"i": i}, store=store, session_id=f"solo.{i}")
            await Worker(store, [children_app.fanout, children_app.square], concurrency=16,
                         poll_interval=0.5).run(idle_exit=1.5)
            return Counter(meter.ops)

    direct = await measured("direct", False)
    mapped = await measured("map", True)
    ops = sorted(set(direct) | set(mapped))
    diff = {op: (mapped[op] - direct[op]) / items for op in ops}
    print(f"\nDynamoDB, transactions={'on' if transactions else 'off'}: {items} children")
    print(f"  requests per child, run by a map:          {sum(mapped.values()) / items:6.2f}")
    print(f"  requests per session, the same submitted:   {sum(direct.values()) / items:6.2f}")
    print(f"  difference per child (signed, by op):       {sum(diff.values()):+6.2f}  "
          + ", ".join(f"{op} {d:+.2f}" for op, d in diff.items() if abs(d) >= 0.005))
    print("  (both include the worker's polling for work, which varies with timing)")

    url = f"dynamodb://bench-batch-{int(transactions)}-{time.monotonic_ns()}?region=us-east-1&endpoint={endpoint}{tx}"
    async with open_store(url) as store:
        assert isinstance(store, DynamoDBStore)
        meter = Meter(store)
        tasks = children_app.square.new_tasks()
        await store.create_sessions([(NewSession(f"b.{i}", "bench-square", input={"i": i}), tasks)
                                     for i in range(items)])
        created = Counter(meter.ops)
        meter.ops.clear()
        await store.get_sessions([f"b.{i}" for i in range(items)])
        looked = Counter(meter.ops)
    print(f"  creating {items} one-task children:  {sum(created.values()) / items:.3f} requests per child "
          f"({', '.join(f'{op} {n}' for op, n in sorted(created.items()))})")
    print(f"  one look at {items} in flight:        {sum(looked.values()) / items:.3f} requests per child "
          f"({', '.join(f'{op} {n}' for op, n in sorted(looked.items()))})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--dynamodb-items", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    speedups(args.items)
    proc, endpoint = start_moto()
    try:
        for transactions in (True, False):
            anyio.run(requests, endpoint, args.dynamodb_items, transactions)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
