"""Contention, several processes and crashes: the part of the contract needing shared state.

Run it only on backends whose state several threads and processes share atomically:
SQLite on a real file, and a moto server serving one request at a time (in-process
moto is not atomic under concurrent requests and shares nothing between processes; see
`orchestrator.testing.contract`). Needs the `store` fixture (opened with a FakeClock)
and a `store_url` fixture that opens the same store elsewhere.

Contenders in threads each open their own store instance (their own connection or
client, as separate workers would); children open it by URL
(`orchestrator.testing._workers`).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from orchestrator.clock import SystemClock
from orchestrator.codec import default_codec
from orchestrator.errors import ClaimRejectedError
from orchestrator.store import Lease, NewTask, SessionStatus, Store, StoreConfig, TaskStatus, open_store
from orchestrator.testing._workers import finish_worker, spawn_worker
from orchestrator.testing.contract import LEASE, clock_of, make_session

__all__ = ["ConcurrencyContract", "open_unconditional"]

CONTENDERS = 4
ROUNDS = 3
_JOIN_S = 60.0


def open_unconditional(url: str, after_read: threading.Barrier) -> Store:
    """A store whose claims are read-then-write (`_cas_claims = False`): the negative control.

    Every contender waits at `after_read` between its read and its write, so all of
    them decide on the same stale read: without the condition, several must win.
    Knows the seams of the two built-in backends; override `open_contender` for others.
    """
    config = StoreConfig.from_url(url)
    if config.sqlite is not None:
        from orchestrator.store.sqlite import SQLiteStore

        class UnconditionalSQLiteStore(SQLiteStore):
            _cas_claims = False

            async def _run(self, op: str, fn: Callable[..., Any], *, write: bool = True,
                           session_id: str | None = None) -> Any:
                result = await super()._run(op, fn, write=write, session_id=session_id)
                if op == "claim_session" and not write:  # the read of the unsafe claim
                    await anyio.to_thread.run_sync(after_read.wait)
                return result

        return UnconditionalSQLiteStore(config.sqlite, clock=SystemClock(), codec=default_codec)
    assert config.dynamodb is not None
    from orchestrator.store.dynamodb import DynamoDBStore

    class UnconditionalDynamoDBStore(DynamoDBStore):
        _cas_claims = False

    store = UnconditionalDynamoDBStore(config.dynamodb, clock=SystemClock(), codec=default_codec)
    store.client_events.register("after-call.dynamodb.GetItem", lambda **_: after_read.wait())
    return store


def _race(open_one: Callable[[], Store], session_ids: list[str], n: int) -> list[list[Lease | None]]:
    """`n` threads, each with its own store instance, claim each session in turn at once.

    Returns, per session, what each contender got (its Lease, or None when rejected).
    """
    start = threading.Barrier(n, timeout=_JOIN_S)
    results: list[list[Lease | None]] = [[None] * n for _ in session_ids]
    failures: list[BaseException] = []

    async def contend(i: int) -> None:
        store = open_one()
        try:
            await store.initialize()
            await store.get_session(session_ids[0])  # connected before the race
            for rnd, sid in enumerate(session_ids):
                start.wait()
                try:
                    results[rnd][i] = await store.claim_session(sid, f"worker-{i}", 60.0)
                except ClaimRejectedError:
                    results[rnd][i] = None
        finally:
            await store.aclose()

    def run(i: int) -> None:
        try:
            anyio.run(contend, i)
        except BaseException as exc:  # noqa: BLE001 - the test asserts `failures` is empty
            failures.append(exc)
            start.abort()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(_JOIN_S)
    assert not any(t.is_alive() for t in threads), f"contenders still running after {_JOIN_S}s"
    assert not failures, f"contenders failed: {failures!r}"
    return results


class ConcurrencyContract:
    """Exclusive claims under contention, multi-process metrics, crash takeover."""

    pytestmark = pytest.mark.anyio

    def open_contender(self, url: str, after_read: threading.Barrier | None = None) -> Store:
        """A fresh store instance for `url`: conditional claims, or (with `after_read`)
        the unconditional negative control."""
        if after_read is None:
            return open_store(url)
        return open_unconditional(url, after_read)

    async def test_claim_is_exclusive_across_threads(self, store: Store, store_url: str) -> None:
        sids = [f"race-{rnd}" for rnd in range(ROUNDS)]
        for sid in sids:
            await make_session(store, sid)
        rounds = await anyio.to_thread.run_sync(
            lambda: _race(lambda: self.open_contender(store_url), sids, CONTENDERS))
        for sid, results in zip(sids, rounds, strict=True):
            winners = [r for r in results if r is not None]
            assert len(winners) == 1, f"{sid}: {len(winners)} winners {winners!r}"
            s = await store.get_session(sid)
            assert (s.fence, s.lease_owner) == (1, winners[0].owner)

    async def test_negative_control_unconditional_claims_let_several_win(self, store: Store, store_url: str) -> None:
        """Proves the exclusivity test can fail: without the claim's condition it does."""
        sids = [f"unsafe-{rnd}" for rnd in range(ROUNDS)]
        for sid in sids:
            await make_session(store, sid)
        barrier = threading.Barrier(CONTENDERS, timeout=_JOIN_S)
        rounds = await anyio.to_thread.run_sync(
            lambda: _race(lambda: self.open_contender(store_url, barrier), sids, CONTENDERS))
        assert max(sum(r is not None for r in results) for results in rounds) > 1, rounds

    @pytest.mark.slow
    async def test_claim_is_exclusive_across_processes(self, store: Store, store_url: str, tmp_path: Path) -> None:
        await make_session(store, "proc-race")
        go = tmp_path / "go"
        workers = [spawn_worker("claim", store_url, "proc-race", f"proc-{i}", str(go)) for i in range(3)]
        try:
            go.write_text("go")
            results = [await anyio.to_thread.run_sync(finish_worker, w) for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
        winners = [r for r in results if r["won"]]
        assert len(winners) == 1, results
        assert all("fence 1" in r["error"] for r in results if not r["won"])
        assert (await store.get_session("proc-race")).fence == winners[0]["fence"] == 1

    @pytest.mark.slow
    async def test_metrics_are_summed_across_processes(self, store: Store, store_url: str, tmp_path: Path) -> None:
        go = tmp_path / "go"
        n, rounds = 3, 5
        # Children run on the real clock: a day in the past would be purged as expired.
        day = time.strftime("%Y-%m-%d", time.gmtime())
        workers = [spawn_worker("metrics", store_url, f"writer-{i}", day, str(rounds), str(go))
                   for i in range(n)]
        try:
            go.write_text("go")
            for w in workers:
                assert (await anyio.to_thread.run_sync(finish_worker, w))["ok"] is True
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
        [m] = await store.read_metrics(day, name="task", agent="worker-agent")
        assert (m.count, m.errors, m.sum_ms, m.min_ms, m.max_ms) == (
            n * rounds, n, n * 10.0 * rounds, 10.0, 10.0), m
        assert m.buckets[4] == n * rounds and sum(m.buckets) == n * rounds

    @pytest.mark.slow
    async def test_session_of_a_killed_owner_is_taken_over_after_its_lease(
        self, store: Store, store_url: str, tmp_path: Path
    ) -> None:
        tasks = [NewTask("t1", "a"), NewTask("t2", "b", depends_on=("t1",))]
        await make_session(store, "crash", tasks=tasks)
        ready = tmp_path / "ready"
        worker = spawn_worker("hold", store_url, "crash", "doomed", str(ready))
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                assert worker.poll() is None, worker.communicate()[1]
                assert time.monotonic() < deadline, "the child never claimed the session"
                await anyio.sleep(0.02)
            assert json.loads(ready.read_text()) == {"fence": 1}
            os.kill(worker.pid, signal.SIGKILL)
            worker.communicate(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate(timeout=30)
        with pytest.raises(ClaimRejectedError, match="doomed"):
            await store.claim_session("crash", "rescuer", LEASE)
        clock = clock_of(store)
        clock.set(max(clock.now(), time.time() + 31))  # the child leased on the real clock
        lease = await store.claim_session("crash", "rescuer", LEASE)
        snap = await store.load_session("crash")
        assert (lease.fence, snap.session.status) == (2, SessionStatus.RUNNING)
        assert (snap.task("t1").status, snap.task("t1").output) == (TaskStatus.COMPLETED, {"by": "doomed"})
        assert (snap.task("t2").status, snap.task("t2").fence) == (TaskStatus.RUNNING, 1)
