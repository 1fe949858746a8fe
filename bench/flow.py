"""Fleet-wide resource limits: requests per acquire/release, and acquire latency under contention.

1. On a moto server (DynamoDB; a free 127.0.0.1 port, stopped at exit): the requests,
   by operation, of one acquire, renewal, release and refused acquire, for a small
   limit (1 shard) and a large one (20 shards), counted from botocore's after-call events.
2. Four processes sharing one limit of 3 (SQLite file, then the moto server): each
   takes the resource 40 times (holding it 5 ms), backing off between refusals as the
   scheduler does; prints acquire latency p50/p95/max and requests per grant (DynamoDB).

    .venv/bin/python bench/flow.py

moto serves one request at a time and takes milliseconds per request: its latencies
measure moto, not DynamoDB; the request counts are what carries over.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, cast

import anyio

from orchestrator.schedules import flow_store
from orchestrator.store import Grant, Rate, ResourceLimit, open_store
from orchestrator.store.dynamodb import DynamoDBStore
from orchestrator.store.rules.resources import backoff, shard_count
from orchestrator.testing.moto_server import MotoServer

ROUNDS = 40
HOLD_S = 0.005


class Meter:
    """Requests by operation, from after-call events."""

    def __init__(self, store: DynamoDBStore) -> None:
        self.ops: Counter[str] = Counter()
        store.client_events.register("after-call.dynamodb", self._after)

    def _after(self, model: Any, **_: Any) -> None:
        self.ops[model.name] += 1

    def take(self) -> str:
        out = ", ".join(f"{name}x{n}" for name, n in sorted(self.ops.items())) or "none"
        self.ops.clear()
        return out


async def requests(endpoint: str) -> None:
    url = f"dynamodb://bench-{uuid.uuid4().hex[:8]}?region=us-east-1&endpoint={endpoint}"
    admin = open_store(url)
    await admin.initialize()
    store = cast(DynamoDBStore, open_store(url))  # a second process's view: the limits not cached yet
    await store.initialize()
    meter = Meter(store)
    flow = flow_store(store)
    print("requests per operation (moto server):")
    for limit in (ResourceLimit("small", 3, Rate(60, 60.0)), ResourceLimit("large", 500, Rate(500, 60.0))):
        await flow_store(admin).set_limit(limit)
        meter.take()
        grant = await flow.acquire_resource(limit.name, "h-1", 1, priority=2, lease_seconds=30.0)
        first = meter.take()
        second = await flow.acquire_resource(limit.name, "h-2", 1, priority=2, lease_seconds=30.0)
        cached = meter.take()
        assert isinstance(grant, Grant) and isinstance(second, Grant)
        await flow.renew_resource(grant, 30.0)
        renew = meter.take()
        await flow.release_resource(grant)
        release = meter.take()
        print(f"  {limit.name} (concurrency {limit.concurrency}, rate {limit.rate}, {shard_count(limit)} shards): "
              f"acquire {first} (limit not cached yet), acquire {cached} (cached), renew {renew}, "
              f"release {release}")
    await flow.set_limit(ResourceLimit("full", 1))
    await flow.acquire_resource("full", "holder", 1, priority=2, lease_seconds=30.0)
    meter.take()
    await flow.acquire_resource("full", "waiter", 1, priority=2, lease_seconds=30.0)
    print(f"  refused acquire (registers the waiter): {meter.take()}")
    await store.aclose()
    await admin.aclose()


async def child(url: str, name: str, seed: int) -> None:
    """One contending process: ROUNDS grants, printing latencies and requests as one JSON line."""
    store = open_store(url)
    await store.initialize()
    ops: Counter[str] = Counter()
    if isinstance(store, DynamoDBStore):
        store.client_events.register("after-call.dynamodb", lambda model, **_: ops.update([model.name]))
    flow = flow_store(store)
    rng = random.Random(seed)
    latencies = []
    for i in range(ROUNDS):
        holder = f"{name}-{i}"
        started = time.perf_counter()
        tries = 0
        while True:
            got = await flow.acquire_resource("shared", holder, 1, priority=2, lease_seconds=30.0, waited=tries > 0)
            if isinstance(got, Grant):
                break
            await anyio.sleep(backoff(tries, 2, got.retry_at, store.clock.now(), rng))
            tries += 1
        latencies.append(time.perf_counter() - started)
        await anyio.sleep(HOLD_S)
        await flow.release_resource(got)
    await store.aclose()
    print(json.dumps({"latencies": latencies, "requests": sum(ops.values())}))


def contend(label: str, url: str) -> None:
    async def prepare() -> None:
        store = open_store(url)
        await store.initialize()
        await flow_store(store).set_limit(ResourceLimit("shared", 3))
        await store.aclose()

    anyio.run(prepare)
    procs = [subprocess.Popen([sys.executable, __file__, "child", url, f"p{n}", str(n)], stdout=subprocess.PIPE,
                              text=True) for n in range(4)]
    results = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    lat = sorted(x * 1000 for r in results for x in r["latencies"])
    grants = len(lat)
    reqs = sum(r["requests"] for r in results)
    per = f", {reqs / grants:.1f} requests per grant+release" if reqs else ""
    print(f"  {label}: {grants} grants, acquire latency p50 {statistics.median(lat):.1f} ms, "
          f"p95 {lat[int(0.95 * (grants - 1))]:.1f} ms, max {lat[-1]:.1f} ms{per}")


def main() -> None:
    server = MotoServer.start()
    try:
        anyio.run(requests, server.endpoint)
        print("4 processes contending for a limit of 3 (hold 5 ms each, 40 grants per process):")
        with tempfile.TemporaryDirectory() as tmp:
            contend("sqlite", f"sqlite://{Path(tmp) / 'bench.db'}")
        contend("moto server", f"dynamodb://bench-{uuid.uuid4().hex[:8]}?region=us-east-1&endpoint="
                f"{server.endpoint}")
    finally:
        server.stop()


if __name__ == "__main__":
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")  # the moto server accepts any keys
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        anyio.run(child, sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
