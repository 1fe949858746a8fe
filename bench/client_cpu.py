"""Client CPU per DynamoDB chain step next to a bare PynamoDB put: same server, same run.

A chain step is `write_tasks(COMPLETE t<i>, START t<i+1>)`: one TransactWriteItems with
transactions on, two UpdateItems off. The floor is a bare PynamoDB `Model.save()` of a
task-sized item, with PynamoDB's defaults. Both sides talk to `instant_dynamodb.py`, a
stand-in that answers every request with a success after a set latency. Three measures:

1. CPU time (this process's `time.process_time()`; the server is another process) at
   three latencies: none (the client's own work only), DynamoDB-like (5 ms for a
   single-item write, 10 ms for a transaction) and moto-like (2 ms, 40 ms). A round is
   200 pairs of one step and one put, each op's CPU measured alone, so both sides meet
   the same machine op by op; the median of the rounds' ratios is printed, with their
   range.
2. Instructions, counted by valgrind's cachegrind when it is installed: runs of 10 and of
   110 steps (or puts) in a fresh process, the difference divided by 100. The count is
   the same on a busy or an idle machine; kernel work (syscalls, thread wake-ups) is not
   in it.
3. Calibration: the CPU of the same bare put, back to back, at server latencies of 0, 5
   and 30 ms. On this kind of machine a request's client CPU grows with how long its
   thread waited; so a run of steps then a run of puts measures how much longer the
   step waits (a transaction waits 10-40 ms, a put 2-5 ms) as much as the client's work,
   and the two are measured in pairs instead.

Run (about three minutes): `.venv/bin/python bench/client_cpu.py [--rounds 7]`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from pynamodb.attributes import MapAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.models import Model
from store_requests import free_port

from orchestrator.store import open_store
from orchestrator.store.dynamodb import DynamoDBStore
from orchestrator.store.records import Lease, TaskWrite, TaskWriteKind
from orchestrator.testing._servers import stop_server

STEPS = 200
#: Latencies of the stand-in, (single-item write, transaction) in ms: DynamoDB-like, and
#: the moto server's (a put about 2 ms, a transaction about 40 ms: it copies its tables).
DYNAMODB_LIKE_MS = (5.0, 10.0)
MOTO_LIKE_MS = (2.0, 40.0)
_COUNTS = (10, 110)


def url(endpoint: str, table: str, tx: bool) -> str:
    return f"dynamodb://{table}?region=us-east-1&endpoint={endpoint}&transactions={int(tx)}"


def bare_model(table: str, endpoint: str) -> type[Model]:
    """A task-sized PynamoDB model with PynamoDB's defaults: the floor a step is compared with."""

    class Bare(Model):
        class Meta:
            table_name = table
            region = "us-east-1"
            host = endpoint

        PK = UnicodeAttribute(hash_key=True)
        SK = UnicodeAttribute(range_key=True)
        agent = UnicodeAttribute()
        status = UnicodeAttribute()
        fence = NumberAttribute()
        attempt = NumberAttribute()
        output = UnicodeAttribute()
        updated_at = NumberAttribute()
        hist: MapAttribute[str, Any] = MapAttribute(default=dict)  # type: ignore[no-untyped-call]

    return Bare


def bare_put(model: type[Model], i: int) -> None:
    """One bare put: `Model.save()` of task t<i>, as PynamoDB does it."""
    model(PK="SESSION#bare", SK=f"TASK#t{i}", agent="noop", status="COMPLETED", fence=1, attempt=1,
          output='{"n": 1}', updated_at=time.time()).save()


def bare_puts(model: type[Model], n: int = STEPS) -> tuple[float, float]:
    """(CPU ms, wall ms) per `Model.save()` of n items, in the calling thread."""
    began, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        bare_put(model, i)
    return (time.process_time() - began) / n * 1000, (time.perf_counter() - wall) / n * 1000


async def steps(store: DynamoDBStore, lease: Lease, n: int = STEPS) -> tuple[float, float]:
    """(client CPU ms, wall ms) per chain step: complete t<i> and start t<i+1>."""
    began, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.COMPLETE, f"t{i}", 1, output={"n": i}),
                                        TaskWrite(TaskWriteKind.START, f"t{i + 1}", 1)])
    return (time.process_time() - began) / n * 1000, (time.perf_counter() - wall) / n * 1000


def start_stand_in(single_ms: float = 0.0, transaction_ms: float = 0.0) -> tuple[subprocess.Popen[bytes], str]:
    """`instant_dynamodb.py` on a free 127.0.0.1 port; stop it with `stop_server`."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("instant_dynamodb.py")), str(port),
                             str(single_ms), str(transaction_ms)])
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"instant_dynamodb.py on port {port} did not start") from None
            time.sleep(0.05)


def stand_in_store(endpoint: str, tx: bool) -> tuple[DynamoDBStore, Lease]:
    """A store on the stand-in that writes without reading first (there is no table to read)."""
    store = open_store(url(endpoint, "instant", tx))
    assert isinstance(store, DynamoDBStore)
    store.remember("s1", [f"t{i}" for i in range(max(STEPS, *_COUNTS) + 1)])
    return store, Lease("s1", "w", 1, time.time() + 3600)


async def pairs(store: DynamoDBStore, lease: Lease, model: type[Model], n: int = STEPS) -> tuple[float, ...]:
    """(CPU ms per step, per put, wall ms per step, per put) over n pairs of one chain step
    (t<i> completed, t<i+1> started) then one bare put, each op measured alone (the put
    inside its thread, so the hop that carries it there is not counted): both sides meet
    the same machine, op by op, whatever else it does meanwhile."""

    def put(i: int) -> tuple[float, float]:
        began, wall = time.process_time(), time.perf_counter()
        bare_put(model, i)
        return time.process_time() - began, time.perf_counter() - wall

    step_s = put_s = step_wall = put_wall = 0.0
    for i in range(n):
        began, wall = time.process_time(), time.perf_counter()
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.COMPLETE, f"t{i}", 1, output={"n": i}),
                                        TaskWrite(TaskWriteKind.START, f"t{i + 1}", 1)])
        step_s += time.process_time() - began
        step_wall += time.perf_counter() - wall
        cpu, elapsed = await anyio.to_thread.run_sync(put, i)
        put_s += cpu
        put_wall += elapsed
    return tuple(x / n * 1000 for x in (step_s, put_s, step_wall, put_wall))


async def paired(endpoint: str, tx: bool, rounds: int) -> tuple[float, float, list[float]]:
    """Against the stand-in: (median CPU ms per step, median per put, each round's ratio);
    a round is `pairs()` of STEPS."""
    store, lease = stand_in_store(endpoint, tx)
    model = bare_model("instant", endpoint)
    step_ms: list[float] = []
    put_ms: list[float] = []
    try:
        await pairs(store, lease, model, 10)  # warm both paths: imports, first connections, caches
        for _ in range(rounds):
            step, put = (await pairs(store, lease, model))[:2]
            step_ms.append(step)
            put_ms.append(put)
    finally:
        await store.aclose()
    ratios = [s / p for s, p in zip(step_ms, put_ms, strict=True)]
    return statistics.median(step_ms), statistics.median(put_ms), ratios


def instructions(endpoint: str) -> dict[str, float] | None:
    """Instructions per put, per step (transactions on) and per step (off), in millions;
    None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    out: dict[str, float] = {}
    for mode in ("put", "tx", "notx"):
        counts = []
        for n in _COUNTS:
            run = subprocess.run(
                [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                 sys.executable, __file__, "--count", mode, str(n), endpoint],
                capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONHASHSEED": "0"}, check=True)
            found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
            if found is None:
                raise RuntimeError(f"no instruction count in valgrind's output: {run.stderr[-2000:]}")
            counts.append(int(found.group(1).replace(",", "")))
        out[mode] = (counts[1] - counts[0]) / (_COUNTS[1] - _COUNTS[0]) / 1e6
    return out


async def _count(mode: str, n: int, endpoint: str) -> None:
    """The body of one valgrind run: warm up, then n puts or n steps (nothing printed)."""
    store, lease = stand_in_store(endpoint, mode == "tx")
    model = bare_model("instant", endpoint)
    try:
        await steps(store, lease, 5)
        await anyio.to_thread.run_sync(bare_puts, model, 5)
        if mode == "put":
            await anyio.to_thread.run_sync(bare_puts, model, n)
        else:
            await steps(store, lease, n)
    finally:
        await store.aclose()


async def calibrate(latencies_ms: tuple[float, ...] = (0.0, 5.0, 30.0), rounds: int = 3) -> list[float]:
    """CPU ms of one bare put at each server latency (the least of `rounds`)."""
    out = []
    for ms in latencies_ms:
        proc, endpoint = start_stand_in(ms, ms)
        try:
            model = bare_model("instant", endpoint)
            await anyio.to_thread.run_sync(bare_puts, model, 10)
            n = STEPS if ms < 10 else STEPS // 4
            out.append(min([(await anyio.to_thread.run_sync(bare_puts, model, n))[0] for _ in range(rounds)]))
        finally:
            stop_server(proc)
    return out


async def report(rounds: int) -> None:
    """Print the three measures (see the module docstring)."""
    print(f"client CPU per chain step next to a bare PynamoDB put, same stand-in server, {rounds} rounds of "
          f"{STEPS} pairs (one step, one put); load average {os.getloadavg()[0]:.1f}:")
    for label, (single, transaction) in (("answers at once", (0.0, 0.0)),
                                         ("DynamoDB-like latency, 5 ms a write, 10 ms a transaction",
                                          DYNAMODB_LIKE_MS),
                                         ("moto-like latency, 2 ms a write, 40 ms a transaction", MOTO_LIKE_MS)):
        proc, endpoint = start_stand_in(single, transaction)
        try:
            print(f"  server {label}:")
            for tx in (True, False):
                step, put, ratios = await paired(endpoint, tx, rounds)
                what = "1 TransactWriteItems" if tx else "2 UpdateItems"
                print(f"    transactions {'on ' if tx else 'off'} ({what}): {step:.2f} ms/step, bare put {put:.2f} ms: "
                      f"{statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}x)")
        finally:
            stop_server(proc)
    proc, endpoint = start_stand_in()
    try:
        counted = instructions(endpoint)
    finally:
        stop_server(proc)
    if counted is None:
        print("client instructions: valgrind is not installed (apt-get install valgrind)")
    else:
        put = counted["put"]
        print(f"client instructions (valgrind cachegrind, user space): bare put {put:.2f}M; step with transactions "
              f"on {counted['tx']:.2f}M ({counted['tx'] / put:.2f}x), off {counted['notx']:.2f}M "
              f"({counted['notx'] / put:.2f}x)")
    cpu = await calibrate()
    print("calibration, CPU of one bare put by server latency: "
          + ", ".join(f"{ms:g} ms: {c:.2f} ms" for ms, c in zip((0, 5, 30), cpu, strict=True)))


def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    if len(sys.argv) == 5 and sys.argv[1] == "--count":
        anyio.run(_count, sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds of each side")
    anyio.run(report, parser.parse_args().rounds)


if __name__ == "__main__":
    main()
