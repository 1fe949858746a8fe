"""Schedules in the SQLite store: one row per schedule, its record as JSON, a version to compare.

`save_schedule` writes only when the stored version is the one the caller read, so two
workers advancing the same schedule cannot both win (the loser reads it again).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from orchestrator.errors import ScheduleExistsError, ScheduleNotFoundError, SchemaError
from orchestrator.store.records import SCHEMA_VERSION
from orchestrator.store.records.flow import ScheduleRecord

__all__ = ["ScheduleOps"]

T = TypeVar("T")


def _read(conn: sqlite3.Connection, name: str) -> ScheduleRecord | None:
    row = conn.execute("SELECT version, body, v FROM schedules WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    if int(row[2]) > SCHEMA_VERSION:  # never half-read a row of a newer SDK
        raise SchemaError.newer(f"schedule row {name!r}", int(row[2]), SCHEMA_VERSION)
    return replace(ScheduleRecord.from_json(json.loads(row[1])), version=int(row[0]))


class ScheduleOps:
    """The schedule half of the flow-control role (`FlowStore`), mixed into `SQLiteStore`."""

    _where: str

    if TYPE_CHECKING:
        async def _run(self, op: str, fn: Callable[[sqlite3.Connection, float], T], *, write: bool = True,
                       session_id: str | None = None) -> T: ...

    async def put_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Create a schedule (version 1); ScheduleExistsError if the name is taken."""

        def put(conn: sqlite3.Connection, now: float) -> ScheduleRecord:
            if _read(conn, record.name) is not None:
                raise ScheduleExistsError.exists(record.name, self._where)
            stored = replace(record, version=1, created_at=record.created_at or now)
            conn.execute("INSERT INTO schedules (name, v, version, body) VALUES (?, ?, 1, ?)",
                         (record.name, SCHEMA_VERSION, json.dumps(stored.to_json())))
            return stored

        return await self._run("put_schedule", put)

    async def get_schedule(self, name: str) -> ScheduleRecord:
        def get(conn: sqlite3.Connection, _: float) -> ScheduleRecord:
            found = _read(conn, name)
            if found is None:
                raise ScheduleNotFoundError.missing(name, self._where)
            return found

        return await self._run("get_schedule", get, write=False)

    async def list_schedules(self) -> list[ScheduleRecord]:
        def read(conn: sqlite3.Connection, _: float) -> list[ScheduleRecord]:
            return [found for (n,) in conn.execute("SELECT name FROM schedules ORDER BY name")
                    if (found := _read(conn, n)) is not None]

        return await self._run("list_schedules", read, write=False)

    async def save_schedule(self, record: ScheduleRecord) -> ScheduleRecord | None:
        """Write `record` if the stored version is still `record.version`; the new record, or None."""

        def save(conn: sqlite3.Connection, _: float) -> ScheduleRecord | None:
            found = _read(conn, record.name)
            if found is None:
                raise ScheduleNotFoundError.missing(record.name, self._where)
            if found.version != record.version:
                return None
            stored = replace(record, version=record.version + 1)
            conn.execute("UPDATE schedules SET version = ?, body = ? WHERE name = ?",
                         (stored.version, json.dumps(stored.to_json()), record.name))
            return stored

        return await self._run("save_schedule", save)

    async def delete_schedule(self, name: str) -> None:
        def delete(conn: sqlite3.Connection, _: float) -> None:
            if conn.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount == 0:
                raise ScheduleNotFoundError.missing(name, self._where)

        await self._run("delete_schedule", delete)
