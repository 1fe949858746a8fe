"""The pure decisions of child sessions and cached outputs (`rules/children.py`, `rules/cache.py`)."""

from __future__ import annotations

import pytest

from orchestrator.agents import CachePolicy
from orchestrator.errors import ValidationError
from orchestrator.store import SessionStatus, TaskStatus
from orchestrator.store.records import Edge, check_id
from orchestrator.store.rules.cache import cache_key, readable
from orchestrator.store.rules.children import (
    MapProgress,
    MapResult,
    check_map_args,
    child_output,
    child_session_id,
    map_results,
)


def test_child_ids_are_deterministic_and_name_parent_task_call_and_index() -> None:
    assert child_session_id("s1", "fan", 0, 7) == "s1.fan.7"
    assert child_session_id("s1", "fan", 2, 7) == "s1.fan.m2.7"


def test_a_child_id_that_would_be_too_long_is_a_valid_digest_still_unique_per_index() -> None:
    a, b = child_session_id("p" * 120, "t" * 20, 0, 1), child_session_id("p" * 120, "t" * 20, 0, 2)
    assert a != b and check_id("session", a) == a and len(a) <= 128


def test_never_more_than_concurrency_children_are_in_flight() -> None:
    p = MapProgress(10)
    assert p.to_create(3) == range(0, 3)
    p.mark_created(3)
    assert p.to_create(3) == range(3, 3)
    p.mark_ended([1])
    assert p.to_create(3) == range(3, 4) and p.watermark == 0 and p.in_flight() == [0, 2]


def test_the_watermark_passes_every_child_below_it_that_ended_and_the_map_is_done_at_the_end() -> None:
    p = MapProgress(4)
    p.mark_created(4)
    p.mark_ended([1, 3])
    assert (p.watermark, p.ended) == (0, {1, 3})
    p.mark_ended([0, 2])
    assert (p.watermark, p.ended, p.done) == (4, set(), True)


def test_progress_survives_its_json_and_refuses_another_item_count() -> None:
    p = MapProgress(5, created=3, watermark=1, ended={2}, redriven=1)
    again = MapProgress.from_json(p.to_json(), 5, where="map 0")
    assert again.to_json() == p.to_json()
    with pytest.raises(ValidationError, match="started with 5 items and is now called with 6"):
        MapProgress.from_json(p.to_json(), 6, where="map 0")


def test_bad_map_arguments_are_refused_before_anything_is_created() -> None:
    for items, concurrency, policy in (("abc", None, "collect"), ([1], 0, "collect"), ([1], None, "maybe")):
        with pytest.raises(ValidationError):
            check_map_args(items, concurrency, policy, where="map 0")


def test_a_childs_result_is_its_only_sinks_output_or_every_sinks() -> None:
    statuses = {"a": TaskStatus.COMPLETED, "b": TaskStatus.COMPLETED, "c": TaskStatus.COMPLETED}
    outputs = {"a": 1, "b": 2, "c": 3}
    assert child_output(outputs, statuses, [Edge("b", "a"), Edge("c", "b")]) == 3
    assert child_output(outputs, statuses, [Edge("b", "a")]) == {"b": 2, "c": 3}


def test_results_come_back_in_item_order_and_collect_says_ok_or_error() -> None:
    done = [MapResult(1, "p.t.1", SessionStatus.FAILED, error="boom"), MapResult(0, "p.t.0", SessionStatus.COMPLETED, 5)]
    assert map_results(done, "collect") == [
        {"ok": True, "output": 5, "session": "p.t.0"},
        {"ok": False, "error": "boom", "status": "FAILED", "session": "p.t.1"},
    ]
    assert map_results(done, "fail_fast") == [5, None]


def test_a_cache_key_depends_on_agent_version_input_and_deps_only() -> None:
    policy = CachePolicy()
    key = cache_key("a", policy, {"x": 1, "y": 2}, {"d": 3})
    assert key == cache_key("a", CachePolicy(ttl="1d"), {"y": 2, "x": 1}, {"d": 3})
    assert len({key, cache_key("b", policy, {"x": 1, "y": 2}, {"d": 3}),
                cache_key("a", CachePolicy(version="2"), {"x": 1, "y": 2}, {"d": 3}),
                cache_key("a", policy, {"x": 1, "y": 2}, {"d": 4})}) == 4
    by_x = CachePolicy(key=lambda i: i["x"])
    assert cache_key("a", by_x, {"x": 1, "y": 2}, {"d": 3}) == cache_key("a", by_x, {"x": 1, "y": 9}, {})


def test_an_entry_is_readable_strictly_before_its_expiry() -> None:
    assert readable(100.0, 99.9) and not readable(100.0, 100.0)


def test_a_cache_policy_takes_durations_and_refuses_nonsense() -> None:
    assert CachePolicy(ttl="7d").ttl_seconds == 7 * 86400 and CachePolicy(ttl=90).ttl_seconds == 90
    for ttl in ("soon", 0, -1, True):
        with pytest.raises(ValueError, match="ttl"):
            CachePolicy(ttl=ttl)  # type: ignore[arg-type]
