"""DynamoDB requests and consumed capacity per store operation, with transactions on and off.

Starts a moto server on a free 127.0.0.1 port (stopped at exit), opens the store by URL,
and counts requests (by operation name) and ConsumedCapacity from botocore's
`after-call` events on `DynamoDBStore.client_events`. Operations a person makes (signal,
needs-human) include the event they record (docs/design.md, "The event history"). Run:

    .venv/bin/python bench/store_requests.py

moto reports ConsumedCapacity for some operations only; "n/a" marks none reported.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from typing import Any

import anyio

from orchestrator.store import open_store
from orchestrator.store.dynamodb import DynamoDBStore
from orchestrator.store.records import NewSession, NewTask, SessionStatus, TaskWrite, TaskWriteKind

TASKS = 200


class Meter:
    """Requests by operation and summed ConsumedCapacity.CapacityUnits, from after-call events."""

    def __init__(self, store: DynamoDBStore) -> None:
        self.ops: Counter[str] = Counter()
        self.capacity: float | None = None
        store.client_events.register("after-call.dynamodb", self._after)

    def _after(self, model: Any, parsed: Any = None, **_: Any) -> None:
        self.ops[model.name] += 1
        consumed = (parsed or {}).get("ConsumedCapacity")
        for c in consumed if isinstance(consumed, list) else [consumed] if consumed else []:
            self.capacity = (self.capacity or 0.0) + float(c.get("CapacityUnits", 0.0))

    def take(self) -> tuple[str, str]:
        ops = ", ".join(f"{name}×{n}" for name, n in sorted(self.ops.items()))
        cap = "n/a" if self.capacity is None else f"{self.capacity:g}"
        self.ops.clear()
        self.capacity = None
        return ops, cap


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return proc, endpoint
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"moto server on {endpoint} did not start") from None
            time.sleep(0.05)


async def measure(endpoint: str, transactions: bool) -> list[tuple[str, str, str]]:
    url = f"dynamodb://bench-{'tx' if transactions else 'notx'}?region=us-east-1&endpoint={endpoint}" \
          f"&transactions={int(transactions)}"
    store = open_store(url)
    assert isinstance(store, DynamoDBStore)
    rows: list[tuple[str, str, str]] = []
    async with store:
        # a failed session to list
        await store.create_session(NewSession("failed-1", "bench"), [NewTask("a", "echo")])
        lease = await store.claim_session("failed-1", "w0", 30)
        await store.finish_session(lease, SessionStatus.FAILED, "boom")
        meter = Meter(store)
        tasks = [NewTask(f"t{i}", "echo", input={"i": i}, depends_on=(f"t{i - 1}",) if i else ())
                 for i in range(TASKS)]
        await store.create_session(NewSession("s1", "bench"), tasks)
        rows.append((f"create {TASKS}-task session", *meter.take()))
        seen = next(s for s in (await store.list_sessions(SessionStatus.PENDING)).items if s.session_id == "s1")
        meter.take()
        lease = await store.claim_session("s1", "w1", 30, seen=seen)
        claim_ops = dict(meter.ops)
        rows.append(("claim a listed session (a worker's)", *meter.take()))
        assert claim_ops == {"UpdateItem": 1}, f"a claim of a listed session must be 1 UpdateItem, was {claim_ops}"
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t0", 1)])
        rows.append(("start one task", *meter.take()))
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.COMPLETE, "t0", 1, output={"ok": True})])
        rows.append(("complete one task", *meter.take()))
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t1", 1)])
        meter.take()
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.COMPLETE, "t1", 1, output=1),
                                        TaskWrite(TaskWriteKind.START, "t2", 1)])
        rows.append(("complete + start it unlocks", *meter.take()))
        await store.send_signal("s1", "t3", "go", {"ok": True})
        rows.append(("send a signal (and its event)", *meter.take()))
        snap = await store.load_session("s1")
        assert len(snap.tasks) == TASKS
        load_ops = dict(meter.ops)
        rows.append(("load the session", *meter.take()))
        assert load_ops == {"Query": 1}, f"loading a session under 1 MB must be 1 Query, was {load_ops}"
        page = await store.list_sessions(SessionStatus.FAILED, updated_before=store.clock.now() + 1)
        assert [s.session_id for s in page.items] == ["failed-1"]
        rows.append((f"list failed sessions ({store.config.status_shards} shards)", *meter.take()))
        await store.finish_session(lease, SessionStatus.FAILED, "bench")
        rows.append((f"finish: retention on {2 * TASKS - 1} items", *meter.take()))
        await store.set_needs_human("s1", "bench")
        rows.append(("set needs-human (and its event)", *meter.take()))
    return rows


async def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    proc, endpoint = start_moto()
    try:
        for transactions in (True, False):
            rows = await measure(endpoint, transactions)
            print(f"\ntransactions={'on' if transactions else 'off'} (moto server {endpoint})")
            print(f"{'operation':36} {'requests':42} {'capacity units':>14}")
            for op, reqs, cap in rows:
                print(f"{op:36} {reqs:42} {cap:>14}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    anyio.run(main)
