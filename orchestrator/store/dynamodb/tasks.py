"""Fenced task writes and run-time task additions on DynamoDB (DESIGN.md §6).

Each `TaskWrite` is one conditional UpdateItem:
`attribute_exists(PK) AND status <> COMPLETED AND (fence < :mine OR (fence = :mine AND
attempt = :expected))`, setting exactly the fields `rules.apply_task_write` sets. With
transactions on (until the store answers that it has none), a batch goes as one
TransactWriteItems (up to 100 writes); when a condition cancels it, every write is
retried alone so each is classified by consistent re-reads (`rules.classify_rejection`).
Large outputs are written as chunk items first and named by the completion.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from functools import lru_cache

from orchestrator.errors import LeaseLostError
from orchestrator.store.dynamodb.base import DynamoDBBase, gather
from orchestrator.store.dynamodb.connection import DynamoCallError
from orchestrator.store.dynamodb.expressions import Act, Cond, Do
from orchestrator.store import rules
from orchestrator.store.dynamodb.encoding import (
    Staged,
    error_json,
    hist_key,
    history_entry_json,
    progress_json,
)
from orchestrator.store.dynamodb.models import session_pk, task_sk
from orchestrator.store.protocol import WriteResult
from orchestrator.store.records import (
    ATTEMPT_HISTORY_LIMIT,
    Lease,
    NewTask,
    Progress,
    SessionSnapshot,
    TaskRecord,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    WriteOutcome,
)
from orchestrator.store.rules import Payload, classify_rejection, expected_attempt

__all__ = ["TaskOps"]

#: A task write's condition (values: COMPLETED, our fence twice, the expected attempt).
_TASK_CONDITION = ((Cond.EXISTS, ("PK",)), (Cond.NE, ("status",)), (Cond.FENCED, ("fence", "attempt")))
_FRESH_PROGRESS = progress_json(Progress())
_TX_ITEMS = 100
_TX_BYTES = 3_500_000  # TransactWriteItems carries at most 4 MB
_SMALL_UPDATE = 16_384


class TaskOps(DynamoDBBase):
    """Task reads and writes; the session operations live in `DynamoDBStore`."""

    async def load_session(self, session_id: str) -> SessionSnapshot:
        return self.snapshot(session_id, await self.partition(session_id))

    async def get_task(self, session_id: str, task_id: str) -> TaskRecord:
        return await self.read_task(session_id, task_id)

    # -- write_tasks ----------------------------------------------------------------------

    def task_params(self, lease: Lease, write: TaskWrite, now: float, output: str | None,
                    output_ref: str | None, checkpoint: str | None) -> dict[str, Any]:
        """The UpdateItem of `write`, rendered from `rules.TRANSITIONS` without a read.

        Condition: the item exists, is not COMPLETED, and `fence < ours OR (fence = ours AND
        attempt = expected)`. The expression text is rendered once per shape (`Expressions`).
        """
        acts: list[Act] = []
        values: list[Any] = []

        def act(do: Do, name: str, value: Any = None, source: tuple[str, ...] = ()) -> None:
            acts.append(_act(do, (name,), source))
            if do not in (Do.REMOVE, Do.COPY):
                values.append(value)

        def put(name: str, value: Any) -> None:  # absent means None in this table
            if value is None:
                act(Do.REMOVE, name)
            else:
                act(Do.SET, name, value)

        rule = rules.TRANSITIONS[write.kind]
        if rule.rebase:  # attempt_base takes the attempt stored before this write
            act(Do.COPY, "attempt_base", source=("attempt",))
        if rule.forgive:
            act(Do.ADD, "attempt_base", 1)
        act(Do.SET, "fence", lease.fence)
        act(Do.SET, "attempt", write.attempt)
        act(Do.SET, "updated_at", now)
        if rule.status is not None:
            act(Do.SET, "status", rule.status.value)
        for name in rule.stamps:
            act(Do.SET, name, now)
        for name in rule.clears:
            act(Do.REMOVE, name)
        if rule.fresh_progress:
            act(Do.SET, "progress", _FRESH_PROGRESS)
        error = rules.write_error(write)
        taken: dict[str, Any] = {
            "output": output, "checkpoint": checkpoint, "not_before": write.not_before,
            "waiting_for": write.waiting_for,
            "progress": None if write.progress is None else progress_json(write.progress),
            "error": error_json(error),
        }
        for name in rule.takes:
            if name == "output":
                put("output", output)
                put("output_ref", output_ref)
            elif name in ("progress", "error"):
                if taken[name] is not None:  # kept when the write carries none
                    act(Do.SET, "last_error" if name == "error" else name, taken[name])
            else:
                put(name, taken[name])
        if rule.history is rules.History.ALWAYS or (rule.history is rules.History.IF_ABSENT and write.attempt > 0):
            key = hist_key(write.attempt)
            status = rule.history_status or rule.status or TaskStatus.PENDING
            entry = {"S": history_entry_json(write.attempt, lease.fence, status, now, error)}
            slot = ("hist", key)
            if rule.history is rules.History.IF_ABSENT:
                acts.append(_act(Do.IF_ABSENT, slot, slot))
            else:
                acts.append(_act(Do.SET, slot))
            values.append(entry)
            acts.append(_act(Do.IF_ABSENT, ("hstart", key), ("started_at",)))
            values.append(0)
            old = write.attempt - ATTEMPT_HISTORY_LIMIT
            if old >= 0:
                acts += [_act(Do.REMOVE, ("hist", hist_key(old))), _act(Do.REMOVE, ("hstart", hist_key(old)))]
        sid = lease.session_id
        cond_values = (TaskStatus.COMPLETED.value, lease.fence, lease.fence, expected_attempt(write))
        return {"TableName": self.table, "Key": self.key(session_pk(sid), task_sk(write.task_id)),
                **self.exprs.params(acts, values, _TASK_CONDITION, cond_values)}

    async def write_tasks(self, lease: Lease, writes: Sequence[TaskWrite]) -> list[WriteResult]:
        if not writes:
            return []
        sid = lease.session_id
        now = self.clock.now()
        chunk_ttl = int(now + 2 * self.config.ttl_days * 86400)  # unadopted chunks expire; named ones are kept
        params: list[dict[str, Any]] = []
        chunks: list[dict[str, Any]] = []
        for w in writes:  # encode and size-check everything before the first request
            output = output_ref = checkpoint = None
            if w.kind is TaskWriteKind.COMPLETE:
                output = rules.encode(self.codec, Payload.OUTPUT, w.output, session_id=sid, task_id=w.task_id)
                if len(output.encode()) > rules.INLINE_OUTPUT_BYTES:
                    items, ref = self.items.chunk_items(sid, w.task_id, lease.fence, w.attempt, output, chunk_ttl)
                    chunks += items
                    output = None
                    output_ref = json.dumps({"fence": ref.fence, "attempt": ref.attempt, "count": ref.count,
                                             "sha256": ref.sha256, "size": ref.size})
            if w.kind is TaskWriteKind.CHECKPOINT and w.checkpoint is not None:
                checkpoint = rules.encode(self.codec, Payload.CHECKPOINT, w.checkpoint, session_id=sid,
                                          task_id=w.task_id)
            params.append(self.task_params(lease, w, now, output, output_ref, checkpoint))
        # Sizes are input checks and come first (as on SQLite); then an unknown task
        # fails the batch (TaskNotFoundError, the first in write order) before any write.
        unseen = self.unknown(sid, [w.task_id for w in writes])
        if unseen:
            await gather([lambda t=t: self.read_task(sid, t) for t in unseen])  # type: ignore[misc]
        if chunks:
            # The same completion twice in one batch names the same chunk keys, and
            # BatchWriteItem refuses duplicate keys: keep the first (the write that applies).
            unique: dict[tuple[str, str], dict[str, Any]] = {}
            for item in chunks:
                unique.setdefault((item["PK"]["S"], item["SK"]["S"]), item)
            await self.batch_put(list(unique.values()), session=sid)
        results: list[WriteResult | None] = [None] * len(writes)
        lost: LeaseLostError | None = None
        for wave in _waves(writes):
            # Each write is decided alone: a rejection explained by a lost lease does not
            # stop the writes the fence still allows; the first one is raised at the end.
            groups = _groups(wave, params) if self.transactions and len(wave) > 1 else [wave]
            for group in groups:
                try:
                    await self._transact(lease, writes, params, group, results)
                except LeaseLostError as exc:
                    lost = lost or exc
        for w, r in zip(writes, results, strict=True):
            if r is not None and w.kind is TaskWriteKind.COMPLETE and r.ok:
                self.adopted(sid, w.task_id, lease.fence, w.attempt)
        if lost is not None:
            raise lost
        return [r for r in results if r is not None]

    async def _transact(self, lease: Lease, writes: Sequence[TaskWrite], params: list[dict[str, Any]],
                        group: list[int], results: list[WriteResult | None]) -> None:
        if len(group) == 1 or not self.transactions:
            await self._singles(lease, writes, params, group, results)
            return
        try:
            if not await self.transact([{"Update": params[i]} for i in group], session=lease.session_id):
                await self._singles(lease, writes, params, group, results)  # the store has no transactions
                return
        except DynamoCallError as exc:
            if not exc.condition_failed:
                raise self._caller.to_error(exc, lease.session_id) from exc
            await self._singles(lease, writes, params, group, results)  # classify each write alone
            return
        for i in group:
            results[i] = WriteResult(writes[i].task_id, WriteOutcome.APPLIED)

    async def _singles(self, lease: Lease, writes: Sequence[TaskWrite], params: list[dict[str, Any]],
                       group: list[int], results: list[WriteResult | None]) -> None:
        async def one(i: int) -> None:
            results[i] = await self._write_one(lease, writes[i], params[i])

        await gather([lambda i=i: one(i) for i in group])  # type: ignore[misc]

    async def _write_one(self, lease: Lease, write: TaskWrite, params: dict[str, Any]) -> WriteResult:
        sid = lease.session_id
        try:
            await self._caller.call("UpdateItem", params, session=sid, task=write.task_id)
            return WriteResult(write.task_id, WriteOutcome.APPLIED)
        except DynamoCallError as exc:
            if not exc.condition_failed:
                raise self._caller.to_error(exc, sid, write.task_id) from exc
        out: list[Any] = await gather([lambda: self.read_task(sid, write.task_id), lambda: self.read_session(sid)])
        task, session = out
        outcome = classify_rejection(task, session, lease, write)  # raises LeaseLostError
        return WriteResult(write.task_id, outcome, task)

    # -- add_tasks ------------------------------------------------------------------------

    async def add_tasks(self, lease: Lease, parent: str, attempt: int, tasks: Sequence[NewTask]) -> None:
        sid = lease.session_id
        if not tasks:
            return
        inputs = [rules.encode(self.codec, Payload.TASK_INPUT, t.input, session_id=sid, task_id=t.task_id)
                  for t in tasks]
        raws = await self.partition(sid)
        snap = self.snapshot(sid, raws)
        stored = {r["SK"]["S"][5:]: r for r in raws if r["SK"]["S"].startswith("TASK#") and r["SK"]["S"].count("#") == 1}
        staged = Staged(parent, lease.fence, attempt)
        here = {tid for tid, raw in stored.items() if self.items.staged(raw) == staged}

        def definitions(tid: str) -> list[rules.Definition]:
            raw = stored.get(tid)
            return [] if raw is None else [self.items.definition(raw)]

        parent_task = snap.tasks.get(parent)
        rules.check_added(snap.session, lease, parent, attempt, tasks, inputs,
                          parent_status=None if parent_task is None else parent_task.status,
                          known=set(snap.tasks) | here, stored=definitions, store=str(self.describe()))
        items: list[dict[str, Any]] = []
        now = self.clock.now()
        for t, text in zip(tasks, inputs, strict=True):
            if t.task_id in snap.tasks or t.task_id in here:
                continue  # already adopted or already staged by this attempt: a no-op
            items.append(self.items.task_item(sid, t, None, now, staged, text))
            items += [self.items.edge_item(sid, t.task_id, d, None, staged) for d in t.depends_on]
        if items:
            await self.batch_put(items, session=sid)
        self.stage(sid, parent, lease.fence, attempt, [t.task_id for t in tasks if t.task_id not in snap.tasks])


@lru_cache(maxsize=1024)
def _act(do: Do, path: tuple[str, ...], source: tuple[str, ...] = ()) -> Act:
    return Act(do, path, source)


def _waves(writes: Sequence[TaskWrite]) -> list[list[int]]:
    """Indexes in waves where no task appears twice (a transaction may touch an item once)."""
    waves: list[list[int]] = []
    last: dict[str, int] = {}
    for i, w in enumerate(writes):
        n = last.get(w.task_id, -1) + 1
        if n == len(waves):
            waves.append([])
        waves[n].append(i)
        last[w.task_id] = n
    return waves


def _size(update: dict[str, Any]) -> int:
    """An update's size for the transaction limit, never less than what DynamoDB counts: a
    bound (UTF-8 takes at most 4 bytes a character of its strings, plus 4 KB for keys,
    names, expressions and numbers) while it stays small, else its JSON length, measured."""
    bound = 4096 + 4 * sum(len(v["S"]) for v in update.get("ExpressionAttributeValues", {}).values() if "S" in v)
    return bound if bound <= _SMALL_UPDATE else len(json.dumps(update))


def _groups(wave: list[int], params: list[dict[str, Any]]) -> list[list[int]]:
    """The wave in transactions of at most _TX_ITEMS updates and _TX_BYTES of JSON."""
    if len(wave) <= _TX_ITEMS and sum(_size(params[i]) for i in wave) <= _TX_BYTES:
        return [wave]  # a chain step: two small updates, sized without encoding them
    groups: list[list[int]] = [[]]
    size = 0
    for i in wave:
        n = len(json.dumps(params[i]))
        if groups[-1] and (len(groups[-1]) >= _TX_ITEMS or size + n > _TX_BYTES):
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += n
    return groups
