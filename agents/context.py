"""What an agent sees of the engine: the `AgentContext` protocol (the engine implements it).

Async agents get an `AgentContext`; sync agents run by the "thread" executor get a
`SyncAgentContext`, the same operations as blocking calls. Agents run by the
"process" executor get a `ProcessContext`: plain data (input, dependency outputs,
restored checkpoint), since a live context cannot cross a process boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

__all__ = ["AgentContext", "MapPolicy", "ProcessContext", "SyncAgentContext", "TaskSpec"]

MapPolicy: TypeAlias = Literal["fail_fast", "collect"]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task an agent adds at run time with `ctx.add_task(...)`.

    `task_id` must be deterministic (derived from the agent's input), so a re-run agent
    adding the same task is a no-op rather than a duplicate.
    """

    task_id: str
    agent: str
    input: Any = None
    depends_on: Sequence[str] = ()
    priority: int = 2
    max_attempts: int | None = None


@runtime_checkable
class AgentContext(Protocol):
    """The engine's side of one task attempt, for an async agent."""

    @property
    def session_id(self) -> str: ...
    @property
    def task_id(self) -> str: ...
    @property
    def agent(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def fence(self) -> int:
        """The session's fence: pass it downstream to fence your own side effects."""
        ...
    @property
    def input(self) -> Any:
        """The task's static input, or the session input when the task has none."""
        ...
    @property
    def session_input(self) -> Any: ...
    @property
    def deps(self) -> Mapping[str, Any]:
        """Outputs of the tasks this one depends on, by task id."""
        ...
    @property
    def state(self) -> Any:
        """The last `checkpoint(state)` of this task (restored on resume), or None."""
        ...
    @property
    def cancelled(self) -> bool:
        """True once the run is being cancelled (for loops that poll)."""
        ...

    def progress(self, current: int, total: int, phase: str | None = None, step: str | None = None) -> None:
        """Report progress; coalesced, written at most once per interval."""
        ...

    def log(self, message: str, *, level: str = "INFO", **data: Any) -> None:
        """Record a line in the session's events (buffered, flushed in batches)."""
        ...

    def heartbeat(self) -> None:
        """Say the agent is alive (the lease is renewed in the background regardless)."""
        ...

    async def checkpoint(self, state: Any) -> None:
        """Durably save agent state, restored as `ctx.state` if the task runs again."""
        ...

    async def add_task(self, task: TaskSpec) -> str:
        """Grow the DAG; the task is adopted when this agent completes. Returns its id."""
        ...

    async def wait_for_signal(self, name: str, timeout: float | None = None) -> Any:
        """Wait durably for a signal; returns its payload, or raises SignalTimeoutError once
        `timeout` seconds passed since this wait began (each signal has its own deadline)."""
        ...

    async def run_child(self, pipeline: Any, input: Any = None) -> Any:
        """Run `pipeline` as a child session (any worker claims it); returns its output.

        The task waits durably meanwhile (WAITING, no lease, no slot). Raises
        NonRetryableError if the child does not complete.
        """
        ...

    async def map(self, pipeline: Any, items: Sequence[Any], *, concurrency: int | None = None,
                  policy: MapPolicy = "fail_fast", poll_interval: float = 1.0) -> list[Any]:
        """Run `pipeline` once per item as child sessions; their outputs, in item order.

        At most `concurrency` children are in flight across the fleet. `policy="fail_fast"`
        fails the task on the first child that does not complete (cancelling the others);
        `"collect"` returns `{"ok", "output" | "error", "session"}` per item. The task
        waits durably between looks, `poll_interval` seconds apart.
        """
        ...


@runtime_checkable
class SyncAgentContext(Protocol):
    """`AgentContext` for sync agents on the thread executor: the same, blocking."""

    @property
    def session_id(self) -> str: ...
    @property
    def task_id(self) -> str: ...
    @property
    def agent(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def fence(self) -> int: ...
    @property
    def input(self) -> Any: ...
    @property
    def session_input(self) -> Any: ...
    @property
    def deps(self) -> Mapping[str, Any]: ...
    @property
    def state(self) -> Any: ...
    @property
    def cancelled(self) -> bool: ...

    def progress(self, current: int, total: int, phase: str | None = None, step: str | None = None) -> None: ...
    def log(self, message: str, *, level: str = "INFO", **data: Any) -> None: ...
    def heartbeat(self) -> None: ...
    def checkpoint(self, state: Any) -> None: ...
    def add_task(self, task: TaskSpec) -> str: ...
    def wait_for_signal(self, name: str, timeout: float | None = None) -> Any: ...
    def run_child(self, pipeline: Any, input: Any = None) -> Any: ...
    def map(self, pipeline: Any, items: Sequence[Any], *, concurrency: int | None = None,
            policy: MapPolicy = "fail_fast", poll_interval: float = 1.0) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class ProcessContext:
    """What a process-executor agent receives: picklable data only."""

    session_id: str
    task_id: str
    agent: str
    attempt: int
    fence: int
    input: Any
    session_input: Any
    deps: Mapping[str, Any] = field(default_factory=dict)
    state: Any = None
