"""Several CLI processes sharing one store: every session is taken by exactly one of them.

Asserted from stored state and from the side-effect log each agent execution appends
(`DEMO_MARK_DIR`), never from printed text. SQLite is shared safely by processes on one
machine; the moto-server variant serves one request at a time (moto is not atomic
under concurrent requests, see DESIGN.md).
"""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_helpers import APPS, executions, spawn

from orchestrator.scheduler import run, submit
from orchestrator.store import SessionSnapshot, SessionStatus, open_store

pytestmark = pytest.mark.slow

_WAIT_S = 90.0


def demo() -> Any:
    import sys

    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    return importlib.import_module("demo_app")


def _url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite://{tmp_path / 'fleet.db'}"
    endpoint = request.getfixturevalue("moto_endpoint")
    return f"dynamodb://fleet-{uuid.uuid4().hex[:10]}?region=us-east-1&endpoint={endpoint}"


async def _snapshots(url: str, ids: list[str]) -> dict[str, SessionSnapshot]:
    store = open_store(url)
    try:
        await store.initialize()
        return {sid: await store.load_session(sid) for sid in ids}
    finally:
        await store.aclose()


def _finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=_WAIT_S)
        out.append((proc.returncode, stdout, stderr))
    return out


@pytest.mark.parametrize("kind", ["sqlite", "moto-server"])
def test_four_resume_failed_sweeps_resume_each_failed_session_exactly_once(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _url(kind, tmp_path, request)
    count = 50 if kind == "sqlite" else 8
    marker = tmp_path / "fixed"
    monkeypatch.setenv("DEMO_MARK_DIR", str(tmp_path))
    flaky = demo().flaky

    async def make_failed() -> list[str]:
        store = open_store(url)
        try:
            await store.initialize()
            return [(await run(flaky, {"marker": str(marker)}, store=store, session_id=f"f-{i:03d}")).session_id
                    for i in range(count)]
        finally:
            await store.aclose()

    ids = anyio.run(make_failed)
    marker.write_text("ok")
    sweeps = [spawn("resume-failed", "--app", "demo_app:flaky", "--older-than", "0s", "--limit", "100",
                    "--concurrency", "8", "--json", store=url, tmp=tmp_path) for _ in range(4)]
    results = _finish(sweeps)
    assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]

    snaps = anyio.run(_snapshots, url, ids)
    assert {s.session.status for s in snaps.values()} == {SessionStatus.COMPLETED}
    assert {s.session.redrive_count for s in snaps.values()} == {1}
    assert {s.tasks["fragile"].attempt for s in snaps.values()} == {2}
    for sid in ids:
        runs = Counter(task for task, _, _ in executions(tmp_path, sid))
        assert runs == {"prep": 1, "fragile": 2, "after": 1}, sid
    resumed = Counter(sid for _, out, _ in results for sid in json.loads(out)["resumed"])
    assert sorted(resumed) == sorted(ids) and set(resumed.values()) == {1}


def test_two_workers_drain_submitted_sessions_without_running_one_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite://{tmp_path / 'fleet.db'}"
    small = demo().small

    async def submit_all() -> list[str]:
        store = open_store(url)
        try:
            await store.initialize()
            return [await submit(small, {"i": i}, store=store, session_id=f"w-{i:03d}") for i in range(40)]
        finally:
            await store.aclose()

    ids = anyio.run(submit_all)
    workers = [spawn("worker", "--app", "demo_app:small", "--concurrency", "4", "--idle-exit", "1s",
                     "--poll-interval", "0.1s", "--worker-id", f"w{n}", "--json", store=url, tmp=tmp_path)
               for n in range(2)]
    results = _finish(workers)
    assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]

    snaps = anyio.run(_snapshots, url, ids)
    assert {s.session.status for s in snaps.values()} == {SessionStatus.COMPLETED}
    assert {t.attempt for s in snaps.values() for t in s.tasks.values()} == {1}
    assert {s.session.fence for s in snaps.values()} == {1}
    pids_per_session = {sid: {pid for _, _, pid in executions(tmp_path, sid)} for sid in ids}
    assert all(len(pids) == 1 for pids in pids_per_session.values())
    assert all(len(executions(tmp_path, sid)) == 4 for sid in ids)
    ran = [set(json.loads(out)["results"]) for _, out, _ in results]
    assert ran[0].isdisjoint(ran[1]) and ran[0] | ran[1] == set(ids)


def _wait_for(path: Path) -> None:
    """Poll (bounded) until a child process created `path`."""

    async def poll() -> None:
        with anyio.fail_after(_WAIT_S):
            while not path.exists():
                await anyio.sleep(0.02)

    anyio.run(poll)


def test_sigterm_releases_the_session_for_another_worker(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'fleet.db'}"
    gate_pipeline = demo().gate
    started, gate = tmp_path / "started", tmp_path / "gate"

    async def submit_one() -> str:
        store = open_store(url)
        try:
            await store.initialize()
            return await submit(gate_pipeline, {"started": str(started), "gate": str(gate)}, store=store,
                                session_id="held")
        finally:
            await store.aclose()

    sid = anyio.run(submit_one)
    first = spawn("worker", "--app", "demo_app:gate", "--grace", "0s", "--poll-interval", "0.1s",
                  "--worker-id", "first", "--json", store=url, tmp=tmp_path)
    _wait_for(started)
    first.send_signal(signal.SIGTERM)
    [(code, out, err)] = _finish([first])
    assert code == 0, err
    assert json.loads(out)["released"] == [sid]
    released = anyio.run(_snapshots, url, [sid])[sid]
    assert released.session.status is SessionStatus.PENDING and released.session.lease_owner is None

    gate.write_text("open")
    second = spawn("worker", "--app", "demo_app:gate", "--idle-exit", "0.5s", "--poll-interval", "0.1s",
                   "--worker-id", "second", "--json", store=url, tmp=tmp_path)
    [(code, out, err)] = _finish([second])
    assert code == 0, err
    assert json.loads(out)["results"] == {sid: "COMPLETED"}
    done = anyio.run(_snapshots, url, [sid])[sid]
    assert done.session.status is SessionStatus.COMPLETED and done.session.fence == 2
    assert [(t, a) for t, a, _ in executions(tmp_path, sid)] == [("hold", 1), ("hold", 2), ("after", 1)]
