"""Fleet-wide resource limits in the SQLite store: one `BEGIN IMMEDIATE` per acquire.

The rows of one resource (limit, holders, recent starts, waiters) are read, the
rulebook (`rules.resources.decide_acquire`) decides, and the grant, the stale rows and
the waiter registration are written in the same transaction, so every process on the
machine sees one consistent count.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from orchestrator.errors import ResourceNotFoundError, SchemaError
from orchestrator.store.records import SCHEMA_VERSION
from orchestrator.store.records.flow import Grant, Holder, Rate, ResourceLimit, ResourceState, Start, Waiter
from orchestrator.store.rules.resources import (
    Decision,
    check_fits,
    decide_acquire,
    live_state,
    shares,
    waiter_until,
)

__all__ = ["ResourceOps"]

T = TypeVar("T")


def _limit(conn: sqlite3.Connection, name: str) -> ResourceLimit | None:
    row = conn.execute("SELECT concurrency, rate_count, rate_period, v FROM resource_limits WHERE name = ?",
                       (name,)).fetchone()
    if row is None:
        return None
    if int(row[3]) > SCHEMA_VERSION:  # never half-read a row of a newer SDK
        raise SchemaError.newer(f"limit row of resource {name!r}", int(row[3]), SCHEMA_VERSION)
    rate = Rate(int(row[1]), float(row[2])) if row[1] is not None else None
    return ResourceLimit(name, row[0], rate)


def _rows(conn: sqlite3.Connection, name: str) -> tuple[list[Holder], list[Start], list[Waiter]]:
    holders = [Holder(h, a, u) for h, a, u in conn.execute(
        "SELECT holder, amount, lease_until FROM resource_holders WHERE name = ?", (name,))]
    starts = [Start(k, at, a) for k, at, a in conn.execute(
        "SELECT key, at, amount FROM resource_starts WHERE name = ?", (name,))]
    waiters = [Waiter(h, p, u) for h, p, u in conn.execute(
        "SELECT holder, priority, until FROM resource_waiters WHERE name = ?", (name,))]
    return holders, starts, waiters


def _state(conn: sqlite3.Connection, limit: ResourceLimit, now: float) -> ResourceState:
    holders, starts, waiters = _rows(conn, limit.name)
    return live_state(limit, holders, starts, waiters, now)


class ResourceOps:
    """The resource half of the flow-control role (`FlowStore`), mixed into `SQLiteStore`."""

    _where: str

    if TYPE_CHECKING:
        async def _run(self, op: str, fn: Callable[[sqlite3.Connection, float], T], *, write: bool = True,
                       session_id: str | None = None) -> T: ...

    async def set_limit(self, limit: ResourceLimit) -> ResourceLimit:
        def put(conn: sqlite3.Connection, _: float) -> ResourceLimit:
            conn.execute(
                "INSERT INTO resource_limits (name, v, concurrency, rate_count, rate_period) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET v = excluded.v, concurrency = excluded.concurrency, "
                "rate_count = excluded.rate_count, rate_period = excluded.rate_period",
                (limit.name, SCHEMA_VERSION, limit.concurrency, limit.rate.count if limit.rate else None,
                 limit.rate.period if limit.rate else None))
            return limit

        return await self._run("set_limit", put)

    async def delete_limit(self, name: str) -> None:
        def delete(conn: sqlite3.Connection, _: float) -> None:
            if _limit(conn, name) is None:
                raise ResourceNotFoundError.missing(name, self._where)
            for table in ("resource_limits", "resource_holders", "resource_starts", "resource_waiters"):
                conn.execute(f"DELETE FROM {table} WHERE name = ?", (name,))

        await self._run("delete_limit", delete)

    async def get_limit(self, name: str) -> ResourceLimit | None:
        return await self._run("get_limit", lambda conn, _: _limit(conn, name), write=False)

    async def resource_state(self, name: str) -> ResourceState:
        def read(conn: sqlite3.Connection, now: float) -> ResourceState:
            limit = _limit(conn, name)
            if limit is None:
                raise ResourceNotFoundError.missing(name, self._where)
            return _state(conn, limit, now)

        return await self._run("resource_state", read, write=False)

    async def list_limits(self) -> list[ResourceState]:
        def read(conn: sqlite3.Connection, now: float) -> list[ResourceState]:
            names = [r[0] for r in conn.execute("SELECT name FROM resource_limits ORDER BY name")]
            return [_state(conn, limit, now) for n in names if (limit := _limit(conn, n)) is not None]

        return await self._run("list_limits", read, write=False)

    async def acquire_resource(self, name: str, holder: str, amount: int, *, priority: int,
                               lease_seconds: float, waited: bool = False) -> Grant | Decision:
        """Take `amount` units for `holder`, or say when to look again (and register as a waiter)."""

        def acquire(conn: sqlite3.Connection, now: float) -> Grant | Decision:
            limit = _limit(conn, name)
            if limit is None or limit.unlimited:
                return Grant(name, holder, amount)
            check_fits(limit, amount, where=f"holder {holder}")
            holders, starts, waiters = _rows(conn, name)
            decision = decide_acquire(shares(limit, 1)[0], holders, starts, waiters, holder=holder,
                                      amount=amount, priority=priority, now=now)
            for table, key, stale in (("resource_holders", "holder", decision.stale_holders),
                                      ("resource_starts", "key", decision.stale_starts),
                                      ("resource_waiters", "holder", decision.stale_waiters)):
                conn.executemany(f"DELETE FROM {table} WHERE name = ? AND {key} = ?",
                                 [(name, k) for k in stale])
            if not decision.granted:
                conn.execute("INSERT OR REPLACE INTO resource_waiters (name, holder, priority, until) "
                             "VALUES (?, ?, ?, ?)", (name, holder, priority, waiter_until(now, priority)))
                return decision
            if not any(h.holder == holder and h.lease_until > now for h in holders):
                if limit.concurrency is not None:
                    conn.execute("INSERT OR REPLACE INTO resource_holders (name, holder, amount, lease_until) "
                                 "VALUES (?, ?, ?, ?)", (name, holder, amount, now + lease_seconds))
                if limit.rate is not None:
                    conn.execute("INSERT OR IGNORE INTO resource_starts (name, key, at, amount) VALUES (?, ?, ?, ?)",
                                 (name, holder, now, amount))
            conn.execute("DELETE FROM resource_waiters WHERE name = ? AND holder = ?", (name, holder))
            return Grant(name, holder, amount)

        return await self._run("acquire_resource", acquire)

    async def renew_resource(self, grant: Grant, lease_seconds: float) -> bool:
        """Extend the holder's lease; False when it lapsed and the units went to another."""

        def renew(conn: sqlite3.Connection, now: float) -> bool:
            cur = conn.execute("UPDATE resource_holders SET lease_until = ? WHERE name = ? AND holder = ? "
                               "AND lease_until > ?", (now + lease_seconds, grant.resource, grant.holder, now))
            if cur.rowcount == 1:
                return True
            limit = _limit(conn, grant.resource)  # no concurrency limit: nothing to hold, nothing lost
            return limit is None or limit.concurrency is None

        return await self._run("renew_resource", renew)

    async def release_resource(self, grant: Grant) -> None:
        def release(conn: sqlite3.Connection, _: float) -> None:
            conn.execute("DELETE FROM resource_holders WHERE name = ? AND holder = ?", (grant.resource, grant.holder))
            conn.execute("DELETE FROM resource_waiters WHERE name = ? AND holder = ?", (grant.resource, grant.holder))

        await self._run("release_resource", release)
