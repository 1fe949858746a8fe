"""Fork a session: a new session that keeps what ran before a task and re-runs the rest.

`fork_session` copies a session's DAG, records every task that is neither `from_task`
nor one of its transitive dependents as COMPLETED with its original output (when it
had completed), and leaves the rest PENDING for a worker (or `resume`) to run. It uses
only the public Store protocol: the new session is created owned by the fork (fence
1), the kept tasks are written START then COMPLETE under that lease, and the lease is
released, so no worker can pick the session up half-built. The new session's history
then says where it came from (a `fork` event, after the store's own `created`).
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from orchestrator.errors import OrchestratorError, PipelineDefinitionError, ValidationError
from orchestrator.graph import Pipeline
from orchestrator.store import rules
from orchestrator.store.protocol import Store
from orchestrator.store.records import (
    Lease,
    NewSession,
    NewTask,
    Progress,
    SessionSnapshot,
    SessionStatus,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
)

__all__ = ["fork_session"]

_FORK_LEASE_S = 120.0
_log = logging.getLogger("orchestrator.fork")


def _closure(start: str, dependents: Mapping[str, set[str]]) -> set[str]:
    seen = {start}
    queue = deque([start])
    while queue:
        for child in dependents.get(queue.popleft(), ()):
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return seen


def _task_plan(snapshot: SessionSnapshot, from_task: str, pipeline: Pipeline | None) -> list[NewTask]:
    """The new session's tasks: the pipeline's (or the stored ones) plus kept run-time additions."""
    sid = snapshot.session.session_id
    stored_deps: dict[str, list[str]] = {tid: [] for tid in snapshot.tasks}
    for edge in snapshot.edges:
        stored_deps.setdefault(edge.task_id, []).append(edge.depends_on)
    stored = {
        tid: NewTask(task_id=tid, agent=t.agent, input=t.input, priority=t.priority, max_attempts=t.max_attempts,
                     depends_on=tuple(dict.fromkeys(stored_deps.get(tid, ()))), added_by=t.added_by)
        for tid, t in snapshot.tasks.items()
    }
    if pipeline is None:
        return list(stored.values())
    if pipeline.name != snapshot.session.pipeline:
        raise ValidationError(
            f"session {sid} belongs to pipeline {snapshot.session.pipeline!r}, not {pipeline.name!r}; fork it "
            f"with the pipeline that started it (or without --app to reuse the stored DAG)",
            session_id=sid,
        )
    planned = {t.task_id: t for t in pipeline.new_tasks()}
    if from_task not in planned:
        raise PipelineDefinitionError(
            f"pipeline {pipeline.name!r} has no task {from_task!r}, so session {sid} cannot be forked from it; "
            f"known tasks: {', '.join(planned)}",
            session_id=sid,
            task_id=from_task,
        )
    for tid, task in stored.items():
        if task.added_by is not None and tid not in planned:
            planned[tid] = task  # added at run time; kept or dropped with its parent below
    return list(planned.values())


async def fork_session(
    store: Store,
    session_id: str,
    from_task: str,
    *,
    pipeline: Pipeline | None = None,
    new_session_id: str | None = None,
) -> str:
    """Create a PENDING copy of `session_id` that re-runs `from_task` and everything after it.

    Tasks upstream of `from_task` (and independent branches) that COMPLETED keep their
    outputs and are not run again; others start fresh. With `pipeline`, the current code's
    DAG and version are used (tasks it no longer defines are dropped). Raises
    SessionNotFoundError / TaskNotFoundError / ValidationError before writing anything.
    """
    snapshot = await store.load_session(session_id)
    snapshot.task(from_task)  # TaskNotFoundError naming the known tasks
    source = snapshot.session
    tasks = _task_plan(snapshot, from_task, pipeline)
    dependents: dict[str, set[str]] = {}
    for task in tasks:
        for dep in task.depends_on:
            dependents.setdefault(dep, set()).add(task.task_id)
    rerun = _closure(from_task, dependents)
    ids = {t.task_id for t in tasks}
    # A run-time task whose parent is re-run (or gone) is dropped: the parent adds it again.
    dropped: set[str] = set()
    changed = True
    while changed:
        changed = False
        for task in tasks:
            if task.task_id in dropped or task.added_by is None:
                continue
            if task.added_by in rerun or task.added_by in dropped or task.added_by not in ids:
                dropped.add(task.task_id)
                changed = True
    tasks = [t for t in tasks if t.task_id not in dropped]
    kept = ids - dropped
    for task in tasks:
        missing = [d for d in task.depends_on if d not in kept]
        if missing:
            raise PipelineDefinitionError(
                f"fork of session {session_id} from {from_task!r}: task {task.task_id!r} depends on "
                f"{', '.join(missing)}, which is added at run time by a task that will run again; fork from "
                f"an earlier task",
                session_id=session_id,
                task_id=task.task_id,
            )
    keep_done = {
        t.task_id: snapshot.tasks[t.task_id].output
        for t in tasks
        if t.task_id not in rerun
        and t.task_id in snapshot.tasks
        and snapshot.tasks[t.task_id].status is TaskStatus.COMPLETED
        and snapshot.tasks[t.task_id].agent == t.agent
    }
    new = NewSession(
        session_id=new_session_id or f"{source.pipeline}-{uuid.uuid4().hex[:12]}",
        pipeline=source.pipeline,
        pipeline_version=pipeline.version if pipeline is not None else source.pipeline_version,
        input=source.input,
        project_id=source.project_id,
        user_id=source.user_id,
        pipeline_type=source.pipeline_type,
        max_redrives=source.max_redrives,
        metadata={**dict(source.metadata), "forked_from": session_id, "forked_at_task": from_task},
    )
    if pipeline is not None:
        await store.put_pipeline(pipeline.definition())
    owner = f"fork-{uuid.uuid4().hex[:8]}"
    record = await store.create_session(new, tasks, owner=owner, lease_seconds=_FORK_LEASE_S)
    lease = Lease(record.session_id, owner, record.fence, record.lease_expires_at, record.signal_seq)
    try:
        await _record_kept(store, lease, keep_done)
        await store.update_session(lease, progress=Progress(len(keep_done), len(tasks)))
        await store.release_lease(lease)
    except BaseException as exc:
        # Never leave a half-built fork for a worker: end it CANCELLED with the reason.
        try:
            await store.finish_session(lease, SessionStatus.CANCELLED, f"fork of {session_id} failed: {exc}")
        except OrchestratorError:
            pass
        raise
    # Events of one instant sort by writer: one microsecond (the key's resolution) after
    # `created` keeps the story in order on any clock.
    at = max(store.clock.now(), record.created_at + 1e-6)
    event = rules.forked_event(record.session_id, session_id, from_task, len(keep_done), len(tasks), at)
    try:  # events are statistics-grade: the fork stands without its event
        await store.append_events([replace(event, writer=f"{owner}.{lease.fence}", seq=1)])
    except OrchestratorError:
        _log.warning("fork %s of session %s: its fork event was not written", record.session_id, session_id,
                     exc_info=True)
    return record.session_id


async def _record_kept(store: Store, lease: Lease, outputs: Mapping[str, Any]) -> None:
    if not outputs:
        return
    starts = [TaskWrite(TaskWriteKind.START, tid, 1) for tid in outputs]
    completes = [TaskWrite(TaskWriteKind.COMPLETE, tid, 1, output=out) for tid, out in outputs.items()]
    for batch in (starts, completes):
        results = await store.write_tasks(lease, batch)
        bad = [r for r in results if not r.ok]
        if bad:
            raise OrchestratorError(
                f"fork session {lease.session_id}: recording kept task(s) {', '.join(r.task_id for r in bad)} was "
                f"rejected ({bad[0].outcome.value}); fork again",
                session_id=lease.session_id,
            )
