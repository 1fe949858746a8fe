"""DynamoDB: cached agent outputs (`CacheStore`), one item `CACHE#<key>` / `ENTRY` each.

A put is one PutItem (replacing is harmless: any genuine completion's output is valid
for its key); a read is one consistent GetItem that ignores an expired entry, since TTL
deletes late.
"""

from __future__ import annotations

import math

from orchestrator.errors import SchemaError
from orchestrator.store import rules
from orchestrator.store.dynamodb.base import DynamoDBBase
from orchestrator.store.records import SCHEMA_VERSION, CacheEntry
from orchestrator.store.rules import Payload
from orchestrator.store.rules.cache import cacheable, readable

__all__ = ["CacheOps", "cache_pk"]

_SK = "ENTRY"


def cache_pk(key: str) -> str:
    return f"CACHE#{key}"


class CacheOps(DynamoDBBase):
    """`get_cached` and `put_cached`."""

    async def get_cached(self, key: str) -> CacheEntry | None:
        raw = await self.get_raw(cache_pk(key), _SK)
        if raw is None:
            return None
        version = int(raw.get("v", {}).get("N", "0"))
        if version > SCHEMA_VERSION:
            raise SchemaError.newer(f"cache entry {key} in {self.describe()}", version, SCHEMA_VERSION)
        expires_at = float(raw["exp"]["N"])
        if not readable(expires_at, self.clock.now()):
            return None
        sid, tid = raw.get("sid", {}).get("S"), raw.get("tid", {}).get("S")
        return CacheEntry(key, raw["agent"]["S"], self.codec.decode(raw["out"]["S"]), float(raw["created"]["N"]),
                          expires_at, sid, tid)

    async def put_cached(self, entry: CacheEntry) -> None:
        text = rules.encode(self.codec, Payload.OUTPUT, entry.output, session_id=entry.session_id,
                            task_id=entry.task_id)
        if not cacheable(text):
            return
        item = {
            **self.key(cache_pk(entry.key), _SK), "v": {"N": str(SCHEMA_VERSION)}, "kind": {"S": "cache"},
            "agent": {"S": entry.agent}, "out": {"S": text}, "created": {"N": repr(entry.created_at)},
            "exp": {"N": repr(entry.expires_at)}, "ttl": {"N": str(math.ceil(entry.expires_at))},
        }
        if entry.session_id:
            item["sid"] = {"S": entry.session_id}
        if entry.task_id:
            item["tid"] = {"S": entry.task_id}
        await self._caller.call("PutItem", self.put_params(item), session=entry.session_id, task=entry.task_id)
