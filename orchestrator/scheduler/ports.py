"""The small protocols the runner's collaborators depend on, instead of the runner itself.

`SessionPort` is what one attempt and its `TaskContext` may see and do of their
session; `LeaseListener` is how the `LeaseKeeper` reports news. The runner implements
both; tests may pass anything that does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.agents.spec import AgentSpec
from orchestrator.clock import Clock
from orchestrator.codec import Codec
from orchestrator.errors import LeaseLostError
from orchestrator.store.protocol import Store
from orchestrator.store.records import Progress, SignalRecord

__all__ = ["LeaseListener", "SessionPort", "TaskOrigin"]


@dataclass(frozen=True, slots=True)
class TaskOrigin:
    """Who a known task is: its agent, and the task that added it at run time (if any)."""

    agent: str
    added_by: str | None = None


class SessionPort(Protocol):
    """The session as one attempt sees it: identity, lookups, buffered reports, checkpoints."""

    @property
    def session_id(self) -> str: ...

    @property
    def session_input(self) -> Any: ...

    @property
    def fence(self) -> int: ...

    @property
    def stopping(self) -> bool:
        """True once the session stops (lease lost): agents should stop too."""
        ...

    def check_lease(self) -> None:
        """Raise LeaseLostError if the lease was lost or its local deadline passed."""
        ...

    @property
    def clock(self) -> Clock: ...

    @property
    def codec(self) -> Codec: ...

    @property
    def agents(self) -> Mapping[str, AgentSpec]:
        """The pipeline's agents by name (an added task must use one of them)."""
        ...

    def task_origin(self, task_id: str) -> TaskOrigin | None:
        """The known task `task_id` (stored or adopted), or None."""
        ...

    def signal(self, task_id: str, name: str) -> SignalRecord | None:
        """The stored signal `name` for `task_id`, as last loaded, or None."""
        ...

    def report_progress(self, task_id: str, attempt: int, progress: Progress) -> None:
        """Buffer progress; it is written coalesced, at most once per interval."""
        ...

    def log(self, task_id: str, attempt: int, message: str, level: str, data: Mapping[str, Any]) -> None:
        """Buffer a log line as a session event."""
        ...

    def heartbeat(self, task_id: str) -> None:
        """The agent says it is alive."""
        ...

    async def checkpoint(self, task_id: str, attempt: int, state: Any) -> None:
        """Write the agent's state now (fenced); raises LeaseLostError if it did not land."""
        ...

    @property
    def child_store(self) -> Store:
        """The store beyond this session: child sessions of a map, cached outputs."""
        ...

    @property
    def use_cache(self) -> bool:
        """False when the run bypasses cached outputs (`RunOptions.cache`, `--no-cache`)."""
        ...

    def cache_hit(self, task_id: str, attempt: int, agent: str, key: str) -> None:
        """Record that the task completed from the cache (an event and a metric)."""
        ...

    async def redrive_child(self, pipeline: Any, session_id: str) -> None:
        """Redrive the FAILED child session `session_id` of `pipeline` and run it to its end here."""
        ...


class LeaseListener(Protocol):
    """What the lease keeper reports; called on the event loop, must not block."""

    def lease_lost(self, error: LeaseLostError) -> None:
        """The lease was taken, or its local deadline passed: stop agents and writes."""
        ...

    def cancel_requested(self, reason: str) -> None:
        """The session item carries a cancel request."""
        ...

    def signals_changed(self, signal_seq: int) -> None:
        """The session's signal sequence moved past the one last loaded."""
        ...
