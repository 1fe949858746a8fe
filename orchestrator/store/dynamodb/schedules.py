"""Schedules in DynamoDB: one item per schedule, `SCHEDULE` / `<name>`, its record as JSON.

Listing is one Query of the `SCHEDULE` partition (a few items, read by each worker at
most every `schedule_interval`); `save_schedule` is one UpdateItem conditioned on the
version the caller read, so two workers advancing one schedule cannot both win.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from pynamodb.expressions.operand import Path

from orchestrator.errors import ScheduleExistsError, ScheduleNotFoundError, SchemaError
from orchestrator.store.dynamodb.base import DynamoDBBase
from orchestrator.store.dynamodb.connection import DynamoCallError
from orchestrator.store.records import SCHEMA_VERSION
from orchestrator.store.records.flow import ScheduleRecord

__all__ = ["ScheduleOps"]

_PK = "SCHEDULE"


def _record(raw: dict[str, Any]) -> ScheduleRecord:
    version = int(raw.get("v", {}).get("N", "0"))
    if version > SCHEMA_VERSION:  # never half-read an item of a newer SDK
        raise SchemaError.newer(f"schedule item {raw['SK']['S']!r}", version, SCHEMA_VERSION)
    return replace(ScheduleRecord.from_json(json.loads(raw["body"]["S"])), version=int(raw["version"]["N"]))


class ScheduleOps(DynamoDBBase):
    """The schedule half of `FlowStore` (see the module docstring)."""

    def _item(self, record: ScheduleRecord) -> dict[str, Any]:
        return {**self.key(_PK, record.name), "v": {"N": str(SCHEMA_VERSION)}, "kind": {"S": "schedule"},
                "version": {"N": str(record.version)}, "body": {"S": json.dumps(record.to_json())}}

    async def put_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        stored = replace(record, version=1, created_at=record.created_at or self.clock.now())
        try:
            await self._caller.call("PutItem", {"TableName": self.table, "Item": self._item(stored),
                                                "ConditionExpression": "attribute_not_exists(PK)"})
        except DynamoCallError as exc:
            if exc.condition_failed:
                raise ScheduleExistsError.exists(record.name, str(self.describe())) from None
            raise self._caller.to_error(exc) from exc
        return stored

    async def get_schedule(self, name: str) -> ScheduleRecord:
        raw = await self.get_raw(_PK, name)
        if raw is None:
            raise ScheduleNotFoundError.missing(name, str(self.describe()))
        return _record(raw)

    async def list_schedules(self) -> list[ScheduleRecord]:
        raws, _ = await self.query_raw(_PK, Path("PK") == _PK)
        return sorted((_record(r) for r in raws), key=lambda r: r.name)

    async def save_schedule(self, record: ScheduleRecord) -> ScheduleRecord | None:
        stored = replace(record, version=record.version + 1)
        try:
            await self._caller.call("PutItem", {
                "TableName": self.table, "Item": self._item(stored),
                "ConditionExpression": "attribute_exists(PK) AND version = :seen",
                "ExpressionAttributeValues": {":seen": {"N": str(record.version)}}})
        except DynamoCallError as exc:
            if not exc.condition_failed:
                raise self._caller.to_error(exc) from exc
            await self.get_schedule(record.name)  # ScheduleNotFoundError if it was deleted
            return None
        return stored

    async def delete_schedule(self, name: str) -> None:
        try:
            await self._caller.call("DeleteItem", {"TableName": self.table, "Key": self.key(_PK, name),
                                                   "ConditionExpression": "attribute_exists(PK)"})
        except DynamoCallError as exc:
            if exc.condition_failed:
                raise ScheduleNotFoundError.missing(name, str(self.describe())) from None
            raise self._caller.to_error(exc) from exc
