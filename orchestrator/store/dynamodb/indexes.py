"""The indexes added after the table shipped (GSI3 by user, GSI4 by type) and their keys on old sessions.

A session written before an index existed lacks the index's key attributes, so the index
would never show it. `write_index_keys` finds every session through the status index
(GSI1: every status, every shard a configuration may have used; one Query per page, never
a Scan) and SETs the missing keys, each with one conditional UpdateItem. `init` calls it
before UpdateTable creates the index (`schema._add_index`).
"""

from __future__ import annotations

from typing import Any

import anyio

from orchestrator.store.config import DynamoDBConfig
from orchestrator.store.dynamodb.connection import Caller, DynamoCallError
from orchestrator.store.dynamodb.models import GSI1, GSI3, GSI4, gsi3, gsi4
from orchestrator.store.records import SessionStatus

__all__ = ["ADDED_INDEXES", "write_index_keys"]

#: Index -> the `orchestrator list` option it serves.
ADDED_INDEXES = {GSI3: "user", GSI4: "type"}
#: Every shard count `DynamoDBConfig.status_shards` allows: an old session may sit in any.
_MAX_SHARDS = 64
_CONCURRENT_WRITES = 16


def _keys(name: str, raw: dict[str, Any], shards: int) -> tuple[str, str] | None:
    """The index keys a session lacks, or None (it has them, or no value to index)."""
    if f"{name}PK" in raw:
        return None
    sid = raw["PK"]["S"].split("#", 1)[1]
    created = float(raw["created_at"]["N"])
    if name == GSI3 and "user_id" in raw:
        return gsi3(raw["user_id"]["S"], sid, created)
    if name == GSI4 and "pipeline_type" in raw:
        return gsi4(raw["pipeline_type"]["S"], sid, created, shards)
    return None


async def write_index_keys(caller: Caller, config: DynamoDBConfig, name: str) -> int:
    """SET `name`'s keys on every session that lacks them; returns how many were written."""
    written = 0
    limiter = anyio.CapacityLimiter(_CONCURRENT_WRITES)

    async def write(raw: dict[str, Any], keys: tuple[str, str]) -> None:
        nonlocal written
        params = {
            "TableName": config.table_name, "Key": {"PK": raw["PK"], "SK": raw["SK"]},
            "UpdateExpression": "SET #pk = :pk, #sk = :sk", "ConditionExpression": "attribute_exists(PK)",
            "ExpressionAttributeNames": {"#pk": f"{name}PK", "#sk": f"{name}SK"},
            "ExpressionAttributeValues": {":pk": {"S": keys[0]}, ":sk": {"S": keys[1]}},
        }
        async with limiter:
            try:
                await caller.call("UpdateItem", params)
                written += 1
            except DynamoCallError as exc:
                if not exc.condition_failed:  # deleted meanwhile (purge, TTL): nothing to index
                    raise caller.to_error(exc) from exc

    for status in SessionStatus:
        for shard in range(_MAX_SHARDS):
            params: dict[str, Any] = {
                "TableName": config.table_name, "IndexName": GSI1,
                "KeyConditionExpression": "GSI1PK = :pk",
                "ExpressionAttributeValues": {":pk": {"S": f"STATUS#{status.value}#{shard}"}},
                "ProjectionExpression": f"PK, SK, created_at, user_id, pipeline_type, {name}PK",
            }
            while True:
                answer = await caller.call("Query", params)
                async with anyio.create_task_group() as tg:
                    for raw in answer.get("Items", []):
                        keys = _keys(name, raw, config.status_shards)
                        if keys is not None:
                            tg.start_soon(write, raw, keys)
                start = answer.get("LastEvaluatedKey")
                if not start:
                    break
                params["ExclusiveStartKey"] = start
    return written
