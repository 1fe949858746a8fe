"""Child sessions on each backend: `ctx.map`, `ctx.run_child` and `MapAgent`, run by an in-process worker.

Each test submits a parent session and lets a `Worker` (which knows the parent and the
child pipelines) drain the store; outcomes are read back from stored state.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
import pytest

from orchestrator import Worker
from orchestrator.scheduler import resume, submit
from orchestrator.scheduler.children import cancel_children, child_ids
from orchestrator.store import SessionStatus, Store
from orchestrator.store.rules.children import LINK_KEY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
import map_app

from .conftest import Backend

pytestmark = pytest.mark.anyio
_PIPELINES = [map_app.fanout, map_app.square, map_app.single, map_app.each, map_app.sync_fanout]


async def _drain(store: Store) -> None:
    await Worker(store, _PIPELINES, concurrency=8, poll_interval=0.05).run(idle_exit=1.5)


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store


async def test_a_map_returns_every_child_output_in_item_order(store: Store) -> None:
    sid = await submit(map_app.fanout, {"n": 12, "concurrency": 5}, store=store, session_id="p1")
    await _drain(store)
    snap = await store.load_session(sid)
    assert snap.session.status is SessionStatus.COMPLETED
    assert snap.tasks["fan"].output == [{"i": i, "square": i * i} for i in range(12)]


async def test_children_are_linked_to_their_parent_both_ways(store: Store) -> None:
    sid = await submit(map_app.fanout, {"n": 3}, store=store, session_id="p2")
    await _drain(store)
    snap = await store.load_session(sid)
    ids = child_ids(sid, "fan", snap.tasks["fan"].checkpoint)
    assert ids == ["p2.fan.0", "p2.fan.1", "p2.fan.2"]
    child = await store.get_session(ids[1])
    assert child.metadata[LINK_KEY] == {"session": "p2", "task": "fan", "index": 1}
    assert child.status is SessionStatus.COMPLETED
    noted = [e.data["children"] for e in (await store.read_events(sid, limit=100)).items if "children" in e.data]
    assert noted[0]["created"] == 3 and noted[-1] == {"call": 0, "created": 3, "ended": 3, "total": 3}


async def test_run_child_returns_the_child_pipelines_output(store: Store) -> None:
    sid = await submit(map_app.single, {"i": 9}, store=store, session_id="p3")
    await _drain(store)
    assert (await store.load_session(sid)).tasks["one"].output == {"i": 9, "square": 81}


async def test_a_map_task_in_a_pipeline_definition_maps_over_its_dependencys_list(store: Store) -> None:
    sid = await submit(map_app.each, {"n": 4}, store=store, session_id="p4")
    await _drain(store)
    assert (await store.load_session(sid)).tasks["squares"].output == [
        {"i": i, "square": i * i} for i in range(4)]


async def test_fail_fast_fails_the_parent_task_on_a_failed_child(store: Store) -> None:
    sid = await submit(map_app.fanout, {"n": 4, "fail": [2]}, store=store, session_id="p5")
    await _drain(store)
    snap = await store.load_session(sid)
    assert snap.session.status is SessionStatus.FAILED
    error = snap.tasks["fan"].last_error
    assert error is not None and "p5.fan.2" in error.message


async def test_collect_returns_per_item_results_and_errors(store: Store) -> None:
    sid = await submit(map_app.fanout, {"n": 3, "fail": [1], "policy": "collect"}, store=store,
                       session_id="p6")
    await _drain(store)
    out = (await store.load_session(sid)).tasks["fan"].output
    assert [r["ok"] for r in out] == [True, False, True]
    assert out[0]["output"] == {"i": 0, "square": 0} and out[1]["session"] == "p6.fan.1"


async def test_cancelling_the_parent_cancels_its_unfinished_children(store: Store) -> None:
    sid = await submit(map_app.fanout, {"n": 3}, store=store, session_id="p7")
    # The parent's first look creates the children; nothing runs them yet.
    await Worker(store, [map_app.fanout], concurrency=1, poll_interval=0.05).run(max_sessions=1)
    await store.request_cancel(sid, "no longer needed")
    cancelled = await cancel_children(store, sid, "no longer needed")
    assert sorted(cancelled) == ["p7.fan.0", "p7.fan.1", "p7.fan.2"]
    for cid in cancelled:
        assert (await store.get_session(cid)).status is SessionStatus.CANCELLED


async def test_redriving_the_parent_redrives_its_failed_children_and_reruns_no_completed_one(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_MARK_DIR", str(tmp_path))
    until = tmp_path / "fixed"
    sid = await submit(map_app.fanout, {"n": 4, "fail": [2], "until": str(until)}, store=store, session_id="p8")
    await _drain(store)
    assert (await store.get_session(sid)).status is SessionStatus.FAILED
    until.write_text("now it works")
    result = await resume(map_app.fanout, sid, store=store)
    assert result.status is SessionStatus.COMPLETED
    assert result.outputs["fan"] == [{"i": i, "square": i * i} for i in range(4)]
    runs = Counter(line.split()[0] for line in (tmp_path / "children.log").read_text().splitlines())
    assert runs == {"p8.fan.0": 1, "p8.fan.1": 1, "p8.fan.2": 2, "p8.fan.3": 1}
    assert (await store.get_session("p8.fan.2")).redrive_count == 1


async def test_a_sync_agent_maps_through_its_blocking_context(store: Store) -> None:
    sid = await submit(map_app.sync_fanout, None, store=store, session_id="p9")
    await _drain(store)
    assert (await store.load_session(sid)).tasks["fan"].output == [{"i": i, "square": i * i} for i in range(3)]


async def test_never_more_than_concurrency_children_are_in_flight_at_any_look(store: Store) -> None:
    sid = await submit(map_app.fanout, {"n": 7, "concurrency": 2}, store=store, session_id="p10")
    await _drain(store)
    looks = [e.data["children"] for e in (await store.read_events(sid, limit=200)).items if "children" in e.data]
    assert looks and all(look["created"] - look["ended"] <= 2 for look in looks)
    assert looks[-1] == {"call": 0, "created": 7, "ended": 7, "total": 7}
