"""Child sessions: what `ctx.map` and `ctx.run_child` do against the store.

A map creates its children as ordinary PENDING sessions (any worker claims them) with
ids from `rules.children`, at most `concurrency` in flight, and suspends its task
(WAITING, no lease, no slot) until its next look. On each wake it reads the children
still in flight (consistent batch reads through `ChildStore`, lowest index first, bounded
per wake); no child ever writes to its parent, so thousands of children ending at once
touch no common item. When all have ended it reads each child's result once, in item
order. A store without `ChildStore` gets one request per child instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from orchestrator.agents.errors import NonRetryableError
from orchestrator.errors import SessionNotFoundError, SessionStateError
from orchestrator.store.protocol import ChildStore, SessionStore
from orchestrator.store.records import NewSession, PipelineDefinition, SessionRecord, SessionStatus
from orchestrator.store.rules.children import (
    CHILD_ENDED,
    LINK_KEY,
    ChildLink,
    MapProgress,
    MapResult,
    child_output,
    child_session_id,
)

__all__ = ["MAPS_KEY", "ChildIO", "cancel_children", "cancel_session", "child_ids", "run_map", "split_state"]

MAPS_KEY = "orchestrator.maps"  # a task checkpoint holding map progress: {MAPS_KEY: {...}, "state": user}
LOOKS_PER_WAKE = 500  # in-flight children read per wake (5 BatchGetItems on DynamoDB), lowest index first
_PARALLEL = 16  # store requests a map keeps in flight
_CREATE_BATCH = 500  # children per create_sessions call (the backend batches further)


def split_state(stored: Any) -> tuple[Any, dict[str, Any]]:
    """A task checkpoint as (the agent's own state, the progress of its maps by call)."""
    if isinstance(stored, Mapping) and MAPS_KEY in stored and set(stored) <= {MAPS_KEY, "state"}:
        return stored.get("state"), dict(stored[MAPS_KEY])
    return stored, {}


def child_ids(session_id: str, task_id: str, state: Any) -> list[str]:
    """The children a task created so far, from its stored checkpoint (for status, graph, cancel)."""
    _, maps = split_state(state)
    out: list[str] = []
    for call, raw in sorted(maps.items(), key=lambda kv: int(kv[0])):
        created = int(raw.get("c", 0)) if isinstance(raw, Mapping) else 0
        out += [child_session_id(session_id, task_id, int(call), i) for i in range(created)]
    return out


async def _each(fn: Callable[[int], Any], indices: Iterable[int]) -> None:
    limiter = anyio.CapacityLimiter(_PARALLEL)

    async def one(i: int) -> None:
        async with limiter:
            await fn(i)

    async with anyio.create_task_group() as tg:
        for i in indices:
            tg.start_soon(one, i)


@dataclass(slots=True)
class ChildIO:
    """The store side of one map call of one task attempt."""

    store: SessionStore
    session_id: str
    task_id: str
    call: int
    metadata: Mapping[str, Any]

    def child_id(self, index: int) -> str:
        return child_session_id(self.session_id, self.task_id, self.call, index)

    async def create(self, pipeline: Any, items: Sequence[Any], indices: range,
                     put_definition: Callable[[PipelineDefinition], Any]) -> None:
        """Create the children `indices` PENDING; one that exists already is left as it is."""
        tasks = pipeline.new_tasks()
        await put_definition(PipelineDefinition(pipeline.name, pipeline.version, tuple(tasks)))

        news = [NewSession(self.child_id(i), pipeline.name, pipeline.version, input=items[i],
                           metadata={**self.metadata,
                                     LINK_KEY: ChildLink(self.session_id, self.task_id, i).to_json()})
                for i in indices]
        if isinstance(self.store, ChildStore):
            for start in range(0, len(news), _CREATE_BATCH):
                await self.store.create_sessions([(n, tasks) for n in news[start:start + _CREATE_BATCH]])
            return

        async def one(k: int) -> None:
            try:
                await self.store.create_session(news[k], tasks)
            except SessionStateError:
                await self.store.get_session(news[k].session_id)  # it exists: an earlier attempt created it

        await _each(one, range(len(news)))

    async def look(self, progress: MapProgress) -> dict[int, SessionRecord]:
        """Read the in-flight children (bounded) and mark those that ended; returns what was read."""
        seen: dict[int, SessionRecord] = {}

        indices = progress.in_flight(LOOKS_PER_WAKE)
        if isinstance(self.store, ChildStore):
            found = await self.store.get_sessions([self.child_id(i) for i in indices])
            seen.update((i, found[self.child_id(i)]) for i in indices if self.child_id(i) in found)
        else:
            async def one(i: int) -> None:
                seen[i] = await self.store.get_session(self.child_id(i))

            await _each(one, indices)
        progress.mark_ended(i for i, s in seen.items() if s.status in CHILD_ENDED)
        return seen

    async def results(self, total: int) -> list[MapResult]:
        """Every child's result (one read of each child), in item order."""
        out: dict[int, MapResult] = {}

        async def one(i: int) -> None:
            snap = await self.store.load_session(self.child_id(i))
            statuses = {t: r.status for t, r in snap.tasks.items()}
            outputs = {t: r.output for t, r in snap.tasks.items()}
            s = snap.session
            out[i] = MapResult(i, s.session_id, s.status, child_output(outputs, statuses, snap.edges),
                               None if s.status is SessionStatus.COMPLETED else (s.reason or s.status.value))

        await _each(one, range(total))
        return [out[i] for i in range(total)]

    async def failed(self, indices: Sequence[int]) -> list[int]:
        """Which of `indices` are FAILED sessions (read in batches)."""
        out: list[int] = []
        for start in range(0, len(indices), LOOKS_PER_WAKE):
            part = indices[start:start + LOOKS_PER_WAKE]
            if isinstance(self.store, ChildStore):
                found = await self.store.get_sessions([self.child_id(i) for i in part])
            else:
                found = {}
                for i in part:
                    found[self.child_id(i)] = await self.store.get_session(self.child_id(i))
            out += [i for i in part if (s := found.get(self.child_id(i))) and s.status is SessionStatus.FAILED]
        return out

    async def cancel(self, indices: Iterable[int], reason: str) -> None:
        async def one(i: int) -> None:
            try:
                await self.store.request_cancel(self.child_id(i), reason)
            except (SessionStateError, SessionNotFoundError):
                pass  # ended meanwhile, or never created

        await _each(one, indices)


async def cancel_session(store: SessionStore, session_id: str, reason: str) -> tuple[SessionRecord, list[str]]:
    """Request the session's cancel, then cancel its unfinished children (and theirs); the cancel cascades."""
    record = await store.request_cancel(session_id, reason)
    return record, await cancel_children(store, session_id, reason)


async def cancel_children(store: SessionStore, session_id: str, reason: str) -> list[str]:
    """Cancel every unfinished child of `session_id`, and theirs, depth first; returns their ids."""
    snapshot = await store.load_session(session_id)
    cancelled: list[str] = []
    for tid, task in sorted(snapshot.tasks.items()):
        for cid in child_ids(session_id, tid, task.checkpoint):
            try:
                child = await store.get_session(cid)
            except SessionNotFoundError:
                continue
            cancelled += await cancel_children(store, cid, reason)
            if child.status not in CHILD_ENDED:
                try:
                    await store.request_cancel(cid, f"parent {session_id} cancelled: {reason}")
                    cancelled.append(cid)
                except SessionStateError:
                    pass  # ended meanwhile
    return cancelled


async def run_map(
    io: ChildIO,
    progress: MapProgress,
    pipeline: Any,
    items: Sequence[Any],
    *,
    concurrency: int | None,
    fail_fast: bool,
    put_definition: Callable[[PipelineDefinition], Awaitable[None]],
    save: Callable[[], Awaitable[None]],
    attempt: int = 1,
    redrive: Callable[[str], Awaitable[None]] | None = None,
) -> list[MapResult] | None:
    """One look at a map: note ended children, create the next ones; results when all ended, else None.

    Children are created before the progress naming them is saved, so a crash between
    the two re-creates nothing (the ids exist; creation is then a no-op). The first look
    of a new attempt of the parent task (a retry, or a redrive of the parent) redrives
    the children that FAILED, once per attempt, before looking on.
    """
    where = f"map {io.call} of task {io.task_id} in session {io.session_id}"
    before = progress.to_json()
    if progress.redriven < attempt:
        if attempt > 1 and progress.created and redrive is not None:
            failed = await io.failed(range(progress.created))
            await _each(lambda i: redrive(io.child_id(i)), failed)
        progress.redriven = attempt
    seen = await io.look(progress)
    failed = sorted(i for i, s in seen.items() if s.status in (SessionStatus.FAILED, SessionStatus.CANCELLED))
    if fail_fast and failed:
        await io.cancel(progress.in_flight(), f"{where}: child {io.child_id(failed[0])} did not complete")
        await save()
        child = seen[failed[0]]
        raise NonRetryableError(f"{where}: child session {child.session_id} (item {failed[0]}) ended "
                                f"{child.status.value}: {child.reason or 'no reason stored'}; see "
                                f"`orchestrator status {child.session_id}`")
    fresh = progress.to_create(concurrency)
    if len(fresh):
        await io.create(pipeline, items, fresh, put_definition)
        progress.mark_created(fresh.stop)
    if progress.to_json() != before:
        await save()
    if not progress.done:
        return None
    results = await io.results(progress.total)
    bad = [r for r in results if not r.ok]
    if fail_fast and bad:
        raise NonRetryableError(f"{where}: child session {bad[0].session_id} (item {bad[0].index}) ended "
                                f"{bad[0].status.value}: {bad[0].error}")
    return results
