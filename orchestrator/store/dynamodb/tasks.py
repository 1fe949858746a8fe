"""Fenced task writes and run-time task additions on DynamoDB (DESIGN.md §6).

Each `TaskWrite` is one conditional UpdateItem:
`attribute_exists(PK) AND status <> COMPLETED AND (fence < :mine OR (fence = :mine AND
attempt = :expected))`, setting exactly the fields `rules.apply_task_write` sets. With
transactions on, a batch goes as one TransactWriteItems (up to 100 writes); when a
condition cancels it, every write is retried alone so each is classified by consistent
re-reads (`rules.classify_rejection`). Large outputs are written as chunk items first
and named by the completion.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pynamodb.expressions.condition import Condition
from pynamodb.expressions.operand import Path
from pynamodb.expressions.update import Action

from orchestrator.errors import CycleError, PipelineDefinitionError, ValidationError
from orchestrator.store.dynamodb.base import DynamoDBBase, gather, put
from orchestrator.store.dynamodb.connection import DynamoCallError
from orchestrator.store.dynamodb.encoding import (
    INLINE_OUTPUT_BYTES,
    MAX_CHECKPOINT_BYTES,
    MAX_INPUT_BYTES,
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
    ErrorInfo,
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
from orchestrator.store.rules import classify_rejection, expected_attempt, lease_lost

__all__ = ["TaskOps"]

_TX_ITEMS = 100
_TX_BYTES = 3_500_000  # TransactWriteItems carries at most 4 MB
_ENDED = {TaskWriteKind.FAIL: TaskStatus.FAILED, TaskWriteKind.SKIP: TaskStatus.SKIPPED,
          TaskWriteKind.CANCEL: TaskStatus.CANCELLED}


class TaskOps(DynamoDBBase):
    """Task reads and writes; the session operations live in `DynamoDBStore`."""

    async def load_session(self, session_id: str) -> SessionSnapshot:
        return self.snapshot(session_id, await self.partition(session_id))

    async def get_task(self, session_id: str, task_id: str) -> TaskRecord:
        return await self.read_task(session_id, task_id)

    # -- write_tasks ----------------------------------------------------------------------

    def task_condition(self, lease: Lease, write: TaskWrite) -> Condition:
        t = self.models.task
        same = (t.fence == lease.fence) & (t.attempt == expected_attempt(write))
        cond: Condition = t.PK.exists() & (t.status != TaskStatus.COMPLETED.value) & ((t.fence < lease.fence) | same)
        return cond

    def _history(self, lease: Lease, write: TaskWrite, status: TaskStatus, error: ErrorInfo | None,
                 now: float, *, only_if_absent: bool = False) -> list[Action]:
        key = hist_key(write.attempt)
        entry = {"S": history_entry_json(write.attempt, lease.fence, status, now, error)}
        slot = Path(["hist", key])
        actions: list[Action] = [
            slot.set(slot | entry) if only_if_absent else slot.set(entry),
            Path(["hstart", key]).set(self.models.task.started_at | 0),
        ]
        old = write.attempt - ATTEMPT_HISTORY_LIMIT
        if old >= 0:
            actions += [Path(["hist", hist_key(old)]).remove(), Path(["hstart", hist_key(old)]).remove()]
        return actions

    def task_actions(self, lease: Lease, write: TaskWrite, now: float, output: str | None,
                     output_ref: str | None, checkpoint: str | None) -> list[Action]:
        """The UpdateItem actions of `write`, mirroring `rules.apply_task_write` field by field."""
        t = self.models.task
        kind = write.kind
        actions: list[Action] = []
        if kind is TaskWriteKind.RESET:  # attempt_base takes the attempt stored before this write
            actions.append(t.attempt_base.set(t.attempt))
        actions += [t.fence.set(lease.fence), t.attempt.set(write.attempt), t.updated_at.set(now)]
        if kind is TaskWriteKind.START:
            actions += [t.status.set(TaskStatus.RUNNING.value), t.started_at.set(now), t.ended_at.remove(),
                        t.not_before.remove(), t.output.remove(), t.output_ref.remove(),
                        t.progress.set(progress_json(Progress()))]
        elif kind is TaskWriteKind.PROGRESS:
            if write.progress is not None:
                actions.append(t.progress.set(progress_json(write.progress)))
        elif kind is TaskWriteKind.CHECKPOINT:
            actions.append(put(t.checkpoint, checkpoint))
        elif kind is TaskWriteKind.COMPLETE:
            actions += [t.status.set(TaskStatus.COMPLETED.value), t.ended_at.set(now), t.not_before.remove(),
                        put(t.output, output), put(t.output_ref, output_ref)]
            if write.progress is not None:
                actions.append(t.progress.set(progress_json(write.progress)))
            actions += self._history(lease, write, TaskStatus.COMPLETED, None, now)
        elif kind is TaskWriteKind.RETRY:
            actions += [t.status.set(TaskStatus.PENDING.value), t.ended_at.set(now),
                        put(t.last_error, error_json(write.error)), put(t.not_before, write.not_before)]
            actions += self._history(lease, write, TaskStatus.FAILED, write.error, now)
        elif kind in _ENDED:
            status = _ENDED[kind]
            error = write.error
            if error is None and write.reason:
                error = ErrorInfo(type=f"orchestrator.{status.value.title()}", message=write.reason, retryable=False)
            actions += [t.status.set(status.value), t.ended_at.set(now), t.not_before.remove()]
            if error is not None:
                actions.append(t.last_error.set(str(error_json(error))))
            if kind is TaskWriteKind.FAIL:
                actions += self._history(lease, write, status, error, now)
            elif write.attempt > 0:
                # Without a read we cannot tell whether the task was RUNNING: an attempt that
                # already has an entry (a failed try) keeps it; one that was running gets one.
                actions += self._history(lease, write, status, error, now, only_if_absent=True)
        elif kind is TaskWriteKind.WAKE:
            actions.append(t.status.set(TaskStatus.RUNNING.value))
        elif kind is TaskWriteKind.WAIT:
            actions += [t.status.set(TaskStatus.WAITING.value), put(t.not_before, write.not_before)]
        elif kind is TaskWriteKind.RESET:
            actions += [t.status.set(TaskStatus.PENDING.value), t.last_error.remove(), t.not_before.remove(),
                        t.started_at.remove(), t.ended_at.remove()]
        return actions

    async def write_tasks(self, lease: Lease, writes: Sequence[TaskWrite]) -> list[WriteResult]:
        if not writes:
            return []
        sid = lease.session_id
        unseen = self.unknown(sid, [w.task_id for w in writes])
        if unseen:  # TaskNotFoundError before anything is written
            await gather([lambda t=t: self.read_task(sid, t) for t in unseen])  # type: ignore[misc]
        now = self.clock.now()
        chunk_ttl = int(now + 2 * self.config.ttl_days * 86400)  # unadopted chunks expire; named ones are kept
        params: list[dict[str, Any]] = []
        chunks: list[dict[str, Any]] = []
        for w in writes:  # encode and size-check everything before the first request
            output = output_ref = checkpoint = None
            if w.kind is TaskWriteKind.COMPLETE:
                output = self.codec.encode(w.output, where=f"output of task {w.task_id}")
                if len(output.encode()) > INLINE_OUTPUT_BYTES:
                    items, ref = self.items.chunk_items(sid, w.task_id, lease.fence, w.attempt, output, chunk_ttl)
                    chunks += items
                    output = None
                    output_ref = json.dumps({"fence": ref.fence, "attempt": ref.attempt, "count": ref.count,
                                             "sha256": ref.sha256, "size": ref.size})
            if w.kind is TaskWriteKind.CHECKPOINT and w.checkpoint is not None:
                checkpoint = self.codec.encode(w.checkpoint, where=f"checkpoint of task {w.task_id}")
                if len(checkpoint.encode()) > MAX_CHECKPOINT_BYTES:
                    raise ValidationError(
                        f"checkpoint of task {w.task_id} in session {sid} is {len(checkpoint.encode())} bytes; "
                        f"DynamoDB items hold {MAX_CHECKPOINT_BYTES} bytes of checkpoint. Keep large state "
                        f"elsewhere (S3, a file) and checkpoint a reference", session_id=sid, task_id=w.task_id)
            actions = self.task_actions(lease, w, now, output, output_ref, checkpoint)
            params.append(self.update_params(session_pk(sid), task_sk(w.task_id), actions,
                                             self.task_condition(lease, w)))
        if chunks:
            await self.batch_put(chunks, session=sid)
        results: list[WriteResult | None] = [None] * len(writes)
        for wave in _waves(writes):
            if self.config.transactions and len(wave) > 1:
                for group in _groups(wave, params):
                    await self._transact(lease, writes, params, group, results)
            else:
                await self._singles(lease, writes, params, wave, results)
        return [r for r in results if r is not None]

    async def _transact(self, lease: Lease, writes: Sequence[TaskWrite], params: list[dict[str, Any]],
                        group: list[int], results: list[WriteResult | None]) -> None:
        if len(group) == 1:
            await self._singles(lease, writes, params, group, results)
            return
        try:
            await self._caller.call("TransactWriteItems", {"TransactItems": [{"Update": params[i]} for i in group]},
                                    session=lease.session_id)
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
        ids = [t.task_id for t in tasks]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise PipelineDefinitionError(
                f"task {parent} of session {sid} adds duplicate task id(s) {', '.join(dupes)}; give each added "
                f"task a unique, deterministic id", session_id=sid, task_id=parent)
        encoded = {t.task_id: self._encode_input(sid, t) for t in tasks}
        raws = await self.partition(sid)
        snap = self.snapshot(sid, raws)
        err = lease_lost(snap.session, lease)
        if err is not None and snap.session.fence != lease.fence:
            raise err
        if parent not in snap.tasks:
            raise PipelineDefinitionError(
                f"task {parent!r} adding tasks is not in session {sid}", session_id=sid, task_id=parent)
        stored = {r["SK"]["S"][5:]: r for r in raws if r["SK"]["S"].startswith("TASK#") and r["SK"]["S"].count("#") == 1}
        known = set(snap.tasks) | set(ids)
        staged = Staged(parent, lease.fence, attempt)
        items: list[dict[str, Any]] = []
        for t in tasks:
            for dep in t.depends_on:
                if dep not in known:
                    raise PipelineDefinitionError(
                        f"task {t.task_id!r} added by {parent} in session {sid} depends on unknown task {dep!r}; "
                        f"add {dep!r} in the same call or depend on an existing task", session_id=sid,
                        task_id=t.task_id)
            raw = stored.get(t.task_id)
            if raw is not None:
                if self.items.definition(raw) != (t.agent, encoded[t.task_id], t.priority, t.max_attempts,
                                                  tuple(t.depends_on)):
                    raise PipelineDefinitionError(
                        f"task {t.task_id!r} already exists in session {sid} with another definition; a re-run "
                        f"agent must add the same tasks (deterministic ids), or use a new id", session_id=sid,
                        task_id=t.task_id)
                if t.task_id in snap.tasks or self.items.staged(raw) == staged:
                    continue  # already adopted or already staged by this attempt: a no-op
            items.append(self.items.task_item(sid, t, None, self.clock.now(), staged, encoded[t.task_id]))
            items += [self.items.edge_item(sid, t.task_id, d, None, staged) for d in t.depends_on]
        _check_acyclic(sid, tasks)
        if items:
            await self.batch_put(items, session=sid)
        self.remember(sid, ids)

    def _encode_input(self, sid: str, t: NewTask) -> str | None:
        text = self.codec.encode(t.input, where=f"input of task {t.task_id}")
        if len(text.encode()) > MAX_INPUT_BYTES:
            raise ValidationError(
                f"input of task {t.task_id} in session {sid} is {len(text.encode())} bytes; a task item holds "
                f"{MAX_INPUT_BYTES}. Pass a reference (S3 key, path) instead of the data", session_id=sid,
                task_id=t.task_id)
        return text


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


def _groups(wave: list[int], params: list[dict[str, Any]]) -> list[list[int]]:
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


def _check_acyclic(sid: str, tasks: Sequence[NewTask]) -> None:
    deps = {t.task_id: [d for d in t.depends_on] for t in tasks}
    state: dict[str, int] = {}
    for root in deps:
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            node, idx = stack.pop()
            if idx == 0:
                if state.get(node) == 2:
                    continue
                if state.get(node) == 1:
                    cycle = path[path.index(node):] + [node]
                    raise CycleError(f"tasks added to session {sid} form a cycle: {' -> '.join(cycle)}; remove "
                                     f"one of these dependencies", session_id=sid, cycle=cycle)
                state[node] = 1
                path.append(node)
            children = [d for d in deps.get(node, []) if d in deps]
            if idx < len(children):
                stack.append((node, idx + 1))
                stack.append((children[idx], 0))
            else:
                state[node] = 2
                path.pop()
