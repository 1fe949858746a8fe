"""The Store protocol: durable state in domain words, no keys, no backend types.

Semantics every backend must keep (the contract suite in `orchestrator.testing`
proves them on each):

- **Fenced session writes.** `renew_lease`, `release_lease`, `update_session`,
  `finish_session` and `wait_session` apply only while the session's fence and owner
  equal the lease's; otherwise `LeaseLostError` (a newer claim) or `SessionStateError`.
- **Fenced task writes.** A `TaskWrite` applies only if the task is not COMPLETED and
  (task.fence < lease.fence, or task.fence == lease.fence and task.attempt equals the
  expected attempt: `write.attempt - 1` for START, `write.attempt` otherwise). It sets
  the task's fence and attempt. A rejected write is classified by re-reading (strongly
  consistent): the same state already present -> ALREADY_APPLIED (a retry of a write
  whose response was lost); COMPLETED by another writer -> COMPLETED_ELSEWHERE (adopt
  the stored output); a newer session fence -> `LeaseLostError` is raised; otherwise
  STALE.
- **Completion exactly once.** A second COMPLETE of a task never changes it.
- **Atomic creation.** A reader never sees a session without all its tasks and edges.
- **Adoption.** Tasks added at run time by a task's attempt are invisible until that
  attempt's COMPLETE is applied; large outputs likewise become visible only through
  the completion that names them.
- **Idempotent retries.** Every write may be sent twice (a lost response); the second
  has no further effect (`record_download` keys this on its `download_id`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from orchestrator.clock import Clock
from orchestrator.codec import Codec
from orchestrator.store.records.flow import Grant, ResourceLimit, ResourceState, ScheduleRecord
from orchestrator.store.rules.resources import Decision
from orchestrator.store.records import (
    CacheEntry,
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
    SessionSnapshot,
    SessionStatus,
    StoreDescription,
    TaskRecord,
    TaskWrite,
    UserProjectRecord,
    WriteOutcome,
)

__all__ = ["CacheStore", "ChildStore", "FlowStore", "HistoryStore", "ProjectStore", "SessionStore", "Store",
           "StoreLifecycle", "WriteResult"]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The fate of one `TaskWrite`; `task` is the re-read record when not APPLIED."""

    task_id: str
    outcome: WriteOutcome
    task: TaskRecord | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in (WriteOutcome.APPLIED, WriteOutcome.ALREADY_APPLIED)


@runtime_checkable
class StoreLifecycle(Protocol):
    """Where the data lives, and opening and closing it."""

    codec: Codec
    clock: Clock

    def describe(self) -> StoreDescription:
        """Where the data lives (file, table, region, endpoint), for messages."""
        ...

    async def initialize(self) -> None:
        """Create the file or table if missing (idempotent); check its schema if present."""
        ...

    async def provision(self) -> None:
        """`initialize()`, and bring the store's settings to its definition (DynamoDB: TTL,
        point-in-time recovery, encryption), which opening a store does not read; `init` runs it."""
        ...

    async def check(self) -> list[str]:
        """Problems with connectivity, schema, TTL or indexes, each with the fix; [] if none."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""
        ...

    async def __aenter__(self) -> StoreLifecycle:
        """`initialize()`, then the store itself."""
        ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """`aclose()`."""
        ...


@runtime_checkable
class SessionStore(Protocol):
    """What a runner needs: sessions, their tasks and signals, and listing them."""

    codec: Codec
    clock: Clock

    # -- sessions ---------------------------------------------------------------------

    async def create_session(
        self,
        session: NewSession,
        tasks: Sequence[NewTask],
        *,
        owner: str | None = None,
        lease_seconds: float | None = None,
    ) -> SessionRecord:
        """Store a session with its tasks and their `depends_on` edges, atomically.

        With `owner`, the session is created RUNNING and held by `owner` at fence 1
        (`lease_seconds=None`: a lease that never expires, for external sessions).
        Raises SessionStateError if the id exists. Validation happens before any write.
        """
        ...

    async def get_session(self, session_id: str) -> SessionRecord:
        """The session item alone (strongly consistent). SessionNotFoundError if absent."""
        ...

    async def load_session(self, session_id: str) -> SessionSnapshot:
        """Session, adopted tasks with outputs, edges and signals, in one read."""
        ...

    async def get_task(self, session_id: str, task_id: str) -> TaskRecord:
        """One task (strongly consistent), with its output joined if chunked."""
        ...

    async def claim_session(
        self,
        session_id: str,
        owner: str,
        lease_seconds: float,
        policy: ClaimPolicy = ClaimPolicy(),
        *,
        seen: SessionRecord | None = None,
    ) -> Lease:
        """Take the session with one conditional write; the fence goes up by one.

        Claimable: PENDING; RUNNING with an expired lease; WAITING and due (wake-at
        passed or a signal newer than the wait); FAILED under `policy` (redrive count
        goes up by one; `force` also clears needs-human and passes the limit).
        External sessions are never claimable. ClaimRejectedError says why not.
        `seen`: the session as the caller last read or listed it; a backend may decide
        on it instead of reading first (`rules.claim_basis`). A stale one costs a read,
        never a wrong claim: the write holds only while the fields decided on are unchanged.
        """
        ...

    async def renew_lease(self, lease: Lease, lease_seconds: float) -> tuple[Lease, SessionRecord]:
        """Extend the lease (fenced); returns it with the session as now stored."""
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Give the session back (RUNNING -> PENDING) for another worker to claim now."""
        ...

    async def update_session(
        self,
        lease: Lease,
        *,
        progress: Progress | None = None,
        current_agents: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        """Fenced update of the session's progress, current agents, metadata, trace context."""
        ...

    async def finish_session(
        self,
        lease: Lease,
        status: SessionStatus,
        reason: str | None = None,
        *,
        needs_human_reason: str | None = None,
    ) -> SessionRecord:
        """End the session (COMPLETED, FAILED or CANCELLED), fenced; frees the lease.

        `needs_human_reason` flags a FAILED session for a person (no cron retries it).
        Sets the TTL expiry from the store's retention.
        """
        ...

    async def wait_session(self, lease: Lease, wake_at: float | None) -> bool:
        """RUNNING -> WAITING, freeing the lease, if no signal arrived since `lease.signal_seq`.

        Returns False (and changes nothing) when a signal arrived meanwhile: the caller
        must look at the signals instead of sleeping. Conditioned on fence and signal seq.
        """
        ...

    async def request_cancel(self, session_id: str, reason: str) -> SessionRecord:
        """Store a cancel request; a session nobody holds is CANCELLED at once."""
        ...

    async def set_needs_human(self, session_id: str, reason: str | None) -> SessionRecord:
        """Flag (reason) or clear (None) a FAILED session for a person to look at."""
        ...

    # -- tasks --------------------------------------------------------------------------

    async def write_tasks(self, lease: Lease, writes: Sequence[TaskWrite]) -> list[WriteResult]:
        """Apply fenced task transitions, in one commit/request where the backend can.

        Results are in the order of `writes`. Raises LeaseLostError when a rejection is
        explained by a newer session fence.
        """
        ...

    async def add_tasks(self, lease: Lease, parent: str, attempt: int, tasks: Sequence[NewTask]) -> None:
        """Stage tasks (with their edges) added by `parent`'s `attempt`; adopted by its COMPLETE.

        Re-adding the same definitions is a no-op; a different definition under an
        existing id raises PipelineDefinitionError.
        """
        ...

    # -- signals ------------------------------------------------------------------------

    async def send_signal(self, session_id: str, task_id: str, name: str, payload: Any) -> int:
        """Store a signal for a task and bump the session's signal sequence (returned).

        A WAITING session becomes due at once. A finished session raises SessionStateError.
        """
        ...

    # -- listing ------------------------------------------------------------------------

    async def list_sessions(
        self,
        status: SessionStatus,
        *,
        updated_before: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[SessionRecord]:
        """Sessions in `status`, oldest first; via the status index (never a Scan).

        The bound is on `updated_at`, or on the wake-at time for WAITING (so "waits
        that are due" is `updated_before=now`).
        """
        ...

    async def list_project_sessions(
        self, project_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[SessionRecord]:
        """A project's sessions, newest first."""
        ...

    async def find_sessions(
        self,
        *,
        user_id: str | None = None,
        pipeline_type: str | None = None,
        status: SessionStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[SessionRecord]:
        """A user's sessions, or a pipeline type's, or both, optionally in one status; newest first.

        Read through the user index (any filter with a user) or the type index, never a
        Scan (`rules.SessionFilter` decides). A page may be short, even empty, while its
        cursor is not None (a field the index does not hold is checked after the read);
        only `cursor=None` ends the listing. ValidationError for a filter without user and
        type, a bad value, or a cursor of another filter.
        """
        ...


@runtime_checkable
class HistoryStore(Protocol):
    """What a session leaves besides its state: events, metrics, pipeline definitions, retention."""

    # -- events -------------------------------------------------------------------------

    async def append_events(self, events: Sequence[Event]) -> None:
        """Append events (idempotent per (at, writer, seq)); kept until the TTL."""
        ...

    async def read_events(
        self, session_id: str, *, after: str | None = None, limit: int = 100
    ) -> Page[Event]:
        """A session's events in time order, after the cursor of the last one seen."""
        ...

    # -- metrics ------------------------------------------------------------------------

    async def record_metrics(self, writer: str, seq: int, summaries: Sequence[MetricSummary]) -> None:
        """Store a writer's cumulative counters (absolute values, not increments).

        Each (day, hour, name, agent, writer) row keeps the highest `seq` written; a
        write with a lower or equal seq (a retry) changes nothing.
        """
        ...

    async def read_metrics(
        self, day: str, *, name: str | None = None, agent: str | None = None
    ) -> list[MetricSummary]:
        """Counters for one day (`YYYY-MM-DD`, UTC) per hour/name/agent, summed over writers."""
        ...

    # -- pipelines and retention ----------------------------------------------------------

    async def put_pipeline(self, definition: PipelineDefinition) -> None:
        """Store a pipeline definition; the same name/version with another shape is refused."""
        ...

    async def get_pipeline(self, name: str, version: str) -> PipelineDefinition:
        ...

    async def purge(self, *, ended_before: float) -> PurgeReport:
        """Delete sessions that ended before the bound and expired events/metrics."""
        ...


@runtime_checkable
class ProjectStore(Protocol):
    """The users' project history (not tied to sessions, never purged with them)."""


    async def put_user_project(self, record: UserProjectRecord) -> UserProjectRecord:
        """Create or update a user's project (the descriptive fields); returns it as stored.

        An update keeps `created_at`, `download_count` and `last_accessed` as stored (they
        move only through `record_download`); a creation stores the record's count and
        last access as given (to import an existing history). `created_at`/`updated_at`
        are stamped by the store. A stored item of a newer schema is refused (SchemaError).
        Not tied to any session, and never purged with sessions.
        """
        ...

    async def get_user_project(self, user_id: str, project_id: str) -> UserProjectRecord:
        """One project of a user (strongly consistent). UserProjectNotFoundError if absent."""
        ...

    async def list_user_projects(
        self, user_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[UserProjectRecord]:
        """A user's projects ordered by project id; one Query on DynamoDB, never a Scan."""
        ...

    async def record_download(self, user_id: str, project_id: str, download_id: str) -> UserProjectRecord:
        """Count one download: `download_count` + 1 and `last_accessed` = now, in one write.

        Idempotent per `download_id`: a retry of the latest download with the same id
        (its response was lost) returns the stored record without counting again.
        UserProjectNotFoundError if the project was never put; ids are validated first.
        """
        ...


@runtime_checkable
class ChildStore(Protocol):
    """Many sessions at once, for the children of a map (both built-in backends serve it).

    A store without it still runs maps, one `create_session`/`get_session` per child.
    """

    async def create_sessions(self, sessions: Sequence[tuple[NewSession, Sequence[NewTask]]]) -> list[str]:
        """Create PENDING sessions in as few requests as the backend allows; returns the ids created now.

        A session whose id exists already is left exactly as it is (not overwritten, not
        an error), so repeating a creation is a no-op. Each session is atomic as with
        `create_session`; the batch as a whole is not.
        """
        ...

    async def get_sessions(self, session_ids: Sequence[str]) -> dict[str, SessionRecord]:
        """The session items of `session_ids` that exist (strongly consistent), by id."""
        ...


@runtime_checkable
class CacheStore(Protocol):
    """Cached agent outputs, shared by every session (see `orchestrator.agents.CachePolicy`)."""

    async def get_cached(self, key: str) -> CacheEntry | None:
        """The entry under `key`, or None if absent or expired (`rules.cache.readable`), even if TTL kept it."""
        ...

    async def put_cached(self, entry: CacheEntry) -> None:
        """Store (or replace) the entry under `entry.key`; kept until its expiry (TTL removes it)."""
        ...


@runtime_checkable
class Store(StoreLifecycle, SessionStore, HistoryStore, ProjectStore, Protocol):
    """Durable state of sessions, tasks, edges, signals, events, metrics, pipelines, projects.

    Composed of role protocols, so a wrapper or a third-party backend can implement only
    the role it serves (`SessionStore` for a runner, `HistoryStore`, `ProjectStore`) and
    pass that role's contract suite (`orchestrator.testing.contract`).
    """

    async def __aenter__(self) -> Store:
        """`initialize()`, then the store itself."""
        ...


@runtime_checkable
class FlowStore(Protocol):
    """Flow control shared by every worker of a store: resource limits and schedules.

    A role of its own, beside `Store`: both backends implement it (contract:
    `orchestrator.testing.contract_flow`); a store without it runs pipelines whose
    agents use no resources. Decisions are the rulebook's (`rules.resources`,
    `rules.schedules`).
    """

    async def set_limit(self, limit: ResourceLimit) -> ResourceLimit:
        """Set (or replace) a resource's fleet-wide concurrency and rate."""
        ...

    async def delete_limit(self, name: str) -> None:
        """Forget a resource's limits (it becomes unlimited); ResourceNotFoundError if none were set."""
        ...

    async def get_limit(self, name: str) -> ResourceLimit | None:
        """The resource's limits, or None when none were set (unlimited)."""
        ...

    async def resource_state(self, name: str) -> ResourceState:
        """Limits, live holders, starts in the current rate window and waiters of one resource."""
        ...

    async def list_limits(self) -> list[ResourceState]:
        """Every resource with limits, by name."""
        ...

    async def acquire_resource(self, name: str, holder: str, amount: int, *, priority: int,
                               lease_seconds: float, waited: bool = False) -> Grant | Decision:
        """Take `amount` units for `holder` (a Grant, idempotent per holder), or a refused
        `Decision` saying when to look again; a refused holder is registered as a waiter
        at `priority`, which keeps lower priorities out while it is renewed. ValidationError
        (before anything is written) if no grant could ever hold `amount` units."""
        ...

    async def renew_resource(self, grant: Grant, lease_seconds: float) -> bool:
        """Extend a grant's lease; False if it lapsed and its units may be someone else's."""
        ...

    async def release_resource(self, grant: Grant) -> None:
        """Give the units back (idempotent)."""
        ...

    async def put_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Create a schedule (version 1); ScheduleExistsError if the name is taken."""
        ...

    async def get_schedule(self, name: str) -> ScheduleRecord:
        """ScheduleNotFoundError if there is none."""
        ...

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""
        ...

    async def save_schedule(self, record: ScheduleRecord) -> ScheduleRecord | None:
        """Write `record` if the stored version is still `record.version` (then + 1); None if it moved."""
        ...

    async def delete_schedule(self, name: str) -> None:
        """ScheduleNotFoundError if there is none."""
        ...
