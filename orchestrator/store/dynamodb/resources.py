"""Fleet-wide resource limits in DynamoDB: a limit item and sharded slot items, no hot item.

Items (docs/design.md, key layout):
- limit: `LIMIT` / `RESOURCE#<name>`: concurrency, rate, and the shard count `shards`.
- shard: `RESOURCE#<name>#<i>` / `SHARD`: its holders (`h`: holder -> units, lease end),
  recent starts (`s`: key -> time, units), waiters (`w`: holder -> priority, until) and a
  version `ver`. Each shard enforces its share of the limits (`rules.resources.shares`,
  at most 25 units a shard), so a busy resource spreads over many partitions.

Acquire: one BatchGetItem of every shard (strongly consistent), the rulebook decides per
shard, one UpdateItem conditioned on the shard's `ver` writes the grant (and drops the
stale entries): 2 requests. Release and renew are one UpdateItem on the holder's shard.
A refused acquirer registers as a waiter with one UpdateItem. No transaction is used, so
it holds on any DynamoDB-compatible store. The limit item is cached for 5 seconds.
"""

from __future__ import annotations

import zlib
from typing import Any

from pynamodb.expressions.operand import Path

from orchestrator.errors import ResourceNotFoundError, SchemaError
from orchestrator.store.dynamodb.base import DynamoDBBase
from orchestrator.store.dynamodb.connection import DynamoCallError
from orchestrator.store.records import SCHEMA_VERSION
from orchestrator.store.records.flow import Grant, Holder, Rate, ResourceLimit, ResourceState, Start, Waiter
from orchestrator.store.rules.resources import (
    Decision,
    check_fits,
    decide_acquire,
    live_state,
    shard_count,
    shares,
    waiter_until,
)

__all__ = ["ResourceOps"]

_LIMIT_PK = "LIMIT"
_CACHE_SECONDS = 5.0
_ROUNDS = 4  # conditional writes lost to other acquirers before backing off


def _shard_pk(name: str, i: int) -> str:
    return f"RESOURCE#{name}#{i}"


def _n(raw: dict[str, Any], key: str) -> float | None:
    v = raw.get(key)
    return None if v is None or "NULL" in v else float(v["N"])


def _num(x: float) -> dict[str, str]:
    return {"N": repr(float(x)) if not float(x).is_integer() else str(int(x))}


def _known(raw: dict[str, Any], what: str) -> dict[str, Any]:
    """The item, or SchemaError if a newer SDK wrote it (never half-read)."""
    version = int(_n(raw, "v") or 0)
    if version > SCHEMA_VERSION:
        raise SchemaError.newer(what, version, SCHEMA_VERSION)
    return raw


def _limit(raw: dict[str, Any]) -> tuple[ResourceLimit, int]:
    name = raw["SK"]["S"].removeprefix("RESOURCE#")
    _known(raw, f"the limit item of resource {name!r}")
    conc, count, period = _n(raw, "concurrency"), _n(raw, "rate_count"), _n(raw, "rate_period")
    rate = Rate(int(count), float(period)) if count is not None and period is not None else None
    limit = ResourceLimit(name, int(conc) if conc is not None else None, rate)
    return limit, int(_n(raw, "shards") or 1)


def _entries(raw: dict[str, Any]) -> tuple[list[Holder], list[Start], list[Waiter], int]:
    _known(raw, f"resource shard item {raw['PK']['S']}")

    def m(key: str) -> dict[str, Any]:
        return dict(raw.get(key, {}).get("M", {}))

    holders = [Holder(k, int(v["M"]["a"]["N"]), float(v["M"]["u"]["N"])) for k, v in m("h").items()]
    starts = [Start(k, float(v["M"]["at"]["N"]), int(v["M"]["a"]["N"])) for k, v in m("s").items()]
    waiters = [Waiter(k, int(v["M"]["p"]["N"]), float(v["M"]["u"]["N"])) for k, v in m("w").items()]
    return holders, starts, waiters, int(_n(raw, "ver") or 0)


class ResourceOps(DynamoDBBase):
    """The resource half of `FlowStore` (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # limit and shard count by resource, with when they were read (monotonic)
        self._limit_cache: dict[str, tuple[float, ResourceLimit | None, int]] = {}

    def _cache(self) -> dict[str, tuple[float, ResourceLimit | None, int]]:
        return self._limit_cache

    async def _read_limit(self, name: str, *, fresh: bool = False) -> tuple[ResourceLimit | None, int]:
        now = self.clock.monotonic()
        hit = self._cache().get(name)
        if hit is not None and not fresh and now - hit[0] < _CACHE_SECONDS:
            return hit[1], hit[2]
        raw = await self.get_raw(_LIMIT_PK, f"RESOURCE#{name}")
        limit, n = _limit(raw) if raw is not None else (None, 0)
        self._cache()[name] = (now, limit, n)
        return limit, n

    async def set_limit(self, limit: ResourceLimit) -> ResourceLimit:
        _, old = await self._read_limit(limit.name, fresh=True)
        n = max(old, shard_count(limit))  # never fewer shards: holders in the old ones still count
        empty: dict[str, Any] = {"M": {}}
        for i in range(n):  # the maps must exist before an update can set a path inside them
            await self._caller.call("UpdateItem", {
                "TableName": self.table, "Key": self.key(_shard_pk(limit.name, i), "SHARD"),
                "UpdateExpression": "SET v = :v, kind = :k, h = if_not_exists(h, :e), s = if_not_exists(s, :e), "
                                    "w = if_not_exists(w, :e), ver = if_not_exists(ver, :z)",
                "ExpressionAttributeValues": {":v": _num(SCHEMA_VERSION), ":k": {"S": "resource_shard"},
                                              ":e": empty, ":z": _num(0)}})
        null: dict[str, Any] = {"NULL": True}
        item = {**self.key(_LIMIT_PK, f"RESOURCE#{limit.name}"), "v": _num(SCHEMA_VERSION),
                "kind": {"S": "resource_limit"}, "shards": _num(n),
                "concurrency": _num(limit.concurrency) if limit.concurrency is not None else null,
                "rate_count": _num(limit.rate.count) if limit.rate else null,
                "rate_period": _num(limit.rate.period) if limit.rate else null}
        await self._caller.call("PutItem", {"TableName": self.table, "Item": item})
        self._cache()[limit.name] = (self.clock.monotonic(), limit, n)
        return limit

    async def delete_limit(self, name: str) -> None:
        limit, n = await self._read_limit(name, fresh=True)
        if limit is None:
            raise ResourceNotFoundError.missing(name, str(self.describe()))
        await self.batch_put([], deletes=[self.key(_LIMIT_PK, f"RESOURCE#{name}")]
                             + [self.key(_shard_pk(name, i), "SHARD") for i in range(n)])
        self._cache().pop(name, None)

    async def get_limit(self, name: str) -> ResourceLimit | None:
        return (await self._read_limit(name, fresh=True))[0]

    async def _shards(self, name: str, n: int) -> dict[int, dict[str, Any]]:
        raws = await self.batch_get([self.key(_shard_pk(name, i), "SHARD") for i in range(n)])
        return {int(r["PK"]["S"].rsplit("#", 1)[1]): r for r in raws}

    def _state(self, limit: ResourceLimit, shards: dict[int, dict[str, Any]], now: float) -> ResourceState:
        holders: list[Holder] = []
        starts: list[Start] = []
        waiters: list[Waiter] = []
        for raw in shards.values():
            h, s, w, _ = _entries(raw)
            holders += h
            starts += s
            waiters += w
        return live_state(limit, holders, starts, waiters, now)

    async def resource_state(self, name: str) -> ResourceState:
        limit, n = await self._read_limit(name, fresh=True)
        if limit is None:
            raise ResourceNotFoundError.missing(name, str(self.describe()))
        return self._state(limit, await self._shards(name, n), self.clock.now())

    async def list_limits(self) -> list[ResourceState]:
        raws, _ = await self.query_raw(_LIMIT_PK, Path("PK") == _LIMIT_PK)
        out = []
        for raw in sorted(raws, key=lambda r: str(r["SK"]["S"])):
            limit, n = _limit(raw)
            out.append(self._state(limit, await self._shards(limit.name, n), self.clock.now()))
        return out

    async def acquire_resource(self, name: str, holder: str, amount: int, *, priority: int,
                               lease_seconds: float, waited: bool = False) -> Grant | Decision:
        limit, n = await self._read_limit(name)
        if limit is None or limit.unlimited:
            return Grant(name, holder, amount)
        check_fits(limit, amount, where=f"holder {holder}")
        parts = shares(limit, n)
        home = zlib.crc32(holder.encode()) % n  # where this holder registers as a waiter
        refused = Decision(False, self.clock.now(), "busy")
        for _ in range(_ROUNDS):
            shards = await self._shards(name, n)
            now = self.clock.now()
            all_waiters = [w for raw in shards.values() for w in _entries(raw)[2]]
            order = sorted(shards, key=lambda i: self._rng.random())
            refusals: list[Decision] = []
            lost_race = False
            for i in order:
                holders, starts, _, ver = _entries(shards[i])
                decision = decide_acquire(parts[i], holders, starts, all_waiters, holder=holder, amount=amount,
                                          priority=priority, now=now)
                if not decision.granted:
                    refusals.append(decision)
                    continue
                own = [w.holder for w in _entries(shards[i])[2] if w.holder == holder]
                if await self._grant(name, i, ver, holder, amount, limit, now, lease_seconds, decision, own):
                    if waited and home != i:
                        await self._unwait(name, home, holder)
                    return Grant(name, holder, amount, i)
                lost_race = True
                break
            if not lost_race:
                soonest = min(refusals, key=lambda d: d.retry_at or now, default=refused)
                refused = Decision(False, soonest.retry_at or now, soonest.reason)
                break
        await self._caller.call("UpdateItem", {
            "TableName": self.table, "Key": self.key(_shard_pk(name, home), "SHARD"),
            "UpdateExpression": "SET w.#h = :w", "ExpressionAttributeNames": {"#h": holder},
            "ExpressionAttributeValues": {":w": {"M": {"p": _num(priority),
                                                       "u": _num(waiter_until(self.clock.now(), priority))}}}})
        return refused

    async def _grant(self, name: str, i: int, ver: int, holder: str, amount: int, limit: ResourceLimit,
                     now: float, lease_seconds: float, decision: Decision, own_waiter: list[str]) -> bool:
        names: dict[str, str] = {"#me": holder}
        sets = ["ver = :next"]
        values: dict[str, Any] = {":next": _num(ver + 1), ":ver": _num(ver)}
        if limit.concurrency is not None:
            sets.append("h.#me = :hold")
            values[":hold"] = {"M": {"a": _num(amount), "u": _num(now + lease_seconds)}}
        if limit.rate is not None:
            sets.append("s.#me = :start")
            values[":start"] = {"M": {"at": _num(now), "a": _num(amount)}}
        removes = []
        for prefix, keys in (("h", decision.stale_holders), ("s", decision.stale_starts),
                             ("w", tuple(decision.stale_waiters) + tuple(own_waiter))):
            for k in dict.fromkeys(keys):
                if k == holder and prefix != "w":
                    continue
                alias = f"#r{len(names)}"
                names[alias] = k
                removes.append(f"{prefix}.{alias}")
        expr = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            await self._caller.call("UpdateItem", {
                "TableName": self.table, "Key": self.key(_shard_pk(name, i), "SHARD"), "UpdateExpression": expr,
                "ConditionExpression": "ver = :ver", "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values})
        except DynamoCallError as exc:
            if exc.condition_failed:
                return False
            raise self._caller.to_error(exc) from exc
        return True

    async def _unwait(self, name: str, i: int, holder: str) -> None:
        await self._caller.call("UpdateItem", {
            "TableName": self.table, "Key": self.key(_shard_pk(name, i), "SHARD"),
            "UpdateExpression": "REMOVE w.#h", "ExpressionAttributeNames": {"#h": holder}})

    async def renew_resource(self, grant: Grant, lease_seconds: float) -> bool:
        limit, _ = await self._read_limit(grant.resource)
        if limit is None or limit.concurrency is None:
            return True
        now = self.clock.now()
        try:
            await self._caller.call("UpdateItem", {
                "TableName": self.table, "Key": self.key(_shard_pk(grant.resource, grant.shard), "SHARD"),
                "UpdateExpression": "SET h.#h.u = :u", "ConditionExpression": "h.#h.u > :now",
                "ExpressionAttributeNames": {"#h": grant.holder},
                "ExpressionAttributeValues": {":u": _num(now + lease_seconds), ":now": _num(now)}})
        except DynamoCallError as exc:
            if exc.condition_failed:
                return False
            raise self._caller.to_error(exc) from exc
        return True

    async def release_resource(self, grant: Grant) -> None:
        limit, _ = await self._read_limit(grant.resource)
        if limit is None or limit.concurrency is None:
            return  # a start against a rate is never given back
        await self._caller.call("UpdateItem", {
            "TableName": self.table, "Key": self.key(_shard_pk(grant.resource, grant.shard), "SHARD"),
            "UpdateExpression": "REMOVE h.#h", "ExpressionAttributeNames": {"#h": grant.holder}})

