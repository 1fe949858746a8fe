"""DynamoDB: many sessions at once (`ChildStore`), for the children of a map.

Creation first reads which ids exist (BatchGetItem, 100 per request), then writes the
rest: with transactions, several whole sessions per TransactWriteItems (up to 100
items, each META conditioned on its absence); without, the task and edge items of many
sessions by BatchWriteItem (25 per request) and each META by one conditional PutItem
(the item that makes a session visible, as `create_session` does). For a one-task
child that is about 1/50 request (transactions) or 1 + 1/12 requests (without) per
child, plus 1/100 for the existence read. Reads are BatchGetItem, 100 per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.errors import SessionStateError
from orchestrator.store.dynamodb.connection import DynamoCallError
from orchestrator.store.dynamodb.models import session_pk
from orchestrator.store.dynamodb.sessions import SessionOps
from orchestrator.store.records import NewSession, NewTask, SessionRecord

__all__ = ["ChildOps"]

_TX_MAX = 100


class ChildOps(SessionOps):
    """`create_sessions` and `get_sessions`."""

    async def get_sessions(self, session_ids: Sequence[str]) -> dict[str, SessionRecord]:
        if not session_ids:
            return {}
        found = await self.batch_get([self.key(session_pk(sid), "META") for sid in dict.fromkeys(session_ids)])
        now = self.clock.now()
        out: dict[str, SessionRecord] = {}
        for raw in found:
            sid = raw["PK"]["S"].removeprefix("SESSION#")
            if not self.expired(raw, now):
                out[sid] = self.items.session(raw, sid)
        return out

    async def create_sessions(self, sessions: Sequence[tuple[NewSession, Sequence[NewTask]]]) -> list[str]:
        built = [(s.session_id, *self.creation_items(s, tasks), tasks) for s, tasks in sessions]  # validate first
        if not built:
            return []
        existing = await self.get_sessions([b[0] for b in built])
        todo = [b for b in built if b[0] not in existing]
        created: list[str] = []
        if self.transactions:
            packs: list[list[Any]] = [[]]
            for b in todo:
                size = 1 + len(b[2])
                if size > _TX_MAX:
                    packs.append([b])
                    packs.append([])
                    continue
                if sum(1 + len(x[2]) for x in packs[-1]) + size > _TX_MAX:
                    packs.append([])
                packs[-1].append(b)
            for pack in (p for p in packs if p):
                created += await self._create_pack(pack)
        else:
            created += await self._create_single_items(todo)
        for sid, _, _, _, tasks in todo:
            if sid in created:
                self.remember(sid, [t.task_id for t in tasks])
        return created

    async def _create_pack(self, pack: list[Any]) -> list[str]:
        """One transaction for the whole pack; on any refusal, each session on its own."""
        absent = self.models.session.PK.does_not_exist()
        items: list[dict[str, Any]] = []
        for _, meta, body, _, _ in pack:
            items += [{"Put": self.put_params(i)} for i in body] + [{"Put": self.put_params(meta, absent)}]
        try:
            if len(items) <= _TX_MAX and await self.transact(items):
                return [b[0] for b in pack]
        except DynamoCallError as exc:
            if not exc.condition_failed:
                raise self._caller.to_error(exc) from exc
        return await self._create_single_items(pack)

    async def _create_single_items(self, todo: list[Any]) -> list[str]:
        """Bodies by BatchWriteItem, then each META by a conditional PutItem (visible only then)."""
        await self.batch_put([i for _, _, body, _, _ in todo for i in body])
        absent = self.models.session.PK.does_not_exist()
        created: list[str] = []
        for sid, meta, _, tok, _ in todo:
            try:
                await self._caller.call("PutItem", self.put_params(meta, absent), session=sid)
                created.append(sid)
            except DynamoCallError as exc:
                if not exc.condition_failed:
                    raise self._caller.to_error(exc, sid) from exc
                stored = await self.get_raw(session_pk(sid), "META", session=sid)
                if stored is not None and stored.get("tok", {}).get("S") == tok:
                    created.append(sid)  # ours landed; its response was lost
                elif stored is None:
                    raise SessionStateError(f"session {sid} could not be created in {self.describe()}; retry",
                                            session_id=sid) from None
        return created
