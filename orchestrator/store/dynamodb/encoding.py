"""Records <-> DynamoDB items: building items to write, and reading them back safely.

Reading checks every item before it is used: a missing schema version or kind (an item
the SDK did not write), a version newer than this code, or a missing attribute raises
`SchemaError` naming the table, session and task, so nothing is ever half-read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pynamodb.attributes import NumberAttribute

from orchestrator.codec import Codec
from orchestrator.errors import SchemaError
from orchestrator.store.dynamodb.expressions import number_text
from orchestrator.store.dynamodb.models import (
    Models,
    chunk_sk,
    dep_sk,
    event_sk,
    gsi1,
    gsi2,
    gsi3,
    gsi4,
    metric_pk,
    metric_sk,
    pipeline_key,
    session_pk,
    signal_sk,
    task_sk,
)
from orchestrator.store.records import (
    ATTEMPT_HISTORY_LIMIT,
    SCHEMA_VERSION,
    AttemptRecord,
    ChunkRef,
    Edge,
    ErrorInfo,
    Event,
    MetricSummary,
    NewTask,
    OwnerKind,
    PipelineDefinition,
    Progress,
    SessionRecord,
    SessionStatus,
    SignalRecord,
    TaskRecord,
    TaskStatus,
    UserProjectRecord,
)
from orchestrator.store.rules import status_time

__all__ = ["CHUNK_BYTES", "ItemCodec", "ItemShape", "Staged", "error_json", "hist_key",
           "progress_json"]

#: Size of one chunk item's payload (DynamoDB items are at most 400 KB).
CHUNK_BYTES = 300_000


def progress_json(p: Progress) -> str:
    return json.dumps({"current": p.current, "total": p.total, "phase": p.phase, "step": p.step})


def error_json(e: ErrorInfo | None) -> str | None:
    if e is None:
        return None
    return json.dumps({"type": e.type, "message": e.message, "traceback": e.traceback, "retryable": e.retryable})


def _error(text: str | None) -> ErrorInfo | None:
    if not text:
        return None
    d = json.loads(text)
    return ErrorInfo(type=d["type"], message=d["message"], traceback=d.get("traceback", ""),
                     retryable=bool(d.get("retryable", True)))


def _progress(text: str) -> Progress:
    d = json.loads(text)
    return Progress(current=d.get("current", 0), total=d.get("total", 0), phase=d.get("phase"), step=d.get("step"))


_FRESH_PROGRESS = progress_json(Progress())


def hist_key(attempt: int) -> str:
    return f"{attempt:06d}"


def history_entry_json(attempt: int, fence: int, status: TaskStatus, ended_at: float, error: ErrorInfo | None) -> str:
    return json.dumps({"attempt": attempt, "fence": fence, "status": status.value, "ended_at": ended_at,
                       "error": error_json(error)})


@dataclass(frozen=True, slots=True)
class Staged:
    """Which completion adopts an item added at run time (None: part of the creation)."""

    added_by: str | None
    added_fence: int | None
    added_attempt: int | None


class ItemShape:
    """An item class's attributes, read once: items are built and read through PynamoDB's
    attribute serializers directly, without a model instance per item (several ms each)."""

    def __init__(self, cls: type[Any]) -> None:
        attrs = cls.get_attributes()
        self.attrs: dict[str, tuple[str, str, Any]] = {
            name: (a.attr_name, a.attr_type, a) for name, a in attrs.items()}
        self.required = tuple(sorted(a.attr_name for a in attrs.values() if not a.null))
        self._plain = {name: (attr_name, kind, number_text if type(a) is NumberAttribute else a.serialize,
                              a.deserialize)
                       for name, (attr_name, kind, a) in self.attrs.items() if kind != "M"}

    def item(self, **values: Any) -> dict[str, Any]:
        """The raw item of `values` (None: absent, as PynamoDB writes it); maps are written empty."""
        out: dict[str, Any] = {}
        plain = self._plain
        for name, value in values.items():
            if value is None:
                continue
            if name in plain:
                attr_name, kind, serialize, _ = plain[name]
                out[attr_name] = {kind: serialize(value)}
            else:
                if value:
                    raise ValueError(f"map attribute {name} is written empty at creation")
                out[self.attrs[name][0]] = {"M": {}}
        return out

    def fields(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Every plain attribute of `raw`, deserialized (None when absent); maps are left out."""
        out: dict[str, Any] = {}
        for name, (attr_name, kind, _, deserialize) in self._plain.items():
            value = raw.get(attr_name)
            out[name] = None if value is None else deserialize(value[kind])
        return out


def _num(raw: dict[str, Any], name: str) -> int | None:
    value = raw.get(name, {}).get("N")
    return None if value is None else int(float(value))


class ItemCodec:
    """Builds and reads items of one store's table."""

    def __init__(self, models: Models, codec: Codec, table: str, shards: int) -> None:
        self.models = models
        self.codec = codec
        self.table = table
        self.shards = shards
        self._shapes: dict[type[Any], ItemShape] = {}
        self._s, self._t, self._e, self._sig = (self.shape(models.session), self.shape(models.task),
                                                self.shape(models.edge), self.shape(models.signal))

    def shape(self, cls: type[Any]) -> ItemShape:
        shape = self._shapes.get(cls)
        if shape is None:
            shape = self._shapes[cls] = ItemShape(cls)
        return shape

    # -- checking ---------------------------------------------------------------------

    def check(self, raw: dict[str, Any], kind: str, *, session: str | None = None, task: str | None = None) -> None:
        """SchemaError unless `raw` is a `kind` item of a schema version this code reads."""
        pk = raw.get("PK", {}).get("S")
        sk = raw.get("SK", {}).get("S")
        where = f"item {pk}/{sk} in table {self.table}" + (f" (session {session}" if session else "") + (
            f", task {task})" if task else (")" if session else ""))
        ctx = {"session_id": session, "task_id": task, "table": self.table}
        version = _num(raw, "v")
        found = raw.get("kind", {}).get("S")
        if version is None or found is None:
            raise SchemaError(
                f"{where} has no schema version or kind: it was not written by this SDK. Remove it, or keep "
                f"other data out of the SDK's key prefixes (SESSION#, PIPELINE#, METRIC#, USER#) "
                f"[table={self.table}, session={session or '-'}, task={task or '-'}]", **ctx)
        if version > SCHEMA_VERSION:
            raise SchemaError.newer(where, version, SCHEMA_VERSION, **ctx)
        cls = self.models.by_kind(found)
        if found != kind or cls is None:
            raise SchemaError(
                f"{where} is a {found!r} item where a {kind!r} item belongs; the table holds data the SDK "
                f"did not write there. Remove it [table={self.table}, session={session or '-'}]", **ctx)
        missing = [name for name in self.shape(cls).required if name not in raw]
        if missing:
            raise SchemaError(
                f"{where} lacks attribute(s) {', '.join(missing)}; it was not written by this SDK (or was "
                f"edited by hand). Restore or remove it [table={self.table}, session={session or '-'}]", **ctx)

    # -- sessions -----------------------------------------------------------------------

    def session_item(self, s: SessionRecord, tok: str | None, ttl_seconds: float, *, input_text: str,
                     metadata_text: str) -> dict[str, Any]:
        """The META item; input and metadata arrive encoded (and size-checked) by the caller."""
        g1pk, g1sk = gsi1(s.status.value, s.session_id, status_time(s), self.shards)
        g2 = gsi2(s.project_id, s.session_id, s.created_at) if s.project_id else (None, None)
        g3 = gsi3(s.user_id, s.session_id, s.created_at) if s.user_id is not None else (None, None)
        g4 = (gsi4(s.pipeline_type, s.session_id, s.created_at, self.shards) if s.pipeline_type is not None
              else (None, None))
        return self._s.item(
            PK=session_pk(s.session_id), SK="META", v=SCHEMA_VERSION, kind="session", tok=tok,
            ttl=int(s.expires_at) if s.expires_at is not None else None,
            GSI1PK=g1pk, GSI1SK=g1sk, GSI2PK=g2[0], GSI2SK=g2[1], GSI3PK=g3[0], GSI3SK=g3[1], GSI4PK=g4[0],
            GSI4SK=g4[1],
            pipeline=s.pipeline, pipeline_version=s.pipeline_version, status=s.status.value,
            owner_kind=s.owner_kind.value, input=input_text,
            project_id=s.project_id, user_id=s.user_id, pipeline_type=s.pipeline_type,
            progress=progress_json(s.progress), current_agents=json.dumps(list(s.current_agents)),
            created_at=s.created_at, updated_at=s.updated_at, completed_at=s.completed_at,
            lease_owner=s.lease_owner, lease_expires=s.lease_expires_at, fence=s.fence,
            signal_seq=s.signal_seq, wait_seq=s.wait_seq, wake_at=s.wake_at, redrive_count=s.redrive_count,
            max_redrives=s.max_redrives, needs_human=s.needs_human, needs_human_reason=s.needs_human_reason,
            cancel_requested=s.cancel_requested, reason=s.reason,
            trace_context=json.dumps(dict(s.trace_context)),
            metadata=metadata_text, ttl_seconds=ttl_seconds,
        )

    def session(self, raw: dict[str, Any], sid: str | None = None) -> SessionRecord:
        self.check(raw, "session", session=sid)
        m = self._s.fields(raw)
        return SessionRecord(
            session_id=m["PK"].split("#", 1)[1], pipeline=m["pipeline"], pipeline_version=m["pipeline_version"],
            status=SessionStatus(m["status"]), owner_kind=OwnerKind(m["owner_kind"]),
            input=self.codec.decode(m["input"]), project_id=m["project_id"], user_id=m["user_id"],
            pipeline_type=m["pipeline_type"], progress=_progress(m["progress"]),
            current_agents=tuple(json.loads(m["current_agents"])), created_at=m["created_at"],
            updated_at=m["updated_at"], completed_at=m["completed_at"], lease_owner=m["lease_owner"],
            lease_expires_at=m["lease_expires"], fence=int(m["fence"]), signal_seq=int(m["signal_seq"]),
            wait_seq=int(m["wait_seq"]), wake_at=m["wake_at"], redrive_count=int(m["redrive_count"]),
            max_redrives=int(m["max_redrives"]), needs_human=m["needs_human"],
            needs_human_reason=m["needs_human_reason"], cancel_requested=m["cancel_requested"], reason=m["reason"],
            trace_context=json.loads(m["trace_context"]), metadata=self.codec.decode(m["metadata"]) or {},
            expires_at=m["ttl"], schema_version=int(m["v"]),
        )

    # -- tasks and edges ------------------------------------------------------------------

    def task_item(self, sid: str, t: NewTask, tok: str | None, now: float, staged: Staged,
                  encoded_input: str | None) -> dict[str, Any]:
        return self._t.item(
            PK=session_pk(sid), SK=task_sk(t.task_id), v=SCHEMA_VERSION, kind="task", tok=tok,
            added_by=staged.added_by, added_fence=staged.added_fence, added_attempt=staged.added_attempt,
            agent=t.agent, status=TaskStatus.PENDING.value, input=encoded_input, priority=t.priority,
            max_attempts=t.max_attempts, fence=0, attempt=0, attempt_base=0, hist={}, hstart={},
            progress=_FRESH_PROGRESS, deps=json.dumps(list(t.depends_on)), updated_at=now,
        )

    def edge_item(self, sid: str, tid: str, dep: str, tok: str | None, staged: Staged) -> dict[str, Any]:
        return self._e.item(
            PK=session_pk(sid), SK=dep_sk(tid, dep), v=SCHEMA_VERSION, kind="edge", tok=tok,
            added_by=staged.added_by, added_fence=staged.added_fence, added_attempt=staged.added_attempt,
            task_id=tid, depends_on=dep,
        )

    def staged(self, raw: dict[str, Any]) -> Staged:
        return Staged(raw.get("added_by", {}).get("S"), _num(raw, "added_fence"), _num(raw, "added_attempt"))

    def task(self, raw: dict[str, Any], sid: str, tid: str, output: Any = None, joined: bool = False) -> TaskRecord:
        """A task record; `output`/`joined` carry a chunked output already joined by the caller."""
        self.check(raw, "task", session=sid, task=tid)
        m = self._t.fields(raw)
        hist = {k: v["S"] for k, v in raw.get("hist", {}).get("M", {}).items()}
        hstart = {k: float(v["N"]) for k, v in raw.get("hstart", {}).get("M", {}).items() if "N" in v}
        history = []
        for key in sorted(hist)[-ATTEMPT_HISTORY_LIMIT:]:
            e = json.loads(hist[key])
            started = hstart.get(key)
            history.append(AttemptRecord(
                attempt=int(e["attempt"]), fence=int(e["fence"]), status=TaskStatus(e["status"]),
                started_at=float(started) if started else None, ended_at=e.get("ended_at"),
                error=_error(e.get("error")),
            ))
        ref = None
        if m["output_ref"]:
            r = json.loads(m["output_ref"])
            ref = ChunkRef(fence=r["fence"], attempt=r["attempt"], count=r["count"], sha256=r["sha256"], size=r["size"])
        return TaskRecord(
            task_id=tid, agent=m["agent"], status=TaskStatus(m["status"]), input=self.codec.decode(m["input"]),
            priority=int(m["priority"]), max_attempts=int(m["max_attempts"]), fence=int(m["fence"]),
            attempt=int(m["attempt"]), attempt_base=int(m["attempt_base"]), not_before=m["not_before"],
            waiting_for=m["waiting_for"],
            last_error=_error(m["last_error"]), history=tuple(history), started_at=m["started_at"],
            ended_at=m["ended_at"], output=output if joined else self.codec.decode(m["output"]), output_ref=ref,
            progress=_progress(m["progress"]), checkpoint=self.codec.decode(m["checkpoint"]),
            depends_on=tuple(json.loads(m["deps"])), added_by=m["added_by"], updated_at=m["updated_at"],
        )

    def definition(self, raw: dict[str, Any]) -> tuple[str, str | None, int, int, tuple[str, ...]]:
        """A stored task's static definition (agent, input text, priority, max attempts, deps)."""
        return (raw["agent"]["S"], raw.get("input", {}).get("S"), _num(raw, "priority") or 0,
                _num(raw, "max_attempts") or 0, tuple(json.loads(raw["deps"]["S"])))

    # -- chunks ---------------------------------------------------------------------------

    def chunk_items(self, sid: str, tid: str, fence: int, attempt: int, text: str,
                    ttl: int) -> tuple[list[dict[str, Any]], ChunkRef]:
        data = text.encode("utf-8")
        parts: list[str] = []
        start = 0
        while start < len(data):
            end = min(len(data), start + CHUNK_BYTES)
            while end < len(data) and (data[end] & 0xC0) == 0x80:  # never split a UTF-8 sequence
                end -= 1
            parts.append(data[start:end].decode("utf-8"))
            start = end
        shape = self.shape(self.models.chunk)
        items = [shape.item(PK=session_pk(sid), SK=chunk_sk(tid, fence, attempt, n), v=SCHEMA_VERSION, kind="chunk",
                            ttl=ttl, data=part, n=n) for n, part in enumerate(parts)]
        ref = ChunkRef(fence=fence, attempt=attempt, count=len(parts), sha256=hashlib.sha256(data).hexdigest(),
                       size=len(data))
        return items, ref

    def join_chunks(self, sid: str, tid: str, ref: ChunkRef, chunks: dict[str, dict[str, Any]]) -> Any:
        """The output named by `ref`, joined from `chunks` (by SK) and verified."""
        parts = []
        for n in range(ref.count):
            raw = chunks.get(chunk_sk(tid, ref.fence, ref.attempt, n))
            if raw is None:
                raise SchemaError(
                    f"task {tid} of session {sid}: output chunk {n + 1} of {ref.count} (fence {ref.fence}, "
                    f"attempt {ref.attempt}) is missing from table {self.table}; it was deleted by hand or by "
                    f"TTL. Reset the task to run it again [table={self.table}, session={sid}, task={tid}]",
                    session_id=sid, task_id=tid, table=self.table)
            self.check(raw, "chunk", session=sid, task=tid)
            parts.append(raw["data"]["S"])
        text = "".join(parts)
        data = text.encode("utf-8")
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise SchemaError(
                f"task {tid} of session {sid}: the joined output chunks do not match the size/sha256 its "
                f"completion recorded; the items were altered. Reset the task to run it again "
                f"[table={self.table}, session={sid}, task={tid}]", session_id=sid, task_id=tid, table=self.table)
        return self.codec.decode(text)

    # -- signals, events, pipelines, metrics --------------------------------------------

    def signal_item(self, sid: str, tid: str, name: str, payload_text: str, seq: int, now: float) -> dict[str, Any]:
        return self._sig.item(PK=session_pk(sid), SK=signal_sk(tid, name), v=SCHEMA_VERSION, kind="signal",
                              task_id=tid, name=name, payload=payload_text, seq=seq, sent_at=now)

    def signal(self, raw: dict[str, Any], sid: str) -> SignalRecord:
        self.check(raw, "signal", session=sid)
        m = self._sig.fields(raw)
        return SignalRecord(task_id=m["task_id"], name=m["name"], payload=self.codec.decode(m["payload"]),
                            seq=int(m["seq"]), sent_at=m["sent_at"])

    def edge(self, raw: dict[str, Any], sid: str) -> Edge:
        self.check(raw, "edge", session=sid)
        return Edge(task_id=raw["task_id"]["S"], depends_on=raw["depends_on"]["S"])

    def event_item(self, e: Event, data_text: str, ttl: int) -> dict[str, Any]:
        return self.shape(self.models.event).item(
            PK=session_pk(e.session_id), SK=event_sk(e.cursor), v=SCHEMA_VERSION, kind="event", ttl=ttl,
            session_id=e.session_id, ev_kind=e.kind, at=e.at, task_id=e.task_id, message=e.message,
            data=data_text, writer=e.writer, seq=e.seq, level=e.level,
        )

    def event(self, raw: dict[str, Any], sid: str) -> Event:
        self.check(raw, "event", session=sid)
        m = self.models.event.from_raw_data(raw)
        return Event(session_id=m.session_id, kind=m.ev_kind, at=m.at, task_id=m.task_id, message=m.message or "",
                     data=self.codec.decode(m.data) or {}, writer=m.writer or "", seq=int(m.seq), level=m.level)

    def pipeline_item(self, d: PipelineDefinition) -> dict[str, Any]:
        pk, sk = pipeline_key(d.name, d.version)
        tasks = [{"task_id": t.task_id, "agent": t.agent, "input": self.codec.to_jsonable(t.input, where=f"{t.task_id}.input"),
                  "priority": t.priority, "max_attempts": t.max_attempts, "depends_on": list(t.depends_on)}
                 for t in d.tasks]
        item = self.models.pipeline(PK=pk, SK=sk, v=SCHEMA_VERSION, kind="pipeline", name=d.name, version=d.version,
                                    tasks=json.dumps(tasks), digest=d.digest, created_at=d.created_at)
        data: dict[str, Any] = item.serialize()
        return data

    def pipeline(self, raw: dict[str, Any]) -> PipelineDefinition:
        self.check(raw, "pipeline")
        m = self.models.pipeline.from_raw_data(raw)
        tasks = tuple(NewTask(task_id=t["task_id"], agent=t["agent"], input=self.codec.decode(json.dumps(t["input"])),
                              priority=t["priority"], max_attempts=t["max_attempts"],
                              depends_on=tuple(t["depends_on"])) for t in json.loads(m.tasks))
        return PipelineDefinition(name=m.name, version=m.version, tasks=tasks, created_at=m.created_at)

    def metric_item(self, writer: str, seq: int, s: MetricSummary, ttl: int) -> dict[str, Any]:
        item = self.models.metric(
            PK=metric_pk(s.day, writer, self.shards), SK=metric_sk(s.name, s.agent, s.hour, writer),
            v=SCHEMA_VERSION, kind="metric", ttl=ttl, day=s.day, hour=s.hour, name=s.name, agent=s.agent,
            writer=writer, seq=seq, total=s.count, errors=s.errors, blocked=s.blocked, sum_ms=s.sum_ms,
            min_ms=s.min_ms, max_ms=s.max_ms, buckets=json.dumps(list(s.buckets)),
        )
        data: dict[str, Any] = item.serialize()
        return data

    def metric(self, raw: dict[str, Any]) -> MetricSummary:
        self.check(raw, "metric")
        m = self.models.metric.from_raw_data(raw)
        return MetricSummary(day=m.day, hour=int(m.hour), name=m.name, agent=m.agent, count=int(m.total),
                             errors=int(m.errors), blocked=int(m.blocked), sum_ms=float(m.sum_ms), min_ms=m.min_ms,
                             max_ms=m.max_ms, buckets=tuple(json.loads(m.buckets)))

    # -- user projects ----------------------------------------------------------------------

    def user_project(self, raw: dict[str, Any]) -> UserProjectRecord:
        """A project of a user's history, checked like every other item before it is read."""
        self.check(raw, "user_project")
        m = self.models.user_project.from_raw_data(raw)
        return UserProjectRecord(
            user_id=m.user_id, project_id=m.project_id, project_name=m.project_name, description=m.description or "",
            tech_stack=tuple(json.loads(m.tech_stack)), file_path=m.file_path, size_mb=float(m.size_mb),
            download_count=int(m.download_count), created_at=float(m.created_at), updated_at=float(m.updated_at),
            last_accessed=m.last_accessed, metadata=self.codec.decode(m.metadata) or {}, schema_version=int(m.v),
        )
