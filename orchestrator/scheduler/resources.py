"""Fleet-wide resources around one attempt: wait for them, hold a session slot, renew, release.

An attempt whose agent or task `uses` named resources first takes them from the store
(`FlowStore.acquire_resource`, decided by `rules.resources`), in name order so two
attempts never wait for each other, backing off between refusals (sooner for P0).
While it waits it holds no session slot, no worker slot and no agent process, and its
agent's timeout has not started. Holding, it renews the grants every heartbeat, so a
crashed worker's units come free when their lease lapses; they are released at the end.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar, cast

import anyio

from orchestrator.agents.errors import NonRetryableError
from orchestrator.clock import Clock
from orchestrator.errors import OrchestratorError, ValidationError
from orchestrator.events import EventBuffer
from orchestrator.graph import Pipeline
from orchestrator.scheduler.messages import Launch
from orchestrator.scheduler.options import RunOptions
from orchestrator.scheduler.plan import SessionPlan
from orchestrator.store.protocol import FlowStore, Store
from orchestrator.store.records import Progress
from orchestrator.store.records.flow import Grant
from orchestrator.store.rules.resources import Decision, backoff

__all__ = ["WAITING_FOR_RESOURCE", "Needs", "ResourceGate", "ResourceListener", "SessionResources"]

#: The progress phase of a task whose attempt waits for a fleet-wide resource.
WAITING_FOR_RESOURCE = "waiting-for-resource"

T = TypeVar("T")
_log = logging.getLogger("orchestrator.resources")


@dataclass(frozen=True, slots=True)
class Needs:
    """What one attempt needs: units by resource name, its priority, and its holder id."""

    uses: Mapping[str, int]
    priority: int
    holder: str


class ResourceListener:
    """What the gate reports (the runner records events and the task's phase from it)."""

    def waiting(self, task_id: str, attempt: int, resource: str, decision: Decision) -> None:
        """The attempt's first refusal for `resource`: it waits from now on."""

    def acquired(self, task_id: str, attempt: int, resources: Mapping[str, int], waited: float) -> None:
        """Every resource is held (after `waited` seconds of waiting, 0 if none)."""


class ResourceGate:
    """Session slots and fleet resources for the attempts of one session."""

    def __init__(self, store: Store, clock: Clock, *, concurrency: int, lease_seconds: float,
                 renew_interval: float, rng: random.Random | None = None,
                 listener: ResourceListener | None = None) -> None:
        self._store = store
        self._clock = clock
        self._slots = anyio.CapacityLimiter(concurrency)
        self._lease = lease_seconds
        self._renew_interval = renew_interval
        self._rng = rng or random.Random()
        self._listener = listener or ResourceListener()
        self._pollers: dict[str, anyio.Lock] = {}  # per resource: the attempt looking for it now

    def _flow(self) -> FlowStore:
        if not isinstance(self._store, FlowStore):
            raise ValidationError(f"{self._store!r} has no resource limits (it does not implement FlowStore); "
                                  f"run agents that declare `uses` on a SQLite or DynamoDB store")
        return cast(FlowStore, self._store)

    async def run(self, task_id: str, attempt: int, needs: Needs | None, body: Callable[[], Awaitable[T]]) -> T:
        """`body()` once the resources and a session slot are held; everything released after."""
        if needs is None or not needs.uses:
            async with self._slots:
                return await body()
        grants: list[Grant] = []
        try:
            return await self._holding(task_id, attempt, needs, grants, body)
        finally:
            if grants:
                with anyio.CancelScope(shield=True):
                    await self._release(grants)

    async def _holding(self, task_id: str, attempt: int, needs: Needs, grants: list[Grant],
                       body: Callable[[], Awaitable[T]]) -> T:
        """Acquire, then run `body`, renewing every grant from the moment it is taken."""
        result: list[T] = []
        failure: list[BaseException] = []  # the agent's error or its wait (SuspendForSignal)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew, grants)
            try:
                await self._acquire(task_id, attempt, needs, grants)
                async with self._slots:
                    result.append(await body())
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as exc:  # noqa: BLE001 - re-raised below as it is, not in an ExceptionGroup
                failure.append(exc)
            finally:
                tg.cancel_scope.cancel()
        if failure:
            raise failure[0]
        return result[0]

    async def _acquire(self, task_id: str, attempt: int, needs: Needs, grants: list[Grant]) -> None:
        started = self._clock.monotonic()
        waited = False
        for name in sorted(needs.uses):
            # One attempt of the session looks at a time (in launch order, which is priority
            # order): a wide fan-out waits without each of its tasks polling the store.
            poller = self._pollers.setdefault(name, anyio.Lock())
            if poller.locked() and not waited:
                waited = True
                self._listener.waiting(task_id, attempt, name,
                                       Decision(False, None, "another task of this session waits for it first"))
            async with poller:
                waited = await self._take(task_id, attempt, name, needs, grants, waited)
        self._listener.acquired(task_id, attempt, dict(needs.uses),
                                self._clock.monotonic() - started if waited else 0.0)

    async def _take(self, task_id: str, attempt: int, name: str, needs: Needs, grants: list[Grant],
                    waited: bool) -> bool:
        """Look until `name` is granted (appended to `grants`); True if the attempt waited."""
        flow = self._flow()
        tries = 0
        while True:
            try:
                got = await flow.acquire_resource(name, needs.holder, needs.uses[name], priority=needs.priority,
                                                  lease_seconds=self._lease, waited=tries > 0)
            except ValidationError as exc:  # more units than a grant can hold: no retry could get them
                raise NonRetryableError(f"task {task_id}: {exc}") from exc
            if isinstance(got, Grant):
                grants.append(got)
                return waited
            if not waited:
                waited = True
                self._listener.waiting(task_id, attempt, name, got)
            await self._clock.sleep(backoff(tries, needs.priority, got.retry_at, self._clock.now(), self._rng))
            tries += 1

    async def _renew(self, grants: list[Grant]) -> None:
        """Renew what is held so far (the list grows while later resources are acquired)."""
        flow = self._flow()
        while True:
            await self._clock.sleep(self._renew_interval)
            for grant in list(grants):
                try:
                    if not await flow.renew_resource(grant, self._lease):
                        _log.warning("resource %s: the lease of %s lapsed before it was renewed; its units may "
                                     "be held by another task now", grant.resource, grant.holder)
                except OrchestratorError as exc:  # the session's own lease decides whether to stop
                    _log.warning("resource %s: renewing %s failed: %s", grant.resource, grant.holder, exc)

    async def _release(self, grants: list[Grant]) -> None:
        flow = self._flow()
        for grant in grants:
            try:
                await flow.release_resource(grant)
            except OrchestratorError as exc:  # its lease lapses instead
                _log.warning("resource %s: releasing %s failed (%s); its lease lapses instead", grant.resource,
                             grant.holder, exc)


class SessionResources(ResourceListener):
    """The runner's side of the gate: what each launch needs, and what a wait shows.

    A waiting attempt is a `resource_wait` event and the task's progress phase
    `waiting-for-resource` (shown by `status` and the dashboard); it is parked in the
    plan, so its session slot goes to another ready task (`wake` asks the runner to pick).
    """

    def __init__(self, plan: SessionPlan, pipeline: Pipeline, events: EventBuffer, wake: Callable[[], None],
                 *, store: Store, clock: Clock, options: RunOptions) -> None:
        self._plan = plan
        self._pipeline = pipeline
        self._events = events
        self._wake = wake
        # Without any `uses` no attempt ever parks, so the plan alone keeps the session within
        # its concurrency: no gate, and no limiter to pass on each attempt (a no-op task's hot path).
        self.gate: ResourceGate | None = None
        if any(spec.uses for spec in pipeline.agents.values()) or any(t.uses for t in pipeline.tasks.values()):
            self.gate = ResourceGate(store, clock, concurrency=options.concurrency,
                                     lease_seconds=options.lease_seconds, renew_interval=options.heartbeat_interval,
                                     rng=random.Random(options.seed), listener=self)

    def needs(self, session_id: str, fence: int, launch: Launch) -> Needs | None:
        if self.gate is None:
            return None
        uses = dict(self._pipeline.agents[launch.agent].uses)
        task = self._pipeline.tasks.get(launch.task_id)
        for name, amount in task.uses if task is not None else ():
            uses[name] = uses.get(name, 0) + amount
        if not uses:
            return None
        holder = f"{session_id}/{launch.task_id}/{fence}.{launch.attempt}"
        return Needs(uses, self._plan.priority(launch.task_id), holder)

    def waiting(self, task_id: str, attempt: int, resource: str, decision: Decision) -> None:
        self._events.add("resource_wait", f"task {task_id} waits for resource {resource}: {decision.reason}",
                         task_id=task_id, data={"attempt": attempt, "resource": resource, "reason": decision.reason})
        self._plan.report_progress(task_id, attempt, Progress(phase=WAITING_FOR_RESOURCE, step=resource))
        self._plan.park(task_id, True)
        self._wake()

    def acquired(self, task_id: str, attempt: int, resources: Mapping[str, int], waited: float) -> None:
        if waited <= 0:
            return
        self._events.add("resource_acquired", f"task {task_id} holds {', '.join(sorted(resources))} after "
                         f"{waited:.1f}s", task_id=task_id,
                         data={"attempt": attempt, "resources": dict(resources), "waited": waited})
        self._plan.report_progress(task_id, attempt, Progress(phase="running"))
        self._plan.park(task_id, False)
