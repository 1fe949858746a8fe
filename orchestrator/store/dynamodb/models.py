"""PynamoDB item models of the single table, bound per store instance (DESIGN.md §5).

The classes below declare item shapes only; they carry no table, region or host. A
store calls `bind_models(config)`, which makes subclasses with their own `Meta` and
one shared `TableConnection`, so two stores with different tables or endpoints live
in one process and nothing is configured at import time.

Key layout (one partition per session, so resume is one Query with `SK >= "META"`):

    SESSION#<sid> / META                          session (GSI1 status, GSI2 project, GSI3 user, GSI4 type)
    SESSION#<sid> / TASK#<tid>                    task
    SESSION#<sid> / TASK#<tid>#DEP#<dep>          dependency edge
    SESSION#<sid> / TASK#<tid>#CHUNK#<f>.<a>#<n>  large-output chunk (named by a completion)
    SESSION#<sid> / TASK#<tid>#SIGNAL#<name>      signal for a waiting task
    SESSION#<sid> / EVENT#<ts>#<writer>#<seq>     event (sorts before META)
    PIPELINE#<name> / VERSION#<v>                 pipeline definition
    METRIC#<day>#<shard> / <name>#<agent>#<hour>#<writer>   per-writer counters
    USER#<uid> / PROJECT#<pid>                    a project in the user's history
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.connection import Connection, TableConnection
from pynamodb.connection.base import MetaTable
from pynamodb.models import Model

from orchestrator.store.config import DynamoDBConfig

__all__ = [
    "GSI1",
    "GSI2",
    "GSI3",
    "GSI4",
    "Models",
    "bind_models",
    "chunk_sk",
    "created_sk",
    "dep_sk",
    "event_sk",
    "fmt_time",
    "gsi1",
    "gsi2",
    "gsi3",
    "gsi4",
    "metric_pk",
    "metric_sk",
    "pipeline_key",
    "project_sk",
    "session_pk",
    "signal_sk",
    "status_shard",
    "task_range",
    "task_sk",
    "type_pk",
    "user_pk",
]

GSI1 = "GSI1"
GSI2 = "GSI2"
GSI3 = "GSI3"  # sessions by user (keys only): `USER#<uid>` / `<created_at>#<sid>`
GSI4 = "GSI4"  # sessions by pipeline type (keys only, sharded): `TYPE#<type>#<shard>` / `<created_at>#<sid>`
META = "META"
# Every character an id may hold sorts after '#' and before '~', so `TASK#<tid>#~`
# bounds a task's own items without reaching a task whose id merely starts with <tid>.
HIGH = "~"


def fmt_time(ts: float) -> str:
    """Fixed-width epoch seconds that sort as text: `0001750000000.000000`."""
    return f"{max(0.0, ts):020.6f}"


def session_pk(sid: str) -> str:
    return f"SESSION#{sid}"


def task_sk(tid: str) -> str:
    return f"TASK#{tid}"


def task_range(tid: str) -> tuple[str, str]:
    """Sort-key bounds (inclusive) of a task item and its edges, chunks and signals."""
    return f"TASK#{tid}", f"TASK#{tid}#{HIGH}"


def dep_sk(tid: str, dep: str) -> str:
    return f"TASK#{tid}#DEP#{dep}"


def chunk_sk(tid: str, fence: int, attempt: int, n: int) -> str:
    return f"TASK#{tid}#CHUNK#{fence}.{attempt}#{n:05d}"


def signal_sk(tid: str, name: str) -> str:
    return f"TASK#{tid}#SIGNAL#{name}"


def event_sk(cursor: str) -> str:
    return f"EVENT#{cursor}"


def pipeline_key(name: str, version: str) -> tuple[str, str]:
    return f"PIPELINE#{name}", f"VERSION#{version}"


def user_pk(user_id: str) -> str:
    return f"USER#{user_id}"


def project_sk(project_id: str) -> str:
    return f"PROJECT#{project_id}"


def status_shard(sid: str, shards: int) -> int:
    """Stable shard of a session (or writer) id: crc32 modulo the shard count."""
    return zlib.crc32(sid.encode()) % shards


def gsi1(status: str, sid: str, time: float, shards: int) -> tuple[str, str]:
    return f"STATUS#{status}#{status_shard(sid, shards)}", f"{fmt_time(time)}#{sid}"


def gsi2(project_id: str, sid: str, created_at: float) -> tuple[str, str]:
    return f"PROJECT#{project_id}", f"{fmt_time(created_at)}#{sid}"


def created_sk(sid: str, created_at: float) -> str:
    return f"{fmt_time(created_at)}#{sid}"


def gsi3(user_id: str, sid: str, created_at: float) -> tuple[str, str]:
    return f"USER#{user_id}", created_sk(sid, created_at)


def type_pk(pipeline_type: str, shard: int) -> str:
    """The type is free text (it may hold '#'); the shard is always the last segment."""
    return f"TYPE#{pipeline_type}#{shard}"


def gsi4(pipeline_type: str, sid: str, created_at: float, shards: int) -> tuple[str, str]:
    return type_pk(pipeline_type, status_shard(sid, shards)), created_sk(sid, created_at)


def metric_pk(day: str, writer: str, shards: int) -> str:
    return f"METRIC#{day}#{status_shard(writer, shards)}"


def metric_sk(name: str, agent: str, hour: int, writer: str) -> str:
    return f"{name}#{agent}#{hour:02d}#{writer}"


class _Item(Model):
    """Attributes every item carries: keys, schema version `v`, `kind`, creation token, TTL."""

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True)
    v = NumberAttribute()
    kind = UnicodeAttribute()
    tok = UnicodeAttribute(null=True)  # creation token; readers ignore items not matching META's
    ttl = NumberAttribute(null=True)  # epoch seconds; DynamoDB TTL deletes late, readers filter


class _Staged(_Item):
    """Items an agent may add at run time: invisible until its completion adopts them."""

    added_by = UnicodeAttribute(null=True)
    added_fence = NumberAttribute(null=True)
    added_attempt = NumberAttribute(null=True)


class SessionItem(_Item):
    GSI1PK = UnicodeAttribute()
    GSI1SK = UnicodeAttribute()
    GSI2PK = UnicodeAttribute(null=True)
    GSI2SK = UnicodeAttribute(null=True)
    GSI3PK = UnicodeAttribute(null=True)
    GSI3SK = UnicodeAttribute(null=True)
    GSI4PK = UnicodeAttribute(null=True)
    GSI4SK = UnicodeAttribute(null=True)
    pipeline = UnicodeAttribute()
    pipeline_version = UnicodeAttribute()
    status = UnicodeAttribute()
    owner_kind = UnicodeAttribute()
    input = UnicodeAttribute(null=True)  # codec JSON
    project_id = UnicodeAttribute(null=True)
    user_id = UnicodeAttribute(null=True)
    pipeline_type = UnicodeAttribute(null=True)
    progress = UnicodeAttribute()  # JSON {current,total,phase,step}
    current_agents = UnicodeAttribute()  # JSON list
    created_at = NumberAttribute()
    updated_at = NumberAttribute()
    completed_at = NumberAttribute(null=True)
    lease_owner = UnicodeAttribute(null=True)
    lease_expires = NumberAttribute(null=True)
    fence = NumberAttribute()
    signal_seq = NumberAttribute()
    wait_seq = NumberAttribute()
    wake_at = NumberAttribute(null=True)
    redrive_count = NumberAttribute()
    max_redrives = NumberAttribute()
    needs_human = BooleanAttribute()
    needs_human_reason = UnicodeAttribute(null=True)
    cancel_requested = BooleanAttribute()
    reason = UnicodeAttribute(null=True)
    trace_context = UnicodeAttribute()  # JSON
    metadata = UnicodeAttribute()  # codec JSON
    ttl_seconds = NumberAttribute()  # retention after the end, copied into `ttl` by finish


class TaskItem(_Staged):
    agent = UnicodeAttribute()
    status = UnicodeAttribute()
    input = UnicodeAttribute(null=True)
    priority = NumberAttribute()
    max_attempts = NumberAttribute()
    fence = NumberAttribute()
    attempt = NumberAttribute()
    attempt_base = NumberAttribute()
    not_before = NumberAttribute(null=True)
    waiting_for = UnicodeAttribute(null=True)  # the signal a WAITING task waits for; absent in older items
    last_error = UnicodeAttribute(null=True)  # JSON ErrorInfo
    # Bounded attempt history without a read: entries keyed by zero-padded attempt
    # number; each finishing write SETs its entry and REMOVEs the one LIMIT back.
    hist: MapAttribute[str, Any] = MapAttribute(default=dict)  # type: ignore[no-untyped-call]
    hstart: MapAttribute[str, Any] = MapAttribute(default=dict)  # type: ignore[no-untyped-call]  # started_at of each entry (0 = never)
    started_at = NumberAttribute(null=True)
    ended_at = NumberAttribute(null=True)
    output = UnicodeAttribute(null=True)
    output_ref = UnicodeAttribute(null=True)  # JSON ChunkRef
    progress = UnicodeAttribute()
    checkpoint = UnicodeAttribute(null=True)
    deps = UnicodeAttribute()  # JSON list, the static definition (edges are items too)
    updated_at = NumberAttribute()


class EdgeItem(_Staged):
    task_id = UnicodeAttribute()
    depends_on = UnicodeAttribute()


class ChunkItem(_Item):
    data = UnicodeAttribute()
    n = NumberAttribute()


class SignalItem(_Item):
    task_id = UnicodeAttribute()
    name = UnicodeAttribute()
    payload = UnicodeAttribute(null=True)
    seq = NumberAttribute()
    sent_at = NumberAttribute()


class EventItem(_Item):
    session_id = UnicodeAttribute()
    ev_kind = UnicodeAttribute()
    at = NumberAttribute()
    task_id = UnicodeAttribute(null=True)
    message = UnicodeAttribute(null=True)
    data = UnicodeAttribute()
    writer = UnicodeAttribute(null=True)
    seq = NumberAttribute()
    level = UnicodeAttribute()


class PipelineItem(_Item):
    name = UnicodeAttribute()
    version = UnicodeAttribute()
    tasks = UnicodeAttribute()  # JSON list of task definitions
    digest = UnicodeAttribute()
    created_at = NumberAttribute()


class MetricItem(_Item):
    day = UnicodeAttribute()
    hour = NumberAttribute()
    name = UnicodeAttribute()
    agent = UnicodeAttribute()
    writer = UnicodeAttribute()
    seq = NumberAttribute()
    total = NumberAttribute(attr_name="count")  # `count` would shadow Model.count()
    errors = NumberAttribute()
    blocked = NumberAttribute()
    sum_ms = NumberAttribute()
    min_ms = NumberAttribute(null=True)
    max_ms = NumberAttribute(null=True)
    buckets = UnicodeAttribute()  # JSON list of counts


class UserProjectItem(_Item):
    user_id = UnicodeAttribute()
    project_id = UnicodeAttribute()
    project_name = UnicodeAttribute()
    description = UnicodeAttribute(null=True)  # absent for ""
    tech_stack = UnicodeAttribute()  # JSON list
    file_path = UnicodeAttribute(null=True)
    size_mb = NumberAttribute()
    download_count = NumberAttribute()
    last_download = UnicodeAttribute(null=True)  # id of the download counted last (retries skip it)
    created_at = NumberAttribute()
    updated_at = NumberAttribute()
    last_accessed = NumberAttribute(null=True)
    metadata = UnicodeAttribute()  # codec JSON


#: `kind` attribute value -> unbound model class.
KINDS: dict[str, type[_Item]] = {
    "session": SessionItem,
    "task": TaskItem,
    "edge": EdgeItem,
    "chunk": ChunkItem,
    "signal": SignalItem,
    "event": EventItem,
    "pipeline": PipelineItem,
    "metric": MetricItem,
    "user_project": UserProjectItem,
}


@dataclass(frozen=True, slots=True)
class Models:
    """Model classes bound to one store's table, and the connection they share."""

    connection: TableConnection
    session: type[SessionItem]
    task: type[TaskItem]
    edge: type[EdgeItem]
    chunk: type[ChunkItem]
    signal: type[SignalItem]
    event: type[EventItem]
    pipeline: type[PipelineItem]
    metric: type[MetricItem]
    user_project: type[UserProjectItem]

    def by_kind(self, kind: str) -> type[_Item] | None:
        return {
            "session": self.session, "task": self.task, "edge": self.edge, "chunk": self.chunk,
            "signal": self.signal, "event": self.event, "pipeline": self.pipeline, "metric": self.metric,
            "user_project": self.user_project,
        }.get(kind)


def connect_timeout(config: DynamoDBConfig) -> float:
    """Connection setup gets a small slice of the request timeout: an unreachable
    endpoint must fail fast, and the store's own retries bound the total."""
    return min(config.timeout_s, 2.0)


def bind_models(config: DynamoDBConfig, meta_table: dict[str, Any]) -> Models:
    """Subclasses of the item models bound to `config`'s table, region and endpoint.

    botocore's own retries are switched off (`total_max_attempts=1`): the store's choke
    point retries throttling, 5xx and timeouts with backoff on the injected clock, so
    the two layers never multiply (8 × 3 attempts) and tests can count every request.
    """

    class Meta:
        table_name = config.table_name
        region = config.region
        host = config.endpoint
        connect_timeout_seconds = connect_timeout(config)
        read_timeout_seconds = config.timeout_s
        max_retry_attempts = 0
        max_pool_connections = config.max_pool_connections
        billing_mode = config.billing_mode

    table_conn = TableConnection(
        config.table_name,
        region=config.region,
        host=config.endpoint,
        connect_timeout_seconds=connect_timeout(config),
        read_timeout_seconds=config.timeout_s,
        max_retry_attempts=0,
        max_pool_connections=config.max_pool_connections,
        meta_table=MetaTable(meta_table),
    )
    table_conn.connection = Connection(
        region=config.region,
        host=config.endpoint,
        read_timeout_seconds=config.timeout_s,
        connect_timeout_seconds=connect_timeout(config),
        max_retry_attempts=0,
        retry_configuration={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=config.max_pool_connections,
    )
    table_conn.connection.add_meta_table(MetaTable(meta_table))

    def bind(base: type[Any]) -> Any:
        cls = type(f"{base.__name__}_{config.table_name}", (base,), {"Meta": Meta, "__module__": __name__})
        # One botocore client for every item class of the store; `type()` made the class, so
        # mypy cannot see the attribute PynamoDB reads.
        setattr(cls, "_connection", table_conn)  # noqa: B010
        return cls

    return Models(
        connection=table_conn,
        session=bind(SessionItem),
        task=bind(TaskItem),
        edge=bind(EdgeItem),
        chunk=bind(ChunkItem),
        signal=bind(SignalItem),
        event=bind(EventItem),
        pipeline=bind(PipelineItem),
        metric=bind(MetricItem),
        user_project=bind(UserProjectItem),
    )
