"""The DynamoDB backend of the Store protocol (PynamoDB models, one table, DESIGN.md §5-§6).

Every decision comes from `orchestrator.store.rules`; every write is one conditional
request whose condition states what the decision was based on, so a concurrent writer
makes it fail instead of being overwritten. Every request goes through the choke point
in `dynamodb_calls` (retries, error mapping, context). PynamoDB is blocking: requests
run in worker threads under a capacity limiter sized to the connection pool. Task
writes live in `dynamodb_tasks`, the users' project history in `dynamodb_projects`.

Negative-control seam: `_cas_claims = False` in a subclass writes claims without their
condition expression. It exists only so a test can show that two workers then both
"win" a session; never set it in real code.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from pynamodb.expressions.condition import Condition
from pynamodb.expressions.operand import Path
from pynamodb.expressions.update import Action

from orchestrator.errors import (
    ClaimRejectedError,
    PipelineDefinitionError,
    PipelineNotFoundError,
    SessionStateError,
    StoreError,
    TaskNotFoundError,
    ValidationError,
)
from orchestrator.store.dynamodb.base import gather, put
from orchestrator.store.dynamodb.connection import DynamoCallError
from orchestrator.store.dynamodb.encoding import MAX_INPUT_BYTES, Staged, progress_json
from orchestrator.store.dynamodb.models import (
    GSI1,
    GSI2,
    event_sk,
    fmt_time,
    gsi1,
    pipeline_key,
    session_pk,
    task_sk,
)
from orchestrator.store.dynamodb.schema import check_table, ensure_table
from orchestrator.store.dynamodb.projects import ProjectOps
from orchestrator.store.dynamodb.tasks import TaskOps
from orchestrator.store.records import (
    ClaimPolicy,
    Event,
    Lease,
    MetricSummary,
    NewSession,
    NewTask,
    Page,
    PipelineDefinition,
    Progress,
    PurgeReport,
    SessionRecord,
    SessionStatus,
)
from orchestrator.store.rules import claim_refusal, claimed, lease_lost, status_time

__all__ = ["DynamoDBStore"]

_TX_MAX = 100


class DynamoDBStore(TaskOps, ProjectOps):
    """Durable state in one DynamoDB table; see the module docstring and `Store`."""

    #: Negative-control seam (tests only): False writes claims without a condition.
    _cas_claims: bool = True

    async def __aenter__(self) -> DynamoDBStore:
        await self.initialize()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def initialize(self) -> None:
        await ensure_table(self._caller, self.config)

    async def check(self) -> list[str]:
        try:
            return await check_table(self._caller, self.config)
        except StoreError as exc:
            return [f"cannot reach {self.describe()}: {exc}"]

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()

    # -- session item helpers ---------------------------------------------------------------

    def _ttl_seconds(self, explicit: float | None) -> float:
        return explicit if explicit is not None else self.config.ttl_days * 86400.0

    def _session_actions(self, new: SessionRecord, *fields: str) -> list[Action]:
        """SET/REMOVE actions writing `fields` of `new`, plus its status-index keys."""
        s = self.models.session
        attrs: dict[str, tuple[Any, Any]] = {
            "status": (s.status, new.status.value), "fence": (s.fence, new.fence),
            "lease_owner": (s.lease_owner, new.lease_owner), "lease_expires_at": (s.lease_expires, new.lease_expires_at),
            "wake_at": (s.wake_at, new.wake_at), "updated_at": (s.updated_at, new.updated_at),
            "redrive_count": (s.redrive_count, new.redrive_count), "needs_human": (s.needs_human, new.needs_human),
            "needs_human_reason": (s.needs_human_reason, new.needs_human_reason), "reason": (s.reason, new.reason),
            "completed_at": (s.completed_at, new.completed_at),
            "expires_at": (s.ttl, None if new.expires_at is None else int(new.expires_at)),
            "cancel_requested": (s.cancel_requested, new.cancel_requested), "wait_seq": (s.wait_seq, new.wait_seq),
            "signal_seq": (s.signal_seq, new.signal_seq),
        }
        actions = [put(*attrs[f]) for f in fields]
        pk, sk = gsi1(new.status.value, new.session_id, status_time(new), self.config.status_shards)
        return actions + [s.GSI1PK.set(pk), s.GSI1SK.set(sk)]

    def _fenced(self, lease: Lease) -> Condition:
        s = self.models.session
        cond: Condition = ((s.fence == lease.fence) & (s.lease_owner == lease.owner)
                           & (s.status == SessionStatus.RUNNING.value))
        return cond

    async def _update_session(self, sid: str, actions: list[Action], condition: Condition | None) -> SessionRecord:
        params = self.update_params(session_pk(sid), "META", actions, condition, return_new=True)
        answer = await self._caller.call("UpdateItem", params, session=sid)
        return self.items.session(answer["Attributes"], sid)

    # -- sessions -------------------------------------------------------------------------

    async def create_session(self, session: NewSession, tasks: Sequence[NewTask], *, owner: str | None = None,
                             lease_seconds: float | None = None) -> SessionRecord:
        sid = session.session_id
        ids = [t.task_id for t in tasks]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise PipelineDefinitionError(f"session {sid} has duplicate task id(s) {', '.join(dupes)}; task ids must "
                                          f"be unique", session_id=sid)
        known = set(ids)
        for t in tasks:
            unknown = [d for d in t.depends_on if d not in known]
            if unknown:
                raise PipelineDefinitionError(
                    f"task {t.task_id!r} of session {sid} depends on unknown task(s) {', '.join(unknown)}; add "
                    f"them or fix the dependency", session_id=sid, task_id=t.task_id)
        now = self.clock.now()
        record = SessionRecord(
            session_id=sid, pipeline=session.pipeline, pipeline_version=session.pipeline_version,
            status=SessionStatus.RUNNING if owner else session.status, owner_kind=session.owner_kind,
            input=session.input, project_id=session.project_id, user_id=session.user_id,
            pipeline_type=session.pipeline_type, progress=Progress(0, len(tasks)), created_at=now, updated_at=now,
            lease_owner=owner, lease_expires_at=(now + lease_seconds) if owner and lease_seconds is not None else None,
            fence=1 if owner else 0, max_redrives=session.max_redrives, metadata=dict(session.metadata),
            trace_context=dict(session.trace_context),
        )
        tok = uuid.uuid4().hex
        meta = self.items.session_item(record, tok, self._ttl_seconds(session.ttl_seconds))
        if len(json.dumps(meta)) > MAX_INPUT_BYTES * 3:
            raise ValidationError(f"session {sid}: input and metadata are too large for a DynamoDB item (400 KB); "
                                  f"pass references instead of data", session_id=sid)
        body: list[dict[str, Any]] = []
        for t in tasks:
            body.append(self.items.task_item(sid, t, tok, now, Staged(None, None, None), self._encode_input(sid, t)))
            body += [self.items.edge_item(sid, t.task_id, d, tok, Staged(None, None, None)) for d in t.depends_on]
        absent = self.models.session.PK.does_not_exist()
        try:
            if self.config.transactions and len(body) + 1 <= _TX_MAX:
                items = [{"Put": self.put_params(i)} for i in body] + [{"Put": self.put_params(meta, absent)}]
                await self._caller.call("TransactWriteItems", {"TransactItems": items}, session=sid)
            else:
                # Pre-check: tasks of an existing session must not be overwritten below.
                if await self.get_raw(session_pk(sid), "META", session=sid) is not None:
                    raise self._exists(sid)
                await self.batch_put(body, session=sid)
                # META last, naming the token: until it lands, readers see nothing.
                await self._caller.call("PutItem", self.put_params(meta, absent), session=sid)
        except DynamoCallError as exc:
            if not exc.condition_failed:
                raise self._caller.to_error(exc, sid) from exc
            stored = await self.get_raw(session_pk(sid), "META", session=sid)
            if stored is None or stored.get("tok", {}).get("S") != tok:
                raise self._exists(sid) from None
            # our own creation landed and its response was lost
        self.remember(sid, ids)
        return self.items.session(meta, sid)  # exactly what was written; no read needed

    def _exists(self, sid: str) -> SessionStateError:
        return SessionStateError(f"session {sid} already exists in {self.describe()}; use another id, or resume it "
                                 f"with `orchestrator resume {sid}`", session_id=sid)

    async def get_session(self, session_id: str) -> SessionRecord:
        return await self.read_session(session_id)

    async def claim_session(self, session_id: str, owner: str, lease_seconds: float,
                            policy: ClaimPolicy = ClaimPolicy()) -> Lease:
        sid = session_id
        current = await self.read_session(sid)
        now = self.clock.now()
        refusal = claim_refusal(current, now, policy)
        if refusal is not None:
            raise self._rejected(refusal, current)
        new = claimed(current, owner, lease_seconds, now, policy)
        s = self.models.session
        actions = self._session_actions(new, "status", "fence", "lease_owner", "lease_expires_at", "wake_at",
                                        "updated_at", "redrive_count", "needs_human", "needs_human_reason", "reason",
                                        "completed_at", "expires_at")
        cond: Condition | None = None
        if self._cas_claims:
            cond = (s.fence == current.fence) & (s.status == current.status.value)
            if current.status is SessionStatus.RUNNING:
                cond &= s.lease_expires < now
            elif current.status is SessionStatus.WAITING:
                cond &= (s.wake_at <= now) | (s.signal_seq > s.wait_seq)
            elif current.status is SessionStatus.FAILED and not policy.force:
                cond &= (s.needs_human == False) & (s.redrive_count == current.redrive_count)  # noqa: E712
                if policy.failed_updated_before is not None:
                    cond &= s.updated_at <= policy.failed_updated_before
        try:
            await self._update_session(sid, actions, cond)
        except DynamoCallError as exc:
            if not exc.condition_failed:
                raise self._caller.to_error(exc, sid) from exc
            again = await self.read_session(sid)
            if not (again.fence == new.fence and again.lease_owner == owner):  # else: our lost response
                refusal = claim_refusal(again, self.clock.now(), policy) or (
                    f"session {sid} changed while we claimed it (now fence {again.fence}, owner "
                    f"{again.lease_owner}); retry the claim")
                raise self._rejected(refusal, again) from None
        return Lease(session_id=sid, owner=owner, fence=new.fence, expires_at=new.lease_expires_at,
                     signal_seq=current.signal_seq)

    @staticmethod
    def _rejected(msg: str, s: SessionRecord) -> ClaimRejectedError:
        return ClaimRejectedError(msg, session_id=s.session_id, owner=s.lease_owner, expires_at=s.lease_expires_at,
                                  fence=s.fence, status=s.status.value)

    async def _fenced_write(self, lease: Lease, actions: list[Action], extra: Condition | None = None) -> SessionRecord:
        """A fenced session write; on rejection re-read and raise what `rules.lease_lost` says."""
        cond = self._fenced(lease)
        if extra is not None:
            cond &= extra
        try:
            return await self._update_session(lease.session_id, actions, cond)
        except DynamoCallError as exc:
            if not exc.condition_failed:
                raise self._caller.to_error(exc, lease.session_id) from exc
        current = await self.read_session(lease.session_id)
        err = lease_lost(current, lease)
        if err is not None:
            raise err
        raise SessionStateError(
            f"session {lease.session_id} changed during the write (signal seq {current.signal_seq}); re-read it "
            f"and retry", session_id=lease.session_id)

    async def renew_lease(self, lease: Lease, lease_seconds: float) -> tuple[Lease, SessionRecord]:
        expires = self.clock.now() + lease_seconds
        s = self.models.session
        record = await self._fenced_write(lease, [s.lease_expires.set(expires)])
        return Lease(lease.session_id, lease.owner, lease.fence, expires, record.signal_seq), record

    async def release_lease(self, lease: Lease) -> None:
        now = self.clock.now()
        current_like = SessionRecord(session_id=lease.session_id, pipeline="", pipeline_version="",
                                     status=SessionStatus.PENDING, updated_at=now)
        actions = self._session_actions(current_like, "status", "lease_owner", "lease_expires_at", "updated_at")
        try:
            await self._fenced_write(lease, actions)
        except Exception:
            stored = await self.read_session(lease.session_id)
            if stored.fence == lease.fence and stored.status is SessionStatus.PENDING:
                return  # a retry of a release whose response was lost
            raise

    async def update_session(self, lease: Lease, *, progress: Progress | None = None,
                             current_agents: Sequence[str] | None = None, metadata: dict[str, Any] | None = None,
                             trace_context: dict[str, str] | None = None) -> None:
        s = self.models.session
        now = self.clock.now()
        actions: list[Action] = []
        if progress is not None:
            actions.append(s.progress.set(progress_json(progress)))
        if current_agents is not None:
            actions.append(s.current_agents.set(json.dumps(list(current_agents))))
        if metadata is not None:
            actions.append(s.metadata.set(self.codec.encode(metadata, where="session.metadata")))
        if trace_context is not None:
            actions.append(s.trace_context.set(json.dumps(dict(trace_context))))
        running = SessionRecord(session_id=lease.session_id, pipeline="", pipeline_version="",
                                status=SessionStatus.RUNNING, updated_at=now)
        await self._fenced_write(lease, actions + self._session_actions(running, "updated_at"))

    async def finish_session(self, lease: Lease, status: SessionStatus, reason: str | None = None, *,
                             needs_human_reason: str | None = None) -> SessionRecord:
        if not status.is_final:
            raise ValidationError(f"finish_session of {lease.session_id} needs COMPLETED, FAILED or CANCELLED, not "
                                  f"{status.value}", session_id=lease.session_id)
        now = self.clock.now()
        s = self.models.session
        done = SessionRecord(session_id=lease.session_id, pipeline="", pipeline_version="", status=status,
                             updated_at=now, completed_at=now, reason=reason,
                             needs_human=needs_human_reason is not None, needs_human_reason=needs_human_reason)
        actions = self._session_actions(done, "status", "lease_owner", "lease_expires_at", "updated_at",
                                        "completed_at", "reason", "wake_at")
        if needs_human_reason is not None:
            actions += [s.needs_human.set(True), s.needs_human_reason.set(needs_human_reason)]
        actions.append(s.ttl.set(Path("ttl_seconds") + int(now)))  # retention stored on the session
        try:
            return await self._fenced_write(lease, actions)
        except Exception:
            stored = await self.read_session(lease.session_id)
            if stored.fence == lease.fence and stored.status is status and stored.completed_at == now:
                return stored  # our own write landed; its response was lost
            raise

    async def wait_session(self, lease: Lease, wake_at: float | None) -> bool:
        now = self.clock.now()
        s = self.models.session
        waiting = SessionRecord(session_id=lease.session_id, pipeline="", pipeline_version="",
                                status=SessionStatus.WAITING, updated_at=now, wake_at=wake_at,
                                wait_seq=lease.signal_seq)
        actions = self._session_actions(waiting, "status", "lease_owner", "lease_expires_at", "updated_at",
                                        "wake_at", "wait_seq")
        try:
            await self._fenced_write(lease, actions, s.signal_seq == lease.signal_seq)
            return True
        except SessionStateError:
            return False  # a signal arrived since the lease saw the sequence
        except Exception:
            stored = await self.read_session(lease.session_id)
            if (stored.fence == lease.fence and stored.status is SessionStatus.WAITING
                    and stored.wait_seq == lease.signal_seq):
                return True  # our own write landed; its response was lost
            raise

    async def request_cancel(self, session_id: str, reason: str) -> SessionRecord:
        sid = session_id
        s = self.models.session
        for _ in range(self.config.max_attempts):
            current = await self.read_session(sid)
            now = self.clock.now()
            if current.status.is_final:
                raise SessionStateError(f"session {sid} is already {current.status.value}; nothing to cancel",
                                        session_id=sid)
            held = current.status is SessionStatus.RUNNING and (
                current.lease_expires_at is None or current.lease_expires_at >= now)
            cond = (s.fence == current.fence) & (s.status == current.status.value)
            if held:
                actions: list[Action] = [s.cancel_requested.set(True), s.reason.set(reason)]
            else:
                if current.status is SessionStatus.RUNNING:
                    cond &= s.lease_expires < now
                done = SessionRecord(session_id=sid, pipeline="", pipeline_version="", status=SessionStatus.CANCELLED,
                                     fence=current.fence + 1, updated_at=now, completed_at=now, reason=reason,
                                     cancel_requested=True)
                actions = self._session_actions(done, "status", "fence", "lease_owner", "lease_expires_at",
                                                "updated_at", "completed_at", "reason", "cancel_requested", "wake_at")
                actions.append(s.ttl.set(Path("ttl_seconds") + int(now)))
            try:
                return await self._update_session(sid, actions, cond)
            except DynamoCallError as exc:
                if not exc.condition_failed:
                    raise self._caller.to_error(exc, sid) from exc
        raise SessionStateError(f"session {sid} kept changing while we cancelled it; retry", session_id=sid)

    async def set_needs_human(self, session_id: str, reason: str | None) -> SessionRecord:
        s = self.models.session
        current = await self.read_session(session_id)
        if current.status is not SessionStatus.FAILED:
            raise SessionStateError(f"session {session_id} is {current.status.value}; only a FAILED session can be "
                                    f"flagged for a person", session_id=session_id)
        actions = [s.needs_human.set(reason is not None), put(s.needs_human_reason, reason)]
        try:
            return await self._update_session(session_id, actions, s.status == SessionStatus.FAILED.value)
        except DynamoCallError as exc:
            if not exc.condition_failed:
                raise self._caller.to_error(exc, session_id) from exc
            raise SessionStateError(f"session {session_id} is no longer FAILED (claimed meanwhile); re-read it",
                                    session_id=session_id) from None

    # -- signals --------------------------------------------------------------------------

    async def send_signal(self, session_id: str, task_id: str, name: str, payload: Any) -> int:
        sid = session_id
        text = self.codec.encode(payload, where=f"signal {name} payload")
        if not name or "#" in name:
            raise ValidationError(f"signal name {name!r} is not valid (non-empty, no '#')", session_id=sid)
        current = await self.read_session(sid)
        if await self.get_raw(session_pk(sid), task_sk(task_id), session=sid, task=task_id) is None:
            raise TaskNotFoundError(f"session {sid} has no task {task_id!r} to signal", session_id=sid,
                                    task_id=task_id)
        s = self.models.session
        for attempt in range(self.config.max_attempts):
            if attempt:
                current = await self.read_session(sid)
            if current.status.is_final:
                raise SessionStateError(f"session {sid} is {current.status.value}; a finished session takes no "
                                        f"signals", session_id=sid, task_id=task_id)
            now = self.clock.now()
            seq = current.signal_seq + 1
            actions: list[Action] = [s.signal_seq.set(seq)]
            cond = (s.signal_seq == current.signal_seq) & (s.status == current.status.value)
            if current.status is SessionStatus.WAITING and (current.wake_at is None or current.wake_at > now):
                due = SessionRecord(session_id=sid, pipeline="", pipeline_version="", status=SessionStatus.WAITING,
                                    wake_at=now)
                actions += self._session_actions(due, "wake_at")
            signal = self.items.signal_item(sid, task_id, name, text, seq, now)
            meta = self.update_params(session_pk(sid), "META", actions, cond)
            try:
                if self.config.transactions:
                    await self._caller.call("TransactWriteItems", {"TransactItems": [
                        {"Put": self.put_params(signal)}, {"Update": meta}]}, session=sid, task=task_id)
                else:
                    # The signal item first; readers ignore it until META's sequence reaches it.
                    await self._caller.call("PutItem", self.put_params(signal), session=sid, task=task_id)
                    await self._caller.call("UpdateItem", meta, session=sid, task=task_id)
                return seq
            except DynamoCallError as exc:
                if not exc.condition_failed:
                    raise self._caller.to_error(exc, sid, task_id) from exc
        raise SessionStateError(f"session {sid} kept changing while we signalled it; retry", session_id=sid)

    # -- listing ----------------------------------------------------------------------------

    async def list_sessions(self, status: SessionStatus, *, updated_before: float | None = None, limit: int = 100,
                            cursor: str | None = None) -> Page[SessionRecord]:
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
        pk = f"PROJECT#{project_id}"
        start = _decode_cursor(cursor) if cursor else None
        items, more = await self.query_raw(pk, Path("GSI2PK") == pk, index=GSI2, limit=limit, forward=False,
                                           start=start, pages=False)
        now = self.clock.now()
        records = tuple(self.items.session(r) for r in items if not self.expired(r, now))
        return Page(records, _encode_cursor(more) if more else None)

    # -- events -----------------------------------------------------------------------------

    async def append_events(self, events: Sequence[Event]) -> None:
        items = []
        for e in events:
            if "#" in e.writer:
                raise ValidationError(f"event writer {e.writer!r} must not contain '#'", session_id=e.session_id)
            items.append(self.items.event_item(e, int(e.at + self.config.ttl_days * 86400)))
        if items:
            await self.batch_put(items, session=events[0].session_id)

    async def read_events(self, session_id: str, *, after: str | None = None, limit: int = 100) -> Page[Event]:
        pk = session_pk(session_id)
        cond = (Path("PK") == pk) & Path("SK").between("EVENT#", "EVENT#~")
        start = {"PK": {"S": pk}, "SK": {"S": event_sk(after)}} if after else None
        items, more = await self.query_raw(pk, cond, limit=limit, start=start, pages=False, session=session_id)
        now = self.clock.now()
        events = tuple(self.items.event(r, session_id) for r in items if not self.expired(r, now))
        last = items[-1]["SK"]["S"][len("EVENT#"):] if items else None
        return Page(events, last if more else None)

    # -- metrics ------------------------------------------------------------------------------

    async def record_metrics(self, writer: str, seq: int, summaries: Sequence[MetricSummary]) -> None:
        m = self.models.metric
        for s in summaries:
            for part in (writer, s.name, s.agent):
                if "#" in part or not part:
                    raise ValidationError(f"metric writer/name/agent {part!r} must be non-empty without '#'")
        cond = m.seq.does_not_exist() | (m.seq < seq)

        async def one(s: MetricSummary) -> None:
            ttl = int(_day_start(s.day) + self.config.ttl_days * 86400)
            try:
                await self._caller.call("PutItem", self.put_params(self.items.metric_item(writer, seq, s, ttl), cond))
            except DynamoCallError as exc:
                if not exc.condition_failed:
                    raise self._caller.to_error(exc) from exc
                # an equal or newer seq is stored: this was a retry, nothing to do

        await gather([lambda s=s: one(s) for s in summaries])  # type: ignore[misc]

    async def read_metrics(self, day: str, *, name: str | None = None, agent: str | None = None) -> list[MetricSummary]:
        async def shard(i: int) -> list[dict[str, Any]]:
            pk = f"METRIC#{day}#{i}"
            items, _ = await self.query_raw(pk, Path("PK") == pk, consistent=False)
            return items

        out: list[Any] = await gather([lambda i=i: shard(i) for i in range(self.config.status_shards)])  # type: ignore[misc]
        sums: dict[tuple[int, str, str], MetricSummary] = {}
        for items in out:
            for raw in items:
                s = self.items.metric(raw)
                if (name is not None and s.name != name) or (agent is not None and s.agent != agent):
                    continue
                key = (s.hour, s.name, s.agent)
                prev = sums.get(key)
                sums[key] = s if prev is None else prev.plus(s)
        return [sums[k] for k in sorted(sums)]

    # -- pipelines and retention ----------------------------------------------------------------

    async def put_pipeline(self, definition: PipelineDefinition) -> None:
        item = self.items.pipeline_item(definition)
        try:
            await self._caller.call("PutItem", self.put_params(item, self.models.pipeline.PK.does_not_exist()))
        except DynamoCallError as exc:
            if not exc.condition_failed:
                raise self._caller.to_error(exc) from exc
            stored = await self.get_pipeline(definition.name, definition.version)
            if stored.digest != definition.digest:
                raise PipelineDefinitionError(
                    f"pipeline {definition.name} version {definition.version} is stored with another shape; bump "
                    f"the version when you change the tasks or their dependencies", pipeline=definition.name,
                    version=definition.version) from None

    async def get_pipeline(self, name: str, version: str) -> PipelineDefinition:
        pk, sk = pipeline_key(name, version)
        raw = await self.get_raw(pk, sk)
        if raw is None:
            raise PipelineNotFoundError(f"pipeline {name} version {version} is not stored in {self.describe()}; "
                                        f"run it once (or put_pipeline) to store it", pipeline=name, version=version)
        return self.items.pipeline(raw)

    async def purge(self, *, ended_before: float) -> PurgeReport:
        """Delete finished sessions that ended before the bound, found via the status index.

        Events and metrics of live sessions expire through DynamoDB TTL (`ttl`).
        """
        sessions = items = 0
        for status in (SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED):
            cursor: str | None = None
            while True:
                page = await self.list_sessions(status, updated_before=ended_before, limit=100, cursor=cursor)
                for found in page.items:
                    n = await self._purge_one(found.session_id, ended_before)
                    if n:
                        sessions += 1
                        items += n
                cursor = page.cursor
                if cursor is None:
                    break
        return PurgeReport(sessions=sessions, items=items)

    async def _purge_one(self, sid: str, ended_before: float) -> int:
        pk = session_pk(sid)
        keys, _ = await self.query_raw(pk, Path("PK") == pk, projection="PK, SK", session=sid)
        meta = await self.get_raw(pk, "META", session=sid)  # never decide on index data
        if meta is None:
            return 0
        current = self.items.session(meta, sid)
        if not current.status.is_final or (current.completed_at or current.updated_at) > ended_before:
            return 0
        body = [self.key(pk, k["SK"]["S"]) for k in keys if k["SK"]["S"] != "META"]
        await self.batch_put([], deletes=body, session=sid)
        await self._caller.call("DeleteItem", {"TableName": self.table, "Key": self.key(pk, "META")}, session=sid)
        return len(body) + 1


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


def _day_start(day: str) -> float:
    from datetime import datetime, timezone

    try:
        return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise ValidationError(f"metric day {day!r} is not YYYY-MM-DD") from None
