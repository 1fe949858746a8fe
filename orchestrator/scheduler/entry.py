"""The entry points: `run`, `submit`, `resume` (async), their `*_sync` twins, and `execute`.

They validate and create or claim a session, then hand it to a `SessionRunner`; the
scheduler knows the Store protocol only, never a backend.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

import anyio

from orchestrator.errors import (
    PipelineDefinitionError,
    VersionMismatchError,
)
from orchestrator.graph import Pipeline
from orchestrator.metrics import MetricsRecorder
from orchestrator.scheduler.options import RunOptions, RunResult, WorkerLimits, default_worker_id
from orchestrator.scheduler.runner import SessionRunner
from orchestrator.store.protocol import Store
from orchestrator.store.records import (
    ClaimPolicy,
    Lease,
    NewSession,
    PipelineDefinition,
    SessionRecord,
    SessionSnapshot,
    SessionStatus,
    TaskRecord,
)
from orchestrator.store.rules import claimed_seen
from orchestrator.telemetry import Telemetry

__all__ = [
    "execute",
    "resume",
    "resume_sync",
    "run",
    "run_sync",
    "submit",
    "submit_sync",
]


def _check_pipeline(pipeline: Pipeline, session: SessionRecord, tasks: Mapping[str, TaskRecord], force: bool) -> None:
    if session.pipeline != pipeline.name:
        raise VersionMismatchError(
            f"session {session.session_id} belongs to pipeline {session.pipeline!r}, not {pipeline.name!r}; "
            f"resume it with the pipeline that started it",
            session_id=session.session_id,
        )
    if session.pipeline_version != pipeline.version and not force:
        raise VersionMismatchError(
            f"session {session.session_id} was started by pipeline {pipeline.name!r} version "
            f"{session.pipeline_version}, but the code is version {pipeline.version}; resume with the "
            f"matching code, or pass force=True (--force) to run the stored DAG with this code",
            session_id=session.session_id,
            stored=session.pipeline_version,
            code=pipeline.version,
        )
    missing = sorted({t.agent for t in tasks.values()} - set(pipeline.agents))
    if missing:
        raise PipelineDefinitionError(
            f"session {session.session_id} has tasks for agent(s) {', '.join(missing)} that pipeline "
            f"{pipeline.name!r} does not define; add them to the pipeline's agents",
            session_id=session.session_id,
        )


async def execute(
    store: Store,
    pipeline: Pipeline,
    lease: Lease,
    *,
    options: RunOptions | None = None,
    telemetry: Telemetry | None = None,
    limits: WorkerLimits | None = None,
    redrive: bool = False,
    abandoned: bool = False,
    force: bool = False,
    snapshot: SessionSnapshot | None = None,
    metrics: MetricsRecorder | None = None,
) -> RunResult:
    """Run a session this caller already holds (`lease`); used by `run`, `resume` and workers.

    `snapshot` is the session as already read (`resume` reads before it claims); None loads it.
    """
    snapshot = snapshot or await store.load_session(lease.session_id)
    _check_pipeline(pipeline, snapshot.session, snapshot.tasks, force)
    runner = SessionRunner(
        store, pipeline, lease, snapshot,
        options=options or RunOptions(), clock=store.clock, telemetry=telemetry or Telemetry(),
        limits=limits, redrive=redrive, abandoned=abandoned, metrics=metrics,
    )
    return await runner.run()


def _new_session(
    pipeline: Pipeline, input: Any, session_id: str | None, project_id: str | None, user_id: str | None,
    pipeline_type: str | None, metadata: Mapping[str, Any] | None, options: RunOptions,
) -> NewSession:
    return NewSession(
        session_id=session_id or f"{pipeline.name}-{uuid.uuid4().hex[:12]}",
        pipeline=pipeline.name,
        pipeline_version=pipeline.version,
        input=input,
        project_id=project_id,
        user_id=user_id,
        pipeline_type=pipeline_type,
        max_redrives=options.max_redrives,
        metadata=dict(metadata or {}),
        ttl_seconds=options.ttl_seconds,
    )


@contextlib.asynccontextmanager
async def _store_scope(store: Store | None) -> AsyncIterator[Store]:
    """The given store, or one opened from the environment for this call only."""
    if store is not None:
        yield store
        return
    from orchestrator.store import open_store

    async with open_store() as opened:
        yield opened


async def _create(
    store: Store, pipeline: Pipeline, new: NewSession, *, owner: str | None, lease_seconds: float | None
) -> SessionRecord:
    """Validate everything (DAG, ids, JSON input), then store the definition and the session."""
    tasks = pipeline.new_tasks()
    store.codec.to_jsonable(new.input, where=f"input of session {new.session_id}")
    await store.put_pipeline(PipelineDefinition(pipeline.name, pipeline.version, tuple(tasks)))
    return await store.create_session(new, tasks, owner=owner, lease_seconds=lease_seconds)


async def run(
    pipeline: Pipeline,
    input: Any = None,
    *,
    store: Store | None = None,
    session_id: str | None = None,
    project_id: str | None = None,
    user_id: str | None = None,
    pipeline_type: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
    telemetry: Telemetry | None = None,
) -> RunResult:
    """Create a session for `pipeline` and run it here to the end (or to a durable wait).

    Validation (the DAG, ids, JSON input) happens before anything is written. Without
    `store`, the store comes from `ORCHESTRATOR_STORE` (SQLite in the user's state dir).
    """
    options = options or RunOptions()
    new = _new_session(pipeline, input, session_id, project_id, user_id, pipeline_type, metadata, options)
    worker = options.worker_id or default_worker_id()
    async with _store_scope(store) as scoped:
        record = await _create(scoped, pipeline, new, owner=worker, lease_seconds=options.lease_seconds)
        lease = Lease(record.session_id, worker, record.fence, record.lease_expires_at, record.signal_seq)
        return await execute(scoped, pipeline, lease, options=options, telemetry=telemetry)


async def submit(
    pipeline: Pipeline,
    input: Any = None,
    *,
    store: Store | None = None,
    session_id: str | None = None,
    project_id: str | None = None,
    user_id: str | None = None,
    pipeline_type: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
) -> str:
    """Store a PENDING session for a worker to claim; returns its id."""
    options = options or RunOptions()
    new = _new_session(pipeline, input, session_id, project_id, user_id, pipeline_type, metadata, options)
    async with _store_scope(store) as scoped:
        record = await _create(scoped, pipeline, new, owner=None, lease_seconds=None)
        return record.session_id


async def resume(
    pipeline: Pipeline,
    session_id: str,
    *,
    store: Store | None = None,
    force: bool = False,
    options: RunOptions | None = None,
    telemetry: Telemetry | None = None,
    limits: WorkerLimits | None = None,
    failed_updated_before: float | None = None,
) -> RunResult:
    """Claim `session_id` and run what is left: completed tasks are kept, never re-run.

    A FAILED session is redriven (failed and skipped tasks get fresh attempts) while it
    has redrives left; `force` passes the limit, clears needs-human and accepts a
    pipeline version mismatch. The session is read first (one Query on DynamoDB): a
    mismatch is refused before anything is written, and the claim decides on what was
    read. Raises ClaimRejectedError if another worker holds it.
    """
    options = options or RunOptions()
    async with _store_scope(store) as scoped:
        return await _resume(pipeline, session_id, scoped, force, options, telemetry, limits, failed_updated_before)


async def _resume(
    pipeline: Pipeline, session_id: str, store: Store, force: bool, options: RunOptions,
    telemetry: Telemetry | None, limits: WorkerLimits | None, failed_updated_before: float | None,
) -> RunResult:
    # Read first (one Query on DynamoDB), so a mismatch is refused before anything is written
    # and the claim decides on what was read; docs/design.md says why this order is safe.
    snapshot = await store.load_session(session_id)
    _check_pipeline(pipeline, snapshot.session, snapshot.tasks, force)
    policy = ClaimPolicy(redrive_failed=True, failed_updated_before=failed_updated_before, force=force)
    worker = options.worker_id or default_worker_id()
    lease = await store.claim_session(session_id, worker, options.lease_seconds, policy, seen=snapshot.session)
    claimed = claimed_seen(snapshot.session, lease, options.lease_seconds, policy)
    if claimed is not None:
        snapshot = replace(snapshot, session=claimed)
    else:  # the claim took a newer record (a signal, an end, another run came in between): read again
        snapshot = await store.load_session(session_id)
    taken_from = lease.previous.status if lease.previous is not None else None
    try:
        return await execute(
            store, pipeline, lease, options=options, telemetry=telemetry, limits=limits,
            redrive=taken_from is SessionStatus.FAILED, abandoned=taken_from is SessionStatus.RUNNING, force=force,
            snapshot=snapshot,
        )
    except (VersionMismatchError, PipelineDefinitionError):
        await store.release_lease(lease)  # only after a second read: tasks added meanwhile; give it back
        raise


def run_sync(pipeline: Pipeline, input: Any = None, **kwargs: Any) -> RunResult:
    """`run` for synchronous code (starts an event loop)."""
    result: RunResult = anyio.run(lambda: run(pipeline, input, **kwargs))
    return result


def submit_sync(pipeline: Pipeline, input: Any = None, **kwargs: Any) -> str:
    result: str = anyio.run(lambda: submit(pipeline, input, **kwargs))
    return result


def resume_sync(pipeline: Pipeline, session_id: str, **kwargs: Any) -> RunResult:
    result: RunResult = anyio.run(lambda: resume(pipeline, session_id, **kwargs))
    return result
