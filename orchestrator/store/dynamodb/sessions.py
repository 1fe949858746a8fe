"""Session operations on DynamoDB: the rulebook's `SessionChange` as one conditional UpdateItem.

`expect` becomes the condition expression, `changes` the update expression, and the
status-index keys follow `change.index_time()`. Fenced operations are written without
a read; when a condition fails the session is re-read (consistently) and either our
own write is found there (a lost response) or the rulebook decides again on what was
read, which raises the same refusal SQLite raises.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from pynamodb.expressions.operand import Path

from orchestrator.errors import SessionStateError, ValidationError
from orchestrator.store import rules
from orchestrator.store.dynamodb.base import DynamoDBBase, gather
from orchestrator.store.dynamodb.connection import DynamoCallError
from orchestrator.store.dynamodb.encoding import Staged, progress_json
from orchestrator.store.dynamodb.expressions import Act, Cond, Do
from orchestrator.store.dynamodb.models import (
    GSI1,
    GSI2,
    GSI3,
    GSI4,
    created_sk,
    fmt_time,
    gsi1,
    gsi3,
    session_pk,
    type_pk,
)
from orchestrator.store.records import (
    ClaimPolicy,
    Lease,
    NewSession,
    NewTask,
    Page,
    Progress,
    SessionRecord,
    SessionStatus,
    check_id,
)
from orchestrator.store.rules import Payload, Position, Retained, SessionChange, SessionIndex, SessionOp

__all__ = ["SessionOps"]

R = TypeVar("R")
_TX_MAX = 100

#: SessionRecord fields whose attribute has another name in the table.
_ATTRIBUTE = {"lease_expires_at": "lease_expires", "expires_at": "ttl"}
_SET_GSI1PK, _SET_GSI1SK = Act(Do.SET, ("GSI1PK",)), Act(Do.SET, ("GSI1SK",))
_PK_EXISTS = (Cond.EXISTS, ("PK",))


class SessionOps(DynamoDBBase):
    """Creation and every session transition; see the module docstring."""

    #: Negative-control seam (tests only): False writes claims without a condition.
    _cas_claims: bool = True

    # -- the one way a session item changes ---------------------------------------------------

    def _stored(self, name: str, value: Any, encoded: Mapping[str, str]) -> Any:
        """A record field's value as the table stores it."""
        if name in encoded:
            return encoded[name]
        if isinstance(value, SessionStatus):
            return value.value
        if name == "progress":
            return progress_json(value)
        if name == "current_agents":
            return json.dumps(list(value))
        if name == "trace_context":
            return json.dumps(dict(value))
        if name == "expires_at" and value is not None:
            return int(value)
        return value

    def _params(self, change: SessionChange, encoded: Mapping[str, str], *, conditioned: bool,
                return_new: bool) -> dict[str, Any]:
        """The UpdateItem of `change`: `expect` as the condition, `changes` as the update
        (expressions rendered once per shape), the status-index keys from `index_time()`."""
        acts: list[Act] = []
        values: list[Any] = []
        for name, value in change.changes.items():
            attr = (_ATTRIBUTE.get(name, name),)
            if isinstance(value, Retained):  # the retention is stored on the item: no read needed
                acts.append(Act(Do.PLUS, attr, ("ttl_seconds",)))
                values.append(int(value.since))
                continue
            stored = self._stored(name, value, encoded)
            if stored is None:
                acts.append(Act(Do.REMOVE, attr))
            else:
                acts.append(Act(Do.SET, attr))
                values.append(stored)
        index = change.index_time()
        if index is not None:
            pk, sk = gsi1(index[0].value, change.session_id, index[1], self.config.status_shards)
            acts += [_SET_GSI1PK, _SET_GSI1SK]
            values += [pk, sk]
        cond: list[tuple[Cond, tuple[str, ...]]] = []
        cond_values: list[Any] = []
        if conditioned:
            cond.append(_PK_EXISTS)
            for name, value in change.expect.items():
                attr = (_ATTRIBUTE.get(name, name),)
                if value is None:
                    cond.append((Cond.ABSENT, attr))
                else:
                    cond.append((Cond.EQ, attr))
                    cond_values.append(self._stored(name, value, {}))
        params = {"TableName": self.table, "Key": self.key(session_pk(change.session_id), "META"),
                  **self.exprs.params(acts, values, cond, cond_values)}
        if return_new:
            params["ReturnValues"] = "ALL_NEW"
        return params

    async def _settle(self, op: SessionOp[R], *, encoded: Mapping[str, str] | None = None,
                      item_of: Callable[[SessionChange, float], dict[str, Any]] | None = None,
                      check: Callable[[], Awaitable[None]] | None = None, conditioned: bool = True,
                      seen: SessionRecord | None = None) -> R:
        """Decide and write `op`, re-reading and deciding again when the condition fails.

        `check` runs after the first read, before the first decision (the order SQLite
        checks in). `item_of` makes an item written with the session change (the signal):
        in one transaction where the store has them, else before the change (readers
        ignore it until META's signal sequence reaches it). The operation's event
        (`op.event`) goes in the same transaction, else right after the change. `seen`: a
        record to decide on instead of the first read (a claim's `rules.claim_basis`).
        """
        sid = op.session_id
        current = seen if seen is not None else await self.read_session(sid) if op.reads_first else None
        if check is not None:
            await check()
        attempts = self.config.max_attempts
        for _ in range(attempts):
            now = self.clock.now()
            decided_on = current
            change = op.decide(current, now)
            if change is None:
                assert current is not None, "an operation decided without a read always writes"
                return op.result(current)
            item = None if item_of is None else item_of(change, now)
            event = op.event(current, change, now)
            event_item = None if event is None else self.event_item(event)
            extra = [i for i in (item, event_item) if i is not None]
            # The event goes in the change's transaction, unless the change starts the retention:
            # its expiry is computed by DynamoDB from the stored `ttl_seconds`, which only the
            # UpdateItem's answer returns (a cancel ending the session at once; it then writes
            # every item's expiry anyway, so one PutItem more is noise).
            starts_retention = any(isinstance(v, Retained) for v in change.changes.values())
            carried = bool(extra) and self.transactions and not (event_item is not None and starts_retention)
            try:
                if carried and await self.transact([
                    *({"Put": self.put_params(i)} for i in extra),
                    {"Update": self._params(change, encoded or {}, conditioned=conditioned, return_new=False)},
                ], session=sid):
                    assert current is not None
                    return op.settled(decided_on, change.apply(current, 0.0))
                carried = False
                if item is not None:
                    await self._caller.call("PutItem", self.put_params(item), session=sid)
                params = self._params(change, encoded or {}, conditioned=conditioned, return_new=True)
                answer = await self._caller.call("UpdateItem", params, session=sid)
                if event_item is not None:
                    await self.record_after(event_item, sid)
                return op.settled(decided_on, self.items.session(answer["Attributes"], sid))
            except DynamoCallError as exc:
                if not exc.condition_failed:
                    raise self._caller.to_error(exc, sid) from exc
            current = await self.read_session(sid)
            if change.shown_by(current):
                if event_item is not None and not carried:
                    await self.record_after(event_item, sid)
                return op.settled(decided_on, current)  # our write landed; its response was lost
        raise SessionStateError.kept_changing(sid, op.action, attempts)

    # -- creation ---------------------------------------------------------------------------

    async def create_session(self, session: NewSession, tasks: Sequence[NewTask], *, owner: str | None = None,
                             lease_seconds: float | None = None) -> SessionRecord:
        sid = session.session_id
        meta, body, tok = self.creation_items(session, tasks, owner=owner, lease_seconds=lease_seconds)
        record = self.items.session(meta, sid)  # exactly what is written; no read needed
        absent = self.models.session.PK.does_not_exist()
        event = self.event_item(rules.created_event(record, len(tasks)))
        carried = self.transactions and len(body) + 2 <= _TX_MAX  # the event rides in the transaction
        try:
            if not (carried and await self.transact([{"Put": self.put_params(i)} for i in [*body, event]]
                                                    + [{"Put": self.put_params(meta, absent)}], session=sid)):
                carried = False
                # Pre-check: tasks of an existing session must not be overwritten below.
                if await self.get_raw(session_pk(sid), "META", session=sid) is not None:
                    raise SessionStateError.exists(sid, str(self.describe()))
                await self.batch_put(body, session=sid)
                # META last, naming the token: until it lands, readers see nothing.
                await self._caller.call("PutItem", self.put_params(meta, absent), session=sid)
        except DynamoCallError as exc:
            if not exc.condition_failed:
                raise self._caller.to_error(exc, sid) from exc
            stored = await self.get_raw(session_pk(sid), "META", session=sid)
            if stored is None or stored.get("tok", {}).get("S") != tok:
                raise SessionStateError.exists(sid, str(self.describe())) from None
            # our own creation landed and its response was lost
        if not carried:  # never before META landed: an event must not appear in a session that is not ours
            await self.record_after(event, sid)
        self.remember(sid, [t.task_id for t in tasks])
        return record

    def creation_items(self, session: NewSession, tasks: Sequence[NewTask], *, owner: str | None = None,
                       lease_seconds: float | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
        """A new session's META item, its task and edge items, and the creation token they carry."""
        sid = session.session_id
        rules.check_graph(((t.task_id, t.depends_on) for t in tasks), where=f"session {sid}", session_id=sid)
        record = rules.new_session_record(session, len(tasks), owner=owner, lease_seconds=lease_seconds,
                                          now=self.clock.now())
        input_text = rules.encode(self.codec, Payload.SESSION_INPUT, session.input, session_id=sid)
        metadata_text = rules.encode(self.codec, Payload.SESSION_METADATA, dict(session.metadata), session_id=sid)
        inputs = [rules.encode(self.codec, Payload.TASK_INPUT, t.input, session_id=sid, task_id=t.task_id)
                  for t in tasks]
        ttl = int(session.ttl_seconds if session.ttl_seconds is not None else self.config.ttl_days * 86400.0)
        tok = uuid.uuid4().hex
        meta = self.items.session_item(record, tok, ttl, input_text=input_text, metadata_text=metadata_text)
        body: list[dict[str, Any]] = []
        unstaged = Staged(None, None, None)
        for t, text in zip(tasks, inputs, strict=True):
            body.append(self.items.task_item(sid, t, tok, record.created_at, unstaged, text))
            body += [self.items.edge_item(sid, t.task_id, d, tok, unstaged) for d in t.depends_on]
        return meta, body, tok

    # -- transitions ------------------------------------------------------------------------

    async def get_session(self, session_id: str) -> SessionRecord:
        return await self.read_session(session_id)

    async def claim_session(self, session_id: str, owner: str, lease_seconds: float,
                            policy: ClaimPolicy = ClaimPolicy(), *, seen: SessionRecord | None = None) -> Lease:
        op = rules.Claim(session_id, owner, lease_seconds, policy)
        basis = rules.claim_basis(seen, session_id, self.clock.now(), policy)
        lease = await self._settle(op, conditioned=self._cas_claims, seen=basis)
        if self._items_may_expire(lease, policy):  # the session lives again: its items must not expire under it
            await self._retain_items(session_id, None)
        return lease

    def _items_may_expire(self, lease: Lease, policy: ClaimPolicy) -> bool:
        """Whether items of the session a claim took may carry an expiry to take off (one Query to find them).

        A session's end gives every item its expiry: a claim of a FAILED one takes it off.
        A redrive claim that crashed before it was done leaves a live session with expiring
        items, which a claim with `redrive_failed` repairs, unless this store's last load
        read the very record the claim took (same fence, so no end since) and found none.
        """
        previous = lease.previous
        if previous is None:
            return policy.redrive_failed
        if previous.status is SessionStatus.FAILED:
            return True
        return policy.redrive_failed and self._expiring.get(lease.session_id) != (previous.fence, False)

    async def renew_lease(self, lease: Lease, lease_seconds: float) -> tuple[Lease, SessionRecord]:
        return await self._settle(rules.Renew(lease.session_id, lease, lease_seconds))

    async def release_lease(self, lease: Lease) -> None:
        await self._settle(rules.Release(lease.session_id, lease))

    async def update_session(self, lease: Lease, *, progress: Progress | None = None,
                             current_agents: Sequence[str] | None = None, metadata: dict[str, Any] | None = None,
                             trace_context: dict[str, str] | None = None) -> None:
        sid = lease.session_id
        op = rules.Update(sid, lease, progress, current_agents, metadata, trace_context)
        encoded = {}
        if metadata is not None:
            encoded["metadata"] = rules.encode(self.codec, Payload.SESSION_METADATA, metadata, session_id=sid)
        await self._settle(op, encoded=encoded)

    async def finish_session(self, lease: Lease, status: SessionStatus, reason: str | None = None, *,
                             needs_human_reason: str | None = None) -> SessionRecord:
        record = await self._settle(rules.Finish(lease.session_id, lease, status, reason, needs_human_reason))
        await self._retain_items(record.session_id, record.expires_at)
        return record

    async def wait_session(self, lease: Lease, wake_at: float | None) -> bool:
        return await self._settle(rules.Wait(lease.session_id, lease, wake_at))

    async def request_cancel(self, session_id: str, reason: str) -> SessionRecord:
        record = await self._settle(rules.Cancel(session_id, reason))
        if record.status.is_final:  # nobody held it: cancelled at once
            await self._retain_items(session_id, record.expires_at)
        return record

    async def _retain_items(self, sid: str, expires_at: float | None) -> None:
        """Give every item of the session the session's expiry (None: take it away again).

        DynamoDB's TTL deletes items one by one, so each item carries the `ttl` of its
        session once it ends: nothing of it outlives its retention, even after META is
        gone. Costs one Query per MB of the partition and one UpdateItem per item whose
        `ttl` must change (a task, each dependency edge, chunk and signal); events keep an
        earlier expiry of their own.
        """
        pk = session_pk(sid)
        keys, _ = await self.query_raw(pk, Path("PK") == pk, projection="PK, SK, #ttl", session=sid)
        target = None if expires_at is None else int(expires_at)
        todo = []
        for raw in keys:
            sk = raw["SK"]["S"]
            have = raw.get("ttl", {}).get("N")
            current = None if have is None else int(float(have))
            if sk == "META" or current == target:
                continue
            if target is None and not sk.startswith("TASK#"):
                continue  # events keep their own expiry while the session lives again
            if target is not None and current is not None and current < target and sk.startswith("EVENT#"):
                continue
            todo.append(sk)
        item = self.models.task

        async def stamp(sk: str) -> None:
            action = item.ttl.remove() if target is None else item.ttl.set(target)
            params = self.update_params(pk, sk, [action], item.PK.exists())
            try:
                await self._caller.call("UpdateItem", params, session=sid)
            except DynamoCallError as exc:
                if not exc.condition_failed:  # deleted meanwhile (purge): nothing to keep
                    raise self._caller.to_error(exc, sid) from exc

        await gather([partial(stamp, sk) for sk in todo])

    async def set_needs_human(self, session_id: str, reason: str | None) -> SessionRecord:
        return await self._settle(rules.FlagNeedsHuman(session_id, reason))

    async def send_signal(self, session_id: str, task_id: str, name: str, payload: Any) -> int:
        sid = session_id
        op = rules.Signal(sid, task_id, name)
        text = rules.encode(self.codec, Payload.SIGNAL_PAYLOAD, payload, session_id=sid, task_id=task_id, name=name)

        async def task_exists() -> None:  # as a read sees it: a staged task is not there yet
            await self.read_task(sid, task_id)

        def signal_item(change: SessionChange, now: float) -> dict[str, Any]:
            return self.items.signal_item(sid, task_id, name, text, int(change.changes["signal_seq"]), now)

        return await self._settle(op, item_of=signal_item, check=task_exists)

    # -- listing ----------------------------------------------------------------------------

    async def list_sessions(self, status: SessionStatus, *, updated_before: float | None = None, limit: int = 100,
                            cursor: str | None = None) -> Page[SessionRecord]:
        rules.check_page_limit(limit)
        status = SessionStatus(status)
        shards = self.config.status_shards
        positions: dict[str, Any] = _decode_cursor(cursor) if cursor else {str(i): None for i in range(shards)}
        high = f"{fmt_time(updated_before)}#~" if updated_before is not None else "~"

        async def shard(i: int) -> tuple[int, list[dict[str, Any]], bool]:
            start = positions.get(str(i))
            pk = f"STATUS#{status.value}#{i}"
            cond = (Path("GSI1PK") == pk) & (Path("GSI1SK") <= high)
            items, more = await self.query_raw(pk, cond, index=GSI1, limit=limit, start=start, pages=False)
            return i, items, more is not None

        live = [int(k) for k in positions]
        out: list[Any] = await gather([lambda i=i: shard(i) for i in live])  # type: ignore[misc]
        merged = sorted(((raw["GSI1SK"]["S"], i, raw) for i, items, _ in out for raw in items), key=lambda x: x[:2])
        taken = merged[:limit]
        new_positions: dict[str, Any] = {}
        for i, items, more in out:
            mine = [raw for _, j, raw in taken if j == i]
            if len(mine) < len(items):  # this shard has unreturned items: continue after the last taken
                last = mine[-1] if mine else None
                new_positions[str(i)] = _index_key(last) if last else positions.get(str(i))
            elif more:
                new_positions[str(i)] = _index_key(items[-1])
        now = self.clock.now()
        records = []
        for _, _, raw in taken:
            if self.expired(raw, now):
                continue
            record = self.items.session(raw)
            if record.status is status:  # the index is eventually consistent
                records.append(record)
        return Page(tuple(records), _encode_cursor(new_positions) if new_positions else None)

    async def list_project_sessions(self, project_id: str, *, limit: int = 100,
                                    cursor: str | None = None) -> Page[SessionRecord]:
        rules.check_page_limit(limit)
        check_id("project", project_id)
        pk = f"PROJECT#{project_id}"
        start = _decode_cursor(cursor) if cursor else None
        items, more = await self.query_raw(pk, Path("GSI2PK") == pk, index=GSI2, limit=limit, forward=False,
                                           start=start, pages=False)
        now = self.clock.now()
        records = tuple(self.items.session(r) for r in items if not self.expired(r, now))
        return Page(records, _encode_cursor(more) if more else None)

    async def find_sessions(self, *, user_id: str | None = None, pipeline_type: str | None = None,
                            status: SessionStatus | None = None, limit: int = 100,
                            cursor: str | None = None) -> Page[SessionRecord]:
        """Keys from GSI3 (user) or every shard of GSI4 (type), newest first, merged; then the
        sessions themselves in one consistent BatchGetItem per 100, checked against the filter."""
        rules.check_page_limit(limit)
        flt = rules.SessionFilter(user_id, pipeline_type, status)
        before = flt.position(cursor)
        if flt.index is SessionIndex.USER:
            index, pks = GSI3, [gsi3(flt.key, "", 0)[0]]
        else:
            index, pks = GSI4, [type_pk(flt.key, i) for i in range(self.config.status_shards)]
        high = created_sk(before[1], before[0]) if before else "~"
        pk_attr, sk_attr = f"{index}PK", f"{index}SK"

        async def shard(pk: str) -> tuple[list[dict[str, Any]], bool]:
            cond = (Path(pk_attr) == pk) & (Path(sk_attr) < high)
            items, more = await self.query_raw(pk, cond, index=index, limit=limit + 1, forward=False, pages=False)
            return items, more is not None

        out: list[tuple[list[dict[str, Any]], bool]] = await gather(
            [lambda pk=pk: shard(pk) for pk in pks])  # type: ignore[misc]
        # A shard cut short by the 1 MB limit may hide keys newer than another shard's: stop at its last.
        floor = max((items[-1][sk_attr]["S"] for items, more in out if more and len(items) <= limit), default="")
        merged = sorted((raw for items, _ in out for raw in items), key=lambda r: r[sk_attr]["S"], reverse=True)
        taken = [raw for raw in merged if raw[sk_attr]["S"] >= floor][:limit]
        more = len(taken) < len(merged) or any(m for _, m in out)
        found = {raw["PK"]["S"]: raw for raw in await self.batch_get([{"PK": r["PK"], "SK": r["SK"]} for r in taken])}
        now = self.clock.now()
        records = []
        for key in taken:
            raw = found.get(key["PK"]["S"])
            if raw is None or self.expired(raw, now):
                continue  # deleted or expired since the index was read
            record = self.items.session(raw)
            if flt.matches(record):
                records.append(record)
        return Page(tuple(records), flt.cursor(_position(taken[-1][sk_attr]["S"])) if more and taken else None)


def _position(sk: str) -> Position:
    """(created_at, session id) of an index sort key `<created_at>#<sid>`."""
    at, sid = sk.split("#", 1)
    return float(at), sid


def _index_key(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: raw[k] for k in ("GSI1PK", "GSI1SK", "PK", "SK")}


def _encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def _decode_cursor(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        raise ValidationError(f"cursor {cursor[:40]!r} is not one this store returned; pass the cursor of the "
                              f"previous page unchanged") from None
