"""The runner's port to what lies beyond its session: the store for child sessions and cached outputs.

A base class of `SessionRunner`, so these stay out of the runner's module: recording a
cache hit, and redriving a failed child session here (a new `SessionRunner` of the
same class, so this module imports no runner).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.clock import Clock
from orchestrator.events import EventBuffer
from orchestrator.metrics import CACHE_HIT_METRIC, MetricsRecorder
from orchestrator.scheduler.options import RunOptions
from orchestrator.store.protocol import Store
from orchestrator.store.records import ClaimPolicy, Lease, MetricSample
from orchestrator.telemetry import Telemetry

__all__ = ["BeyondSession"]


class BeyondSession:
    """`child_store`, `use_cache`, `cache_hit` and `redrive_child` of the `SessionPort`."""

    store: Store
    options: RunOptions
    telemetry: Telemetry
    events: EventBuffer
    metrics: MetricsRecorder
    _clock: Clock

    if TYPE_CHECKING:
        @property
        def lease(self) -> Lease: ...

    @property
    def child_store(self) -> Store:
        return self.store

    @property
    def use_cache(self) -> bool:
        return self.options.cache

    def cache_hit(self, task_id: str, attempt: int, agent: str, key: str) -> None:
        self.events.add("cache", f"task {task_id} completed from the cache without running {agent}",
                        task_id=task_id, data={"attempt": attempt, "key": key, "agent": agent})
        self.metrics.observe(MetricSample(CACHE_HIT_METRIC, agent, self._clock.now()))

    async def redrive_child(self, pipeline: Any, session_id: str) -> None:
        """Claim the FAILED child as a redrive (past its limit: its parent asked) and run it here to its end."""
        lease = await self.store.claim_session(session_id, self.lease.owner, self.options.lease_seconds,
                                               ClaimPolicy(redrive_failed=True, force=True))
        snapshot = await self.store.load_session(session_id)
        runner = type(self)(self.store, pipeline, lease, snapshot, options=self.options,  # type: ignore[call-arg]
                            clock=self._clock, telemetry=self.telemetry, metrics=self.metrics, redrive=True)
        await runner.run()  # type: ignore[attr-defined]
