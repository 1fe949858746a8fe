"""A map drained by worker processes: every child runs once, results in item order.

The parent and its children are ordinary sessions in one store; `orchestrator worker`
processes (each knowing both pipelines) claim whichever is due. Asserted from stored
state and from the line each child execution appends (`DEMO_MARK_DIR/children.log`).
SQLite is shared safely by processes on one machine; the moto server serves one request
at a time (moto is not atomic under concurrent requests, see DESIGN.md). Speed is the
benchmark's business (bench/children.py), not these tests'.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import anyio
import pytest
from cli_helpers import APPS, spawn

from orchestrator.scheduler import submit
from orchestrator.store import SessionSnapshot, SessionStatus, open_store

pytestmark = pytest.mark.slow

_WAIT_S = 240.0
_ITEMS = 200


def _url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite://{tmp_path / 'children.db'}"
    endpoint = request.getfixturevalue("moto_endpoint")
    return f"dynamodb://map-{uuid.uuid4().hex[:10]}?region=us-east-1&endpoint={endpoint}"


def _submit(url: str, spec: dict[str, object], sid: str) -> None:
    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    import map_app

    async def go() -> None:
        store = open_store(url)
        try:
            await store.initialize()
            await submit(map_app.fanout, spec, store=store, session_id=sid)
        finally:
            await store.aclose()

    anyio.run(go)


def _load(url: str, ids: list[str]) -> dict[str, SessionSnapshot]:
    async def go() -> dict[str, SessionSnapshot]:
        store = open_store(url)
        try:
            return {sid: await store.load_session(sid) for sid in ids}
        finally:
            await store.aclose()

    return anyio.run(go)


def _workers(n: int, url: str, tmp_path: Path, *extra: str) -> list[subprocess.Popen[str]]:
    # On the one-request-at-a-time moto server, every worker's polling queues behind the
    # others' writes: poll less often there.
    poll = "0.1s" if url.startswith("sqlite") else "0.5s"
    return [spawn("worker", "--app", "map_app:fanout", "--app", "map_app:square", "--concurrency", "4",
                  "--idle-exit", "4s", "--poll-interval", poll, "--worker-id", f"w{k}", "--quiet", *extra,
                  store=url, tmp=tmp_path) for k in range(n)]


def _runs(tmp_path: Path) -> Counter[str]:
    log = tmp_path / "children.log"
    return Counter(line.split()[0] for line in log.read_text().splitlines()) if log.exists() else Counter()


@pytest.mark.timeout(400)
@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("kind", ["sqlite", "moto-server"])
def test_a_map_drained_by_worker_processes_runs_every_item_once_in_order(
    kind: str, workers: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """200 items on SQLite; 60 on the moto server, which answers one request at a time (the
    CI budget: bench/children.py drains 200 there)."""
    items = _ITEMS if kind == "sqlite" else 60
    url = _url(kind, tmp_path, request)
    _submit(url, {"n": items, "sleep": 0.2, "concurrency": 64, "poll": 0.2}, "parent")
    procs = _workers(workers, url, tmp_path)
    for proc in procs:
        _, err = proc.communicate(timeout=_WAIT_S)
        assert proc.returncode == 0, err

    children = [f"parent.fan.{i}" for i in range(items)]
    snaps = _load(url, ["parent", *children])
    assert snaps["parent"].session.status is SessionStatus.COMPLETED
    assert snaps["parent"].tasks["fan"].output == [{"i": i, "square": i * i} for i in range(items)]
    assert {snaps[c].session.status for c in children} == {SessionStatus.COMPLETED}
    assert _runs(tmp_path) == Counter(children)  # every item ran, and once


@pytest.mark.timeout(400)
@pytest.mark.parametrize("kind", ["sqlite", "moto-server"])
def test_sigkill_of_parent_and_child_workers_loses_no_child_and_creates_none_twice(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _url(kind, tmp_path, request)
    items = 60
    _submit(url, {"n": items, "sleep": 0.2, "concurrency": 16, "poll": 0.2}, "parent")
    # A short lease so the killed workers' sessions are taken over soon; on the moto server a
    # renewal queues behind every other request, so its lease must be longer.
    lease: tuple[str, ...] = ("--lease", "2s" if kind == "sqlite" else "10s")
    # A survivor must outwait the killed worker's lease (it may hold the parent) before it
    # may call itself idle and exit.
    lease += ("--idle-exit", "4s" if kind == "sqlite" else "15s")
    first = _workers(2, url, tmp_path, *lease)

    async def until_runs(count: int) -> None:
        with anyio.fail_after(_WAIT_S):
            while sum(_runs(tmp_path).values()) < count:
                await anyio.sleep(0.02)

    anyio.run(until_runs, 10)
    first[0].send_signal(signal.SIGKILL)  # holds children, perhaps the parent
    anyio.run(until_runs, 30)
    first[1].send_signal(signal.SIGKILL)
    for proc in first:
        proc.communicate(timeout=30)
    for proc in _workers(2, url, tmp_path, *lease):
        _, err = proc.communicate(timeout=_WAIT_S)
        assert proc.returncode == 0, err

    children = [f"parent.fan.{i}" for i in range(items)]
    snaps = _load(url, ["parent", *children])
    assert snaps["parent"].session.status is SessionStatus.COMPLETED
    assert snaps["parent"].tasks["fan"].output == [{"i": i, "square": i * i} for i in range(items)]
    for c in children:  # each child was created once: one session, completed once, by fence line
        assert snaps[c].session.status is SessionStatus.COMPLETED
        assert snaps[c].tasks["square"].status.value == "COMPLETED"
    assert set(_runs(tmp_path)) == set(children)
