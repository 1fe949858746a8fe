"""`FaultyStore`: a Store wrapper that fails chosen operations or runs a hook before them.

A public seam for fault injection (STYLE 14): it delegates every Store method to the
wrapped store, except that an operation named in `fail_on` raises
StoreUnavailableError, and an operation with a hook in `before` awaits the hook first
(e.g. send a signal right before `wait_session`, to exercise the race it guards).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from orchestrator.clock import Clock
from orchestrator.codec import Codec
from orchestrator.errors import StoreUnavailableError
from orchestrator.store import (
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
    Store,
    StoreDescription,
    TaskRecord,
    TaskWrite,
    UserProjectRecord,
    WriteResult,
)

Hook = Callable[[], Awaitable[None]]


class FaultyStore:
    """Delegates to `inner`; `fail_on` names operations that raise, `before` hooks run first."""

    def __init__(
        self, inner: Store, *, fail_on: set[str] | None = None, before: dict[str, Hook] | None = None
    ) -> None:
        self.inner = inner
        self.codec: Codec = inner.codec
        self.clock: Clock = inner.clock
        self.fail_on: set[str] = set(fail_on or ())
        self.before: dict[str, Hook] = dict(before or {})
        self.calls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    async def _enter(self, op: str) -> None:
        self.calls[op] += 1
        hook = self.before.get(op)
        if hook is not None:
            await hook()
        if op in self.fail_on:
            self.failures[op] += 1
            raise StoreUnavailableError(
                f"{op} failed: the store is unreachable for this worker (FaultyStore fail_on={sorted(self.fail_on)})"
            )

    def describe(self) -> StoreDescription:
        return self.inner.describe()

    async def initialize(self) -> None:
        await self._enter("initialize")
        await self.inner.initialize()

    async def provision(self) -> None:
        await self._enter("provision")
        await self.inner.provision()

    async def check(self) -> list[str]:
        await self._enter("check")
        return await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> FaultyStore:
        await self.initialize()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def create_session(
        self, session: NewSession, tasks: Sequence[NewTask], *, owner: str | None = None,
        lease_seconds: float | None = None,
    ) -> SessionRecord:
        await self._enter("create_session")
        return await self.inner.create_session(session, tasks, owner=owner, lease_seconds=lease_seconds)

    async def get_session(self, session_id: str) -> SessionRecord:
        await self._enter("get_session")
        return await self.inner.get_session(session_id)

    async def load_session(self, session_id: str) -> SessionSnapshot:
        await self._enter("load_session")
        return await self.inner.load_session(session_id)

    async def get_task(self, session_id: str, task_id: str) -> TaskRecord:
        await self._enter("get_task")
        return await self.inner.get_task(session_id, task_id)

    async def claim_session(
        self, session_id: str, owner: str, lease_seconds: float, policy: ClaimPolicy = ClaimPolicy(), *,
        seen: SessionRecord | None = None,
    ) -> Lease:
        await self._enter("claim_session")
        return await self.inner.claim_session(session_id, owner, lease_seconds, policy, seen=seen)

    async def renew_lease(self, lease: Lease, lease_seconds: float) -> tuple[Lease, SessionRecord]:
        await self._enter("renew_lease")
        return await self.inner.renew_lease(lease, lease_seconds)

    async def release_lease(self, lease: Lease) -> None:
        await self._enter("release_lease")
        await self.inner.release_lease(lease)

    async def update_session(
        self, lease: Lease, *, progress: Progress | None = None, current_agents: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None, trace_context: dict[str, str] | None = None,
    ) -> None:
        await self._enter("update_session")
        await self.inner.update_session(
            lease, progress=progress, current_agents=current_agents, metadata=metadata, trace_context=trace_context
        )

    async def finish_session(
        self, lease: Lease, status: SessionStatus, reason: str | None = None, *,
        needs_human_reason: str | None = None,
    ) -> SessionRecord:
        await self._enter("finish_session")
        return await self.inner.finish_session(lease, status, reason, needs_human_reason=needs_human_reason)

    async def wait_session(self, lease: Lease, wake_at: float | None) -> bool:
        await self._enter("wait_session")
        return await self.inner.wait_session(lease, wake_at)

    async def request_cancel(self, session_id: str, reason: str) -> SessionRecord:
        await self._enter("request_cancel")
        return await self.inner.request_cancel(session_id, reason)

    async def set_needs_human(self, session_id: str, reason: str | None) -> SessionRecord:
        await self._enter("set_needs_human")
        return await self.inner.set_needs_human(session_id, reason)

    async def write_tasks(self, lease: Lease, writes: Sequence[TaskWrite]) -> list[WriteResult]:
        await self._enter("write_tasks")
        return await self.inner.write_tasks(lease, writes)

    async def add_tasks(self, lease: Lease, parent: str, attempt: int, tasks: Sequence[NewTask]) -> None:
        await self._enter("add_tasks")
        await self.inner.add_tasks(lease, parent, attempt, tasks)

    async def send_signal(self, session_id: str, task_id: str, name: str, payload: Any) -> int:
        await self._enter("send_signal")
        return await self.inner.send_signal(session_id, task_id, name, payload)

    async def list_sessions(
        self, status: SessionStatus, *, updated_before: float | None = None, limit: int = 100,
        cursor: str | None = None,
    ) -> Page[SessionRecord]:
        await self._enter("list_sessions")
        return await self.inner.list_sessions(status, updated_before=updated_before, limit=limit, cursor=cursor)

    async def list_project_sessions(
        self, project_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[SessionRecord]:
        await self._enter("list_project_sessions")
        return await self.inner.list_project_sessions(project_id, limit=limit, cursor=cursor)

    async def find_sessions(
        self, *, user_id: str | None = None, pipeline_type: str | None = None, status: SessionStatus | None = None,
        limit: int = 100, cursor: str | None = None,
    ) -> Page[SessionRecord]:
        await self._enter("find_sessions")
        return await self.inner.find_sessions(user_id=user_id, pipeline_type=pipeline_type, status=status,
                                              limit=limit, cursor=cursor)

    async def append_events(self, events: Sequence[Event]) -> None:
        await self._enter("append_events")
        await self.inner.append_events(events)

    async def read_events(self, session_id: str, *, after: str | None = None, limit: int = 100) -> Page[Event]:
        await self._enter("read_events")
        return await self.inner.read_events(session_id, after=after, limit=limit)

    async def record_metrics(self, writer: str, seq: int, summaries: Sequence[MetricSummary]) -> None:
        await self._enter("record_metrics")
        await self.inner.record_metrics(writer, seq, summaries)

    async def read_metrics(
        self, day: str, *, name: str | None = None, agent: str | None = None
    ) -> list[MetricSummary]:
        await self._enter("read_metrics")
        return await self.inner.read_metrics(day, name=name, agent=agent)

    async def put_pipeline(self, definition: PipelineDefinition) -> None:
        await self._enter("put_pipeline")
        await self.inner.put_pipeline(definition)

    async def get_pipeline(self, name: str, version: str) -> PipelineDefinition:
        await self._enter("get_pipeline")
        return await self.inner.get_pipeline(name, version)

    async def purge(self, *, ended_before: float) -> PurgeReport:
        await self._enter("purge")
        return await self.inner.purge(ended_before=ended_before)

    async def put_user_project(self, record: UserProjectRecord) -> UserProjectRecord:
        await self._enter("put_user_project")
        return await self.inner.put_user_project(record)

    async def get_user_project(self, user_id: str, project_id: str) -> UserProjectRecord:
        await self._enter("get_user_project")
        return await self.inner.get_user_project(user_id, project_id)

    async def list_user_projects(
        self, user_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[UserProjectRecord]:
        await self._enter("list_user_projects")
        return await self.inner.list_user_projects(user_id, limit=limit, cursor=cursor)

    async def record_download(self, user_id: str, project_id: str, download_id: str) -> UserProjectRecord:
        await self._enter("record_download")
        return await self.inner.record_download(user_id, project_id, download_id)
