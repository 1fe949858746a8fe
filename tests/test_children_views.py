"""The command line and the dashboard around child sessions: parent <-> children links, cancel cascades, --no-cache.

Run as a user would: the installed `orchestrator` script on a SQLite file, from the demo
apps' directory (`map_app`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
from cli_helpers import APPS, cli

from orchestrator.scheduler import submit
from orchestrator.store import SessionStatus, open_store

_WORKER = ("worker", "--app", "map_app:fanout", "--app", "map_app:square", "--poll-interval", "0.1s", "--quiet")


def _submit(url: str, spec: dict[str, object], sid: str) -> None:
    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    import map_app

    async def go() -> None:
        async with open_store(url) as store:
            await submit(map_app.fanout, spec, store=store, session_id=sid)

    anyio.run(go)


def test_status_links_a_parent_to_its_children_and_a_child_to_its_parent(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 's.db'}"
    _submit(url, {"n": 3, "poll": 0.1}, "parent")
    assert cli(*_WORKER, "--idle-exit", "2s", store=url, tmp=tmp_path).code == 0

    parent = cli("status", "parent", "--json", store=url, tmp=tmp_path).json()
    assert parent["children"]["fan"] == {"sessions": ["parent.fan.0", "parent.fan.1", "parent.fan.2"],
                                         "by_status": {"COMPLETED": 3}}
    child = cli("status", "parent.fan.1", "--json", store=url, tmp=tmp_path).json()
    assert child["parent"] == {"session": "parent", "task": "fan", "index": 1}
    shown = cli("status", "parent", store=url, tmp=tmp_path).out
    assert "3 child session(s)" in shown
    graph = cli("graph", "parent", store=url, tmp=tmp_path).out
    assert "%% task fan -> 3 child session(s): parent.fan.0 .. parent.fan.2" in graph


def test_cancelling_a_parent_cancels_its_unfinished_children(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 's.db'}"
    _submit(url, {"n": 3, "poll": 30}, "parent")
    # The worker claims only the parent: its first look creates the children and it waits.
    assert cli("worker", "--app", "map_app:fanout", "--max-sessions", "1", "--quiet", store=url,
               tmp=tmp_path).code == 0
    done = cli("cancel", "parent", store=url, tmp=tmp_path)
    assert done.code == 0 and "cancelled 3 child session(s) of parent" in done.out

    async def statuses() -> set[SessionStatus]:
        async with open_store(url) as store:
            return {(await store.get_session(f"parent.fan.{i}")).status for i in range(3)}

    assert anyio.run(statuses) == {SessionStatus.CANCELLED}


def test_no_cache_is_accepted_by_run_resume_and_worker(tmp_path: Path) -> None:
    for command in (["run", "--help"], ["resume", "--help"], ["worker", "--help"]):
        shown = cli(*command, store=None, tmp=tmp_path)
        assert shown.code == 0 and "--no-cache" in shown.out


def test_the_dashboard_links_a_parent_to_its_children_and_back(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from orchestrator.store import StoreConfig
    from orchestrator.ui import Settings, create_app

    url = f"sqlite://{tmp_path / 's.db'}"
    _submit(url, {"n": 2, "poll": 0.1}, "parent")
    assert cli(*_WORKER, "--idle-exit", "2s", store=url, tmp=tmp_path).code == 0
    settings = Settings(store=StoreConfig.from_url(url), store_url=url, csrf_token="csrf-1")
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8765") as client:
        parent = client.get("/sessions/parent").text
        child = client.get("/sessions/parent.fan.1").text
    assert '<a href="/sessions/parent.fan.0">' in parent and '<a href="/sessions/parent.fan.1">' in parent
    assert '<dt>parent</dt><dd><a href="/sessions/parent">parent</a> (task fan, item 1)</dd>' in child
