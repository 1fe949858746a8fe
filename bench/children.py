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
from orchestrator.store.dynamodb import DynamoDBStore

_APP = Path(__file__).resolve().parent / "children_app.py"


def speedups(items: int) -> None:
    print(f"SQLite: a map of {items} items (each sleeps 0.2 s) drained by worker processes (4 sessions each)")
    base: float | None = None
    for workers in (1, 2, 4):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"

            async def make(url: str = url) -> None:
                async with open_store(url) as store:
                    await submit(children_app.fanout, {"n": items, "sleep": 0.2, "concurrency": 64}, store=store,
                                 session_id="parent")

            anyio.run(make)
            started = time.perf_counter()
            procs = [subprocess.Popen([sys.executable, str(_APP), "worker", url], env=dict(os.environ))
                     for _ in range(workers)]
            for proc in procs:
                proc.wait()
            took = time.perf_counter() - started - 2.0  # each worker idles 2 s before exiting
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
    extra = mapped - direct
    print(f"\nDynamoDB, transactions={'on' if transactions else 'off'}: {items} children")
    print(f"  total requests per child (map):        {sum(mapped.values()) / items:6.2f}")
    print(f"  per child as plain sessions (no map):  {sum(direct.values()) / items:6.2f}")
    print(f"  the map's own cost per child:          {sum(extra.values()) / items:6.2f}  "
          + ", ".join(f"{op} {n / items:.3f}" for op, n in sorted(extra.items())))
    print("  (worker polling for work is included in both and varies with timing)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--dynamodb-items", type=int, default=100)
    args = parser.parse_args()
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
