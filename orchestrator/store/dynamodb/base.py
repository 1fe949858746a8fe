"""Shared machinery of the DynamoDB store: construction, request builders, and reads.

`DynamoDBBase` binds the models and the choke point (`Caller`) for one table, builds
PynamoDB condition/update expressions into request parameters, and reads sessions and
tasks back with the visibility rules of DESIGN.md §5/§6 (creation token, adoption of
tasks added at run time, chunked outputs named by their completion, TTL filtering).
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import anyio
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.operand import Path
from pynamodb.expressions.update import Action, Update

from orchestrator.clock import Clock
from orchestrator.codec import Codec
from orchestrator.errors import OrchestratorError, SessionNotFoundError, TaskNotFoundError
from orchestrator.store.config import DynamoDBConfig
from orchestrator.store.dynamodb.connection import Caller, DynamoCallError
from orchestrator.store.dynamodb.encoding import ItemCodec, Staged
from orchestrator.store.dynamodb.expressions import Expressions
from orchestrator.store.dynamodb.models import bind_models, session_pk, task_range, task_sk
from orchestrator.store.dynamodb.schema import meta_table
from orchestrator.store import rules
from orchestrator.store.records import (
    Edge,
    Event,
    SessionRecord,
    SessionSnapshot,
    SignalRecord,
    StoreDescription,
    TaskRecord,
    TaskStatus,
)

__all__ = ["DynamoDBBase", "gather", "put"]

T = TypeVar("T")
log = logging.getLogger("orchestrator.store.dynamodb")
_BATCH = 25  # BatchWriteItem's limit
_BATCH_GET = 100  # BatchGetItem's limit
_KNOWN_SESSIONS = 1024


def put(attr: Any, value: Any) -> Action:
    """SET the attribute, or REMOVE it for None (absent means None in this table)."""
    if value is None:
        return attr.remove()  # type: ignore[no-any-return]
    return attr.set(value)  # type: ignore[no-any-return]


async def gather(funcs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run concurrently; re-raise the failure of the earliest function given (not an
    ExceptionGroup), so which error a caller sees does not depend on response timing."""
    results: list[Any] = [None] * len(funcs)
    errors: dict[int, BaseException] = {}

    async def run(i: int, fn: Callable[[], Awaitable[T]]) -> None:
        try:
            results[i] = await fn()
        except Exception as exc:  # noqa: BLE001 - collected and re-raised below, earliest one wins
            errors[i] = exc

    async with anyio.create_task_group() as tg:
        for i, fn in enumerate(funcs):
            tg.start_soon(run, i, fn)
    if errors:
        raise errors[min(errors)]
    return results


class DynamoDBBase:
    """Construction, request building and reads shared by the store's operations."""

    codec: Codec
    clock: Clock

    def __init__(self, config: DynamoDBConfig, *, clock: Clock, codec: Codec,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.clock = clock
        self.codec = codec
        self.models = bind_models(config, meta_table(config))
        self._rng = rng or random.Random()
        self._caller = Caller(self.models.connection.connection, config, clock, self._rng)
        self._transactions = config.transactions
        self.items = ItemCodec(self.models, codec, config.table_name, config.status_shards)
        self.exprs = Expressions()  # the hot paths' expressions, rendered once per shape
        # Create the botocore client now, in this thread: PynamoDB creates it lazily and
        # without a lock, and hooks registered on `client_events` must see every request.
        self._client = self.models.connection.connection.client
        self._closed = False
        # Task ids seen per session (LRU): write_tasks checks unseen ids with a read before
        # its first write, so an unknown task fails the batch without writing any of it.
        self._known: OrderedDict[str, set[str]] = OrderedDict()
        # Tasks staged by (session, parent, fence, attempt): they join `_known` when that
        # attempt's COMPLETE applies (adoption), never before; until then they are unknown.
        self._staged: dict[tuple[str, str, int, int], set[str]] = {}
        # Per session (LRU): the fence its last load read, and whether an item then carried
        # an expiry (SessionOps.claim_session: whether a claim must look for expiries).
        self._expiring: OrderedDict[str, tuple[int, bool]] = OrderedDict()
        self._event_keys = rules.StoreEventKeys()

    def stage(self, sid: str, parent: str, fence: int, attempt: int, task_ids: Iterable[str]) -> None:
        self._staged.setdefault((sid, parent, fence, attempt), set()).update(task_ids)

    def adopted(self, sid: str, parent: str, fence: int, attempt: int) -> None:
        ids = self._staged.pop((sid, parent, fence, attempt), None)
        if ids:
            self.remember(sid, ids)

    def remember(self, sid: str, task_ids: Iterable[str]) -> None:
        known = self._known.setdefault(sid, set())
        known.update(task_ids)
        self._known.move_to_end(sid)
        while len(self._known) > _KNOWN_SESSIONS:
            gone, _ = self._known.popitem(last=False)
            for key in [k for k in self._staged if k[0] == gone]:
                del self._staged[key]

    def unknown(self, sid: str, task_ids: Iterable[str]) -> list[str]:
        """The ids not yet seen in `sid`, each once, in the order given."""
        known = self._known.get(sid, set())
        return list(dict.fromkeys(t for t in task_ids if t not in known))

    @property
    def client_events(self) -> Any:
        """The botocore event emitter of this store's client (a public seam).

        Register `before-call.dynamodb.<Op>` / `after-call.dynamodb.<Op>` handlers on it
        to count requests, read ConsumedCapacity, or inject faults (throttling, a lost
        response) on the real wire path.
        """
        return self._client.meta.events

    @property
    def transactions(self) -> bool:
        """Whether writes go as TransactWriteItems: the config's choice (`transactions=`)
        until the store answers that it has no transactions (then single-item writes)."""
        return self._transactions

    async def transact(self, items: list[dict[str, Any]], *, session: str | None = None) -> bool:
        """One TransactWriteItems; False if the store has no transactions, which turns them off
        for this store (logged once): the caller then writes the same items one by one."""
        try:
            await self._caller.call("TransactWriteItems", {"TransactItems": items}, session=session)
        except DynamoCallError as exc:
            if not exc.unsupported:
                raise
            if self._transactions:
                self._transactions = False
                log.warning(
                    "DynamoDB at %s has no transactions (TransactWriteItems answered %s: %s); writing single "
                    "items from now on, with the same conditions. Add `&transactions=0` to the store URL to "
                    "skip this probe %s", self.config.endpoint or self.config.region, exc.code, exc.message,
                    self._caller.context("TransactWriteItems", session))
            return False
        return True

    # -- the events operations record (rules.history) ---------------------------------------

    def event_item(self, event: Event) -> dict[str, Any]:
        """An event as its item (keyed and size-checked), built before the write it records."""
        e = self._event_keys.stamp(event)
        return self.items.event_item(e, rules.event_data(self.codec, e), int(e.at + self.config.ttl_days * 86400))

    async def record_after(self, item: dict[str, Any], session: str) -> None:
        """Write an operation's event right after its change, when no transaction carried it.

        Events are statistics-grade (DESIGN.md §3): the change has landed and is the
        result, so a failure here is logged, never raised (a caller's retry would repeat
        the change). The key is fixed, so a resent request writes the same event once.
        """
        try:
            await self._caller.call("PutItem", self.put_params(item), session=session)
        except (DynamoCallError, OrchestratorError):
            log.warning("session %s: the event of an operation was not written", session, exc_info=True)

    def describe(self) -> StoreDescription:
        return StoreDescription("dynamodb", self.config.table_name, self.config.region, self.config.endpoint)

    @property
    def table(self) -> str:
        return self.config.table_name

    # -- request builders -----------------------------------------------------------------

    @staticmethod
    def expressions(condition: Condition | None = None, actions: Sequence[Action] = (),
                    key_condition: Condition | None = None) -> dict[str, Any]:
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        out: dict[str, Any] = {}
        if key_condition is not None:
            out["KeyConditionExpression"] = key_condition.serialize(names, values)
        if condition is not None:
            out["ConditionExpression"] = condition.serialize(names, values)
        if actions:
            out["UpdateExpression"] = Update(*actions).serialize(names, values)
        if names:
            out["ExpressionAttributeNames"] = {v: k for k, v in names.items()}
        if values:
            out["ExpressionAttributeValues"] = values
        return out

    def key(self, pk: str, sk: str) -> dict[str, Any]:
        return {"PK": {"S": pk}, "SK": {"S": sk}}

    def update_params(self, pk: str, sk: str, actions: Sequence[Action], condition: Condition | None,
                      *, return_new: bool = False) -> dict[str, Any]:
        params = {"TableName": self.table, "Key": self.key(pk, sk), **self.expressions(condition, actions)}
        if return_new:
            params["ReturnValues"] = "ALL_NEW"
        return params

    def put_params(self, item: dict[str, Any], condition: Condition | None = None) -> dict[str, Any]:
        return {"TableName": self.table, "Item": item, **self.expressions(condition)}

    async def get_raw(self, pk: str, sk: str, *, session: str | None = None,
                      task: str | None = None) -> dict[str, Any] | None:
        answer = await self._caller.call(
            "GetItem", {"TableName": self.table, "Key": self.key(pk, sk), "ConsistentRead": True},
            session=session, task=task)
        item: dict[str, Any] | None = answer.get("Item")
        return item

    async def query_raw(self, pk: str, key_condition: Condition, *, index: str | None = None,
                        consistent: bool = True, limit: int | None = None, forward: bool = True,
                        start: dict[str, Any] | None = None, session: str | None = None, task: str | None = None,
                        projection: str | None = None, pages: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Items of one Query (all pages when `pages`), and the key to continue from."""
        params: dict[str, Any] = {"TableName": self.table, **self.expressions(key_condition=key_condition)}
        if index:
            params["IndexName"] = index
        else:
            params["ConsistentRead"] = consistent
        if limit:
            params["Limit"] = limit
        if not forward:
            params["ScanIndexForward"] = False
        if projection:
            params["ProjectionExpression"] = projection
            if "#ttl" in projection:  # TTL is a reserved word in expressions
                params["ExpressionAttributeNames"] = {**params.get("ExpressionAttributeNames", {}), "#ttl": "ttl"}
        items: list[dict[str, Any]] = []
        while True:
            if start:
                params["ExclusiveStartKey"] = start
            answer = await self._caller.call("Query", params, session=session, task=task)
            items.extend(answer.get("Items", []))
            start = answer.get("LastEvaluatedKey")
            if not start or not pages:
                return items, start

    async def batch_put(self, items: Sequence[dict[str, Any]], *, deletes: Sequence[dict[str, Any]] = (),
                        session: str | None = None) -> None:
        """BatchWriteItem in groups of 25, sent concurrently (bounded by the connection pool),
        resending UnprocessedItems with backoff; no order among the groups."""
        requests = [{"PutRequest": {"Item": i}} for i in items] + [{"DeleteRequest": {"Key": k}} for k in deletes]

        async def group(pending: list[dict[str, Any]]) -> None:
            for attempt in range(self.config.max_attempts + 1):
                answer = await self._caller.call("BatchWriteItem", {"RequestItems": {self.table: pending}},
                                                 session=session)
                pending = answer.get("UnprocessedItems", {}).get(self.table, [])
                if not pending:
                    return
                await self._caller.pause(attempt + 1, "BatchWriteItem", session=session)  # backoff, deadline
            from orchestrator.errors import StoreUnavailableError

            raise StoreUnavailableError(
                f"DynamoDB kept {len(pending)} of a batch unprocessed after {self.config.max_attempts} "
                f"resends (throttled); retry later or raise the table's capacity "
                f"{self._caller.context('BatchWriteItem', session)}", session_id=session, table=self.table)

        groups = [requests[i:i + _BATCH] for i in range(0, len(requests), _BATCH)]
        await gather([lambda g=g: group(g) for g in groups])  # type: ignore[misc]

    async def batch_get(self, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The items of `keys` that exist, strongly consistent: BatchGetItem in groups of 100
        (sent concurrently), resending UnprocessedKeys with backoff; in no particular order."""

        async def group(pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            for attempt in range(self.config.max_attempts + 1):
                request = {self.table: {"Keys": pending, "ConsistentRead": True}}
                answer = await self._caller.call("BatchGetItem", {"RequestItems": request})
                found += answer.get("Responses", {}).get(self.table, [])
                pending = answer.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                if not pending:
                    return found
                await self._caller.pause(attempt + 1, "BatchGetItem")  # backoff, deadline
            from orchestrator.errors import StoreUnavailableError

            raise StoreUnavailableError(
                f"DynamoDB kept {len(pending)} keys of a batch read unprocessed after {self.config.max_attempts} "
                f"resends (throttled); retry later or raise the table's capacity "
                f"{self._caller.context('BatchGetItem', None)}", table=self.table)

        groups = [list(keys[i:i + _BATCH_GET]) for i in range(0, len(keys), _BATCH_GET)]
        out = await gather([lambda g=g: group(g) for g in groups])  # type: ignore[misc]
        return [item for found in out for item in found]

    # -- reads ------------------------------------------------------------------------------

    def expired(self, raw: dict[str, Any], now: float) -> bool:
        ttl = raw.get("ttl", {}).get("N")
        return rules.expired(None if ttl is None else float(ttl), now)

    def session_or_missing(self, raw: dict[str, Any] | None, sid: str, now: float) -> SessionRecord:
        if raw is None or self.expired(raw, now):
            raise SessionNotFoundError.missing(sid, str(self.describe()))
        return self.items.session(raw, sid)

    async def read_session(self, sid: str) -> SessionRecord:
        raw = await self.get_raw(session_pk(sid), "META", session=sid)
        return self.session_or_missing(raw, sid, self.clock.now())

    async def partition(self, sid: str) -> list[dict[str, Any]]:
        """The session's META and task-side items: one consistent Query per MB (`SK >= META`)."""
        cond = (Path("PK") == session_pk(sid)) & (Path("SK") >= "META")
        items, _ = await self.query_raw(session_pk(sid), cond, session=sid)
        return items

    def snapshot(self, sid: str, raws: list[dict[str, Any]]) -> SessionSnapshot:
        """Assemble a snapshot: only items of the creation and adopted additions count."""
        now = self.clock.now()
        meta = next((r for r in raws if r["SK"]["S"] == "META"), None)
        session = self.session_or_missing(meta, sid, now)
        assert meta is not None
        tok = meta.get("tok", {}).get("S")
        tasks: dict[str, dict[str, Any]] = {}
        edges: list[dict[str, Any]] = []
        chunks: dict[str, dict[str, Any]] = {}
        signals: list[dict[str, Any]] = []
        for raw in raws:
            sk = raw["SK"]["S"]
            parts = sk.split("#")
            if sk == "META":
                continue
            if parts[0] == "TASK" and len(parts) == 2:
                kind = "task"
                tasks[parts[1]] = raw
            elif parts[0] == "TASK" and len(parts) == 4 and parts[2] == "DEP":
                kind = "edge"
                edges.append(raw)
            elif parts[0] == "TASK" and len(parts) == 5 and parts[2] == "CHUNK":
                kind = "chunk"
                chunks[sk] = raw
            elif parts[0] == "TASK" and len(parts) == 4 and parts[2] == "SIGNAL":
                kind = "signal"
                signals.append(raw)
            else:
                kind = "unknown"
            # Every item under the session's key is checked, visible or not: a foreign
            # or newer item refuses the whole read instead of being half-read or skipped.
            self.items.check(raw, kind, session=sid, task=parts[1] if len(parts) > 1 else None)
        visible = self.visible_tasks(tasks, tok, now)
        records: dict[str, TaskRecord] = {}
        for tid in visible:
            records[tid] = self.task_record(sid, tid, tasks[tid], chunks)
        edge_list = []
        for raw in edges:
            edge = self.items.edge(raw, sid)
            owner = tasks.get(edge.task_id)
            if edge.task_id in visible and owner is not None and self._same_origin(raw, owner, tok):
                edge_list.append(edge)
        sigs: dict[tuple[str, str], SignalRecord] = {}
        for raw in signals:
            sig = self.items.signal(raw, sid)
            if sig.seq <= session.signal_seq and not self.expired(raw, now):
                sigs[(sig.task_id, sig.name)] = sig
        self.remember(sid, records)
        self._expiring[sid] = (session.fence, any("ttl" in raw for raw in raws if raw["SK"]["S"] != "META"))
        self._expiring.move_to_end(sid)
        if len(self._expiring) > _KNOWN_SESSIONS:
            self._expiring.popitem(last=False)
        return SessionSnapshot(session=session, tasks=records, edges=tuple(sorted(edge_list, key=_edge_key)),
                               signals=sigs)

    def _same_origin(self, edge: dict[str, Any], task: dict[str, Any], tok: str | None) -> bool:
        es, ts = self.items.staged(edge), self.items.staged(task)
        if es.added_by is None:
            return ts.added_by is None and edge.get("tok", {}).get("S") == tok
        return es == ts

    def visible_tasks(self, tasks: dict[str, dict[str, Any]], tok: str | None, now: float) -> set[str]:
        """Tasks of the creation (matching token), plus staged ones their parent's completion adopted."""
        visible: set[str] = set()
        staged: dict[str, Staged] = {}
        for tid, raw in tasks.items():
            if self.expired(raw, now):
                continue
            st = self.items.staged(raw)
            if st.added_by is None:
                if raw.get("tok", {}).get("S") == tok:
                    self.items.check(raw, "task", task=tid)
                    visible.add(tid)
            else:
                staged[tid] = st
        changed = True
        while changed:
            changed = False
            for tid, st in list(staged.items()):
                parent = tasks.get(st.added_by or "")
                if st.added_by in visible and parent is not None and self.adopts(parent, st):
                    visible.add(tid)
                    del staged[tid]
                    changed = True
        return visible

    @staticmethod
    def adopts(parent: dict[str, Any], st: Staged) -> bool:
        """Whether `parent`'s stored completion is the one that added the staged item."""
        return (parent.get("status", {}).get("S") == TaskStatus.COMPLETED.value
                and int(parent["fence"]["N"]) == st.added_fence and int(parent["attempt"]["N"]) == st.added_attempt)

    def task_record(self, sid: str, tid: str, raw: dict[str, Any], chunks: dict[str, dict[str, Any]]) -> TaskRecord:
        record = self.items.task(raw, sid, tid)
        if record.output_ref is not None:
            return self.items.task(raw, sid, tid, self.items.join_chunks(sid, tid, record.output_ref, chunks), True)
        return record

    async def read_task(self, sid: str, tid: str) -> TaskRecord:
        """One task, strongly consistent, its chunks joined; TaskNotFoundError unless visible."""
        low, high = task_range(tid)
        cond = (Path("PK") == session_pk(sid)) & Path("SK").between(low, high)

        async def meta() -> dict[str, Any] | None:
            return await self.get_raw(session_pk(sid), "META", session=sid)

        async def own() -> list[dict[str, Any]]:
            items, _ = await self.query_raw(session_pk(sid), cond, session=sid, task=tid)
            return items

        out: list[Any] = await gather([meta, own])
        now = self.clock.now()
        meta_raw: dict[str, Any] | None = out[0]
        self.session_or_missing(meta_raw, sid, now)
        assert meta_raw is not None
        items: list[dict[str, Any]] = out[1]
        task_raw = next((r for r in items if r["SK"]["S"] == task_sk(tid)), None)
        if task_raw is not None and not self.expired(task_raw, now):
            if await self._visible(sid, tid, task_raw, meta_raw.get("tok", {}).get("S")):
                chunks = {r["SK"]["S"]: r for r in items if "#CHUNK#" in r["SK"]["S"]}
                self.remember(sid, [tid])
                return self.task_record(sid, tid, task_raw, chunks)
        raise TaskNotFoundError.missing(sid, tid, str(self.describe()))

    async def _visible(self, sid: str, tid: str, raw: dict[str, Any], tok: str | None) -> bool:
        self.items.check(raw, "task", session=sid, task=tid)
        st = self.items.staged(raw)
        seen = {tid}
        while st.added_by is not None:
            if st.added_by in seen:
                return False
            seen.add(st.added_by)
            parent = await self.get_raw(session_pk(sid), task_sk(st.added_by), session=sid, task=st.added_by)
            if parent is None or not self.adopts(parent, st):
                return False
            st = self.items.staged(parent)
            raw = parent
        return bool(raw.get("tok", {}).get("S") == tok)


def _edge_key(e: Edge) -> tuple[str, str]:
    return e.task_id, e.depends_on
