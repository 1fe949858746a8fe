"""Flow control on every backend: fleet-wide resource limits and schedules (`FlowStore`).

`FlowContract` needs the same `store` fixture as `StoreContract` (an initialized store
opened with a `FakeClock`). Several processes sharing one limit are tested in
tests/test_flow_fleet.py on the backends whose state is shared atomically.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Any, cast

import pytest

from orchestrator.errors import (
    ResourceNotFoundError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    SchemaError,
    ValidationError,
)
from orchestrator.store import SCHEMA_VERSION, FlowStore, Store
from orchestrator.store.records.flow import Grant, Rate, ResourceLimit, ScheduleRecord
from orchestrator.store.rules.resources import Decision
from orchestrator.testing.contract_base import clock_of

__all__ = ["FlowContract"]

LEASE = 30.0


def _flow(store: Store) -> FlowStore:
    assert isinstance(store, FlowStore), f"{store!r} does not implement FlowStore"
    return cast(FlowStore, store)


async def _take(store: Store, holder: str, *, name: str = "openai", amount: int = 1, priority: int = 2,
                waited: bool = False) -> Grant | Decision:
    return await _flow(store).acquire_resource(name, holder, amount, priority=priority, lease_seconds=LEASE,
                                               waited=waited)


class FlowContract:
    """Limits, grants, leases, rates, priorities and schedules; needs a `store` fixture.

    Planting a limit or schedule of a newer schema version goes through
    `write_newer_flow_version`; override it for a third-party backend.
    """

    pytestmark = pytest.mark.anyio

    async def write_newer_flow_version(self, store: Store, kind: str, name: str) -> None:
        """Bump the stored schema version of a resource limit or a schedule past SCHEMA_VERSION."""
        desc = store.describe()
        if desc.backend == "sqlite":
            table = "resource_limits" if kind == "limit" else "schedules"
            with sqlite3.connect(desc.location) as conn:
                conn.execute(f"UPDATE {table} SET v = ? WHERE name = ?", (SCHEMA_VERSION + 1, name))
            return
        if desc.backend == "dynamodb":
            import boto3

            key = ({"PK": {"S": "LIMIT"}, "SK": {"S": f"RESOURCE#{name}"}} if kind == "limit"
                   else {"PK": {"S": "SCHEDULE"}, "SK": {"S": name}})
            client = boto3.client("dynamodb", region_name=desc.region, endpoint_url=desc.endpoint)
            client.update_item(TableName=desc.location, Key=key, UpdateExpression="SET #v = :v",
                               ExpressionAttributeNames={"#v": "v"},
                               ExpressionAttributeValues={":v": {"N": str(SCHEMA_VERSION + 1)}})
            return
        raise AssertionError(f"override write_newer_flow_version() for backend {desc.backend!r}")

    async def test_a_limit_or_schedule_of_a_newer_schema_version_is_refused(self, store: Store) -> None:
        flow = _flow(store)
        await flow.set_limit(ResourceLimit("newer", 1))
        await flow.put_schedule(self._schedule(name="newer"))
        await self.write_newer_flow_version(store, "limit", "newer")
        await self.write_newer_flow_version(store, "schedule", "newer")
        with pytest.raises(SchemaError, match="newer"):
            await flow.get_limit("newer")
        with pytest.raises(SchemaError, match="newer"):
            await flow.get_schedule("newer")

    async def test_a_limit_round_trips_and_is_listed_with_its_holders(self, store: Store) -> None:
        flow = _flow(store)
        await flow.set_limit(ResourceLimit("openai", 3, Rate(500, 60.0)))
        await flow.set_limit(ResourceLimit("github", None, Rate(10, 1.0)))
        assert await flow.get_limit("openai") == ResourceLimit("openai", 3, Rate(500, 60.0))
        assert await flow.get_limit("unknown") is None
        await _take(store, "a")
        listed = await flow.list_limits()
        assert [s.limit.name for s in listed] == ["github", "openai"]
        assert [(h.holder, h.amount) for h in listed[1].holders] == [("a", 1)]
        assert listed[1].recent_starts == 1

    async def test_a_resource_without_limits_grants_at_once(self, store: Store) -> None:
        grants = [await _take(store, f"h{i}", name="free") for i in range(5)]
        assert all(isinstance(g, Grant) for g in grants)

    async def test_concurrency_grants_up_to_the_limit_then_refuses(self, store: Store) -> None:
        await _flow(store).set_limit(ResourceLimit("openai", 2))
        first, second, third = [await _take(store, h) for h in ("a", "b", "c")]
        assert isinstance(first, Grant) and isinstance(second, Grant)
        assert isinstance(third, Decision) and not third.granted

    async def test_a_release_frees_the_units_for_the_next_holder(self, store: Store) -> None:
        await _flow(store).set_limit(ResourceLimit("openai", 1))
        grant = await _take(store, "a")
        assert isinstance(grant, Grant)
        assert isinstance(await _take(store, "b"), Decision)
        await _flow(store).release_resource(grant)
        await _flow(store).release_resource(grant)  # idempotent
        assert isinstance(await _take(store, "b", waited=True), Grant)

    async def test_acquiring_twice_for_one_holder_takes_the_units_once(self, store: Store) -> None:
        await _flow(store).set_limit(ResourceLimit("openai", 2))
        assert isinstance(await _take(store, "a"), Grant)
        assert isinstance(await _take(store, "a"), Grant)  # a retry whose response was lost
        assert isinstance(await _take(store, "b"), Grant)
        state = await _flow(store).resource_state("openai")
        assert sorted(h.holder for h in state.holders) == ["a", "b"]

    async def test_a_holder_whose_lease_lapsed_loses_its_units_and_its_renewal(self, store: Store) -> None:
        await _flow(store).set_limit(ResourceLimit("openai", 1))
        grant = await _take(store, "crashed")
        assert isinstance(grant, Grant)
        clock_of(store).advance(LEASE + 1)
        taken = await _take(store, "next")
        assert isinstance(taken, Grant)
        assert await _flow(store).renew_resource(grant, LEASE) is False
        assert [h.holder for h in (await _flow(store).resource_state("openai")).holders] == ["next"]

    async def test_a_renewed_holder_keeps_its_units_past_the_first_lease(self, store: Store) -> None:
        await _flow(store).set_limit(ResourceLimit("openai", 1))
        grant = await _take(store, "a")
        assert isinstance(grant, Grant)
        clock_of(store).advance(LEASE - 5)
        assert await _flow(store).renew_resource(grant, LEASE) is True
        clock_of(store).advance(10)
        assert isinstance(await _take(store, "b"), Decision)

    async def test_a_rate_counts_starts_in_a_sliding_window(self, store: Store) -> None:
        await _flow(store).set_limit(ResourceLimit("openai", None, Rate(3, 60.0)))
        clock = clock_of(store)
        for h in ("a", "b", "c"):
            assert isinstance(await _take(store, h), Grant)
            clock.advance(10)
        refused = await _take(store, "d")
        assert isinstance(refused, Decision)
        # when "a" leaves the window (its period, and 1% for clock skew)
        assert refused.retry_at == pytest.approx(clock.now() - 30 + 60 * 1.01, abs=0.01)
        clock.advance(31)
        assert isinstance(await _take(store, "d", waited=True), Grant)
        assert isinstance(await _take(store, "e"), Decision)

    async def test_a_waiting_higher_priority_task_goes_before_a_lower_one(self, store: Store) -> None:
        flow = _flow(store)
        await flow.set_limit(ResourceLimit("openai", 1))
        grant = await _take(store, "holder")
        assert isinstance(grant, Grant)
        assert isinstance(await _take(store, "urgent", priority=0), Decision)  # registers as a waiter
        await flow.release_resource(grant)
        late = await _take(store, "routine", priority=2)
        assert isinstance(late, Decision) and "P0" in late.reason
        assert [w.holder for w in (await flow.resource_state("openai")).waiters] == ["urgent", "routine"]
        assert isinstance(await _take(store, "urgent", priority=0, waited=True), Grant)
        assert [w.holder for w in (await flow.resource_state("openai")).waiters] == ["routine"]

    async def test_a_lapsed_waiter_no_longer_keeps_lower_priorities_out(self, store: Store) -> None:
        await _flow(store).set_limit(ResourceLimit("openai", 1))
        grant = await _take(store, "holder")
        assert isinstance(grant, Grant)
        assert isinstance(await _take(store, "urgent", priority=0), Decision)
        await _flow(store).release_resource(grant)
        clock_of(store).advance(60)  # the P0 waiter crashed and never looked again
        assert isinstance(await _take(store, "routine", priority=2), Grant)

    async def test_deleting_a_limit_makes_the_resource_unlimited(self, store: Store) -> None:
        flow = _flow(store)
        await flow.set_limit(ResourceLimit("openai", 1))
        await _take(store, "a")
        await flow.delete_limit("openai")
        assert await flow.get_limit("openai") is None
        assert isinstance(await _take(store, "b"), Grant)
        with pytest.raises(ResourceNotFoundError, match="limits set openai"):
            await flow.delete_limit("openai")
        with pytest.raises(ResourceNotFoundError):
            await flow.resource_state("openai")

    async def test_a_request_no_grant_could_hold_is_refused_before_anything_is_written(self, store: Store) -> None:
        await _flow(store).set_limit(ResourceLimit("openai", 2))
        with pytest.raises(ValidationError, match="limits set openai"):
            await _take(store, "greedy", amount=3)
        assert (await _flow(store).resource_state("openai")).waiters == ()

    async def test_a_large_limit_is_enforced_exactly(self, store: Store) -> None:
        # 60 units: several shards on DynamoDB, whose shares must sum to the limit
        await _flow(store).set_limit(ResourceLimit("openai", 60))
        results = [await _take(store, f"h{i}") for i in range(61)]
        assert sum(isinstance(r, Grant) for r in results) == 60
        assert isinstance(results[-1], Decision)

    # -- schedules ------------------------------------------------------------------------

    def _schedule(self, **fields: Any) -> ScheduleRecord:
        values: dict[str, Any] = {"name": "hourly", "cron": "0 * * * *", "pipeline": "report",
                                  "app": "app:report", "input": {"k": 1}}
        values.update(fields)
        return ScheduleRecord(**values)

    async def test_a_schedule_round_trips_and_is_listed(self, store: Store) -> None:
        flow = _flow(store)
        stored = await flow.put_schedule(self._schedule(timezone="Europe/Berlin", catch_up="all"))
        assert stored.version == 1 and stored.created_at == clock_of(store).now()
        assert await flow.get_schedule("hourly") == stored
        await flow.put_schedule(self._schedule(name="daily"))
        assert [s.name for s in await flow.list_schedules()] == ["daily", "hourly"]

    async def test_a_second_schedule_of_one_name_is_refused(self, store: Store) -> None:
        await _flow(store).put_schedule(self._schedule())
        with pytest.raises(ScheduleExistsError, match="hourly"):
            await _flow(store).put_schedule(self._schedule(cron="*/5 * * * *"))

    async def test_saving_a_schedule_read_before_another_save_is_refused(self, store: Store) -> None:
        flow = _flow(store)
        read = await flow.put_schedule(self._schedule())
        first = await flow.save_schedule(replace(read, last_slot=100.0))
        assert first is not None and first.version == 2
        assert await flow.save_schedule(replace(read, last_slot=200.0)) is None
        assert (await flow.get_schedule("hourly")).last_slot == 100.0

    async def test_a_deleted_schedule_is_gone(self, store: Store) -> None:
        flow = _flow(store)
        await flow.put_schedule(self._schedule())
        await flow.delete_schedule("hourly")
        with pytest.raises(ScheduleNotFoundError, match="schedule list"):
            await flow.get_schedule("hourly")
        with pytest.raises(ScheduleNotFoundError):
            await flow.delete_schedule("hourly")
