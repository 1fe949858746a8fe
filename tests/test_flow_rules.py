"""The flow-control rulebook as plain functions: resource decisions, shards, rates, backoff, cron firing."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from orchestrator.errors import ValidationError
from orchestrator.store.records.flow import Holder, Rate, ResourceLimit, ScheduleRecord, Start, Waiter
from orchestrator.store.rules.resources import (
    BACKOFF_CAP,
    Share,
    backoff,
    check_fits,
    decide_acquire,
    rate_window,
    shard_count,
    shares,
)
from orchestrator.store.rules.schedules import check_schedule, next_slot, plan_firing, slot_session_id

NOW = 1_750_000_000.0


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("text", "count", "period"), [
    ("500/min", 500, 60.0), ("10/s", 10, 1.0), ("5/30s", 5, 30.0), ("100/h", 100, 3600.0), ("1000/day", 1000, 86400.0),
])
def test_a_rate_parses_count_and_period(text: str, count: int, period: float) -> None:
    assert Rate.parse(text) == Rate(count, period)


@pytest.mark.parametrize("text", ["500", "x/min", "5/fortnight", "0/min", "-1/s"])
def test_a_bad_rate_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValidationError, match=r"500/min|rate count"):
        Rate.parse(text)


def test_the_shares_of_a_limit_sum_to_it_and_none_exceeds_25_units() -> None:
    limit = ResourceLimit("openai", 101, Rate(500, 60.0))
    parts = shares(limit)
    assert len(parts) == shard_count(limit) == 20
    assert sum(p.concurrency or 0 for p in parts) == 101 and sum(p.rate or 0 for p in parts) == 500
    assert max(p.rate or 0 for p in parts) <= 25


def test_a_small_limit_is_one_shard() -> None:
    assert shard_count(ResourceLimit("gh", 3)) == 1


def test_concurrency_counts_live_holders_only_and_names_the_lapsed_ones_stale() -> None:
    share = Share(2, None, None)
    holders = [Holder("a", 1, NOW + 5), Holder("dead", 1, NOW - 1)]
    decision = decide_acquire(share, holders, [], [], holder="b", amount=1, priority=2, now=NOW)
    assert decision.granted and decision.stale_holders == ("dead",)
    full = decide_acquire(share, [*holders, Holder("b", 1, NOW + 9)], [], [], holder="c", amount=1, priority=2,
                          now=NOW)
    assert not full.granted and full.retry_at == NOW + 5


def test_a_holder_already_holding_is_granted_again() -> None:
    decision = decide_acquire(Share(1, None, None), [Holder("a", 1, NOW + 5)], [], [], holder="a", amount=1,
                              priority=2, now=NOW)
    assert decision.granted


def test_a_rate_refuses_until_the_oldest_start_leaves_its_window() -> None:
    share = Share(None, 2, 60.0)
    starts = [Start("a", NOW - 50), Start("b", NOW - 10)]
    refused = decide_acquire(share, starts=starts, holders=[], waiters=[], holder="c", amount=1, priority=2, now=NOW)
    assert not refused.granted and refused.retry_at == pytest.approx(NOW - 50 + rate_window(60.0), abs=0.01)
    later = NOW - 50 + rate_window(60.0) + 0.001
    granted = decide_acquire(share, [], starts, [], holder="c", amount=1, priority=2, now=later)
    assert granted.granted and granted.stale_starts == ("a",)


def test_the_rate_window_adds_one_percent_at_most_one_second() -> None:
    assert (rate_window(60.0), rate_window(1.0), rate_window(3600.0)) == (60.6, 1.01, 3601.0)


def test_a_live_higher_priority_waiter_keeps_a_lower_priority_out() -> None:
    waiters = [Waiter("urgent", 0, NOW + 3)]
    refused = decide_acquire(Share(5, None, None), [], [], waiters, holder="routine", amount=1, priority=1, now=NOW)
    assert not refused.granted and "P0" in refused.reason
    same = decide_acquire(Share(5, None, None), [], [], waiters, holder="other", amount=1, priority=0, now=NOW)
    assert same.granted  # equal priority is not kept out


def test_a_request_larger_than_any_shard_is_refused_before_waiting() -> None:
    with pytest.raises(ValidationError, match="limits set openai"):
        check_fits(ResourceLimit("openai", 2), 3, where="task t")
    check_fits(ResourceLimit("openai", 3), 3, where="task t")


def test_backoff_grows_is_capped_is_sooner_for_p0_and_never_past_the_retry_time() -> None:
    rng = random.Random(1)
    assert all(backoff(10, 3, None, NOW, rng) <= BACKOFF_CAP for _ in range(50))
    assert all(backoff(10, 0, None, NOW, rng) <= BACKOFF_CAP / 4 for _ in range(50))
    assert all(backoff(10, 3, NOW + 0.3, NOW, rng) <= 0.3 for _ in range(50))


def _schedule(**fields: object) -> ScheduleRecord:
    values: dict[str, object] = {"name": "s", "cron": "*/1 * * * *", "pipeline": "p",
                                 "created_at": _ts("2025-06-15T12:00:00")}
    values.update(fields)
    return ScheduleRecord(**values)  # type: ignore[arg-type]


def test_a_slot_on_time_starts_and_becomes_the_last_slot() -> None:
    firing = plan_firing(_schedule(), _ts("2025-06-15T12:01:05"))
    assert firing.starts == (_ts("2025-06-15T12:01:00"),) and firing.last_slot == _ts("2025-06-15T12:01:00")


def test_nothing_is_due_before_the_first_slot_or_while_paused() -> None:
    assert plan_firing(_schedule(), _ts("2025-06-15T12:00:30")).last_slot is None
    assert plan_firing(_schedule(paused=True), _ts("2025-06-15T13:00:00")).starts == ()


@pytest.mark.parametrize(("catch_up", "started"), [("skip", 0), ("latest", 1), ("all", 5)])
def test_after_an_outage_the_catch_up_policy_decides_what_starts(catch_up: str, started: int) -> None:
    record = _schedule(catch_up=catch_up, max_catch_up=5, last_slot=_ts("2025-06-15T12:00:00"))
    firing = plan_firing(record, _ts("2025-06-15T12:20:45"))  # 20 slots missed, the latest 45 s late
    newest = [_ts(f"2025-06-15T12:{m}:00") for m in range(21 - started, 21)]
    assert firing.starts == tuple(newest) and firing.skipped >= 1
    assert firing.last_slot == _ts("2025-06-15T12:20:00")


def test_overlap_skip_starts_nothing_while_the_previous_session_runs_and_one_slot_otherwise() -> None:
    record = _schedule(overlap="skip", catch_up="all", last_slot=_ts("2025-06-15T12:00:00"))
    busy = plan_firing(record, _ts("2025-06-15T12:03:10"), previous_unfinished=True)
    assert busy.starts == () and busy.last_slot == _ts("2025-06-15T12:03:00")
    free = plan_firing(record, _ts("2025-06-15T12:03:10"), previous_unfinished=False)
    assert free.starts == (_ts("2025-06-15T12:03:00"),)


def test_a_schedule_in_a_time_zone_follows_daylight_saving() -> None:
    record = _schedule(cron="0 6 * * *", timezone="Europe/Berlin")
    winter = next_slot(record, _ts("2025-01-10T00:00:00"))
    summer = next_slot(record, _ts("2025-07-10T00:00:00"))
    assert (winter, summer) == (_ts("2025-01-10T05:00:00"), _ts("2025-07-10T04:00:00"))


def test_a_slot_s_session_id_is_the_schedule_and_the_utc_slot_time() -> None:
    assert slot_session_id("nightly", _ts("2025-06-15T04:00:00")) == "schedule.nightly.20250615T040000Z"


def test_a_bad_cron_or_zone_or_policy_is_refused() -> None:
    with pytest.raises(ValidationError, match="cron"):
        check_schedule(_schedule(cron="every day"))
    with pytest.raises(ValidationError, match="timezone"):
        check_schedule(_schedule(timezone="Nowhere/City"))
    with pytest.raises(ValidationError, match="catch_up"):
        _schedule(catch_up="some")
