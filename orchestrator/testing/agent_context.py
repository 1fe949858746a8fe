"""`FakeAgentContext`: run one agent in a unit test, without a store or a scheduler."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.agents.context import MapPolicy, TaskSpec
from orchestrator.agents.errors import SignalTimeoutError

__all__ = ["FakeAgentContext"]


@dataclass
class FakeAgentContext:
    """An `AgentContext` that records what the agent reports.

    `wait_for_signal(name)` returns `signals[name]`, or raises SignalTimeoutError when
    the name is absent (a wait that timed out). Progress, log lines, checkpoints,
    added tasks and children are kept in lists for assertions; a child's output is
    `child_output(pipeline_name, input)` (the input itself by default).
    """

    session_id: str = "s-1"
    task_id: str = "t-1"
    agent: str = "agent"
    attempt: int = 1
    fence: int = 1
    input: Any = None
    session_input: Any = None
    deps: Mapping[str, Any] = field(default_factory=dict)
    state: Any = None
    cancelled: bool = False
    signals: dict[str, Any] = field(default_factory=dict)
    progress_calls: list[tuple[int, int, str | None, str | None]] = field(default_factory=list)
    logs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    added: list[TaskSpec] = field(default_factory=list)
    waited: list[tuple[str, float | None]] = field(default_factory=list)
    children: list[tuple[str, Any]] = field(default_factory=list)  # (pipeline name, input) per child
    child_output: Callable[[str, Any], Any] = lambda pipeline, item: item  # a child's output, in process

    def progress(self, current: int, total: int, phase: str | None = None, step: str | None = None) -> None:
        self.progress_calls.append((current, total, phase, step))

    def log(self, message: str, *, level: str = "INFO", **data: Any) -> None:
        self.logs.append((message, {"level": level, **data}))

    def lines(self, stream: str) -> list[str]:
        """Log lines recorded with `stream=...` (as `CommandAgent` does)."""
        return [message for message, data in self.logs if data.get("stream") == stream]

    def heartbeat(self) -> None:
        return None

    async def checkpoint(self, state: Any) -> None:
        self.state = state

    async def add_task(self, task: TaskSpec) -> str:
        self.added.append(task)
        return task.task_id

    async def wait_for_signal(self, name: str, timeout: float | None = None) -> Any:
        self.waited.append((name, timeout))
        if name not in self.signals:
            raise SignalTimeoutError(name, timeout or 0.0, session_id=self.session_id, task_id=self.task_id)
        return self.signals[name]

    async def run_child(self, pipeline: Any, input: Any = None) -> Any:
        [output] = await self.map(pipeline, [input])
        return output

    async def map(self, pipeline: Any, items: Sequence[Any], *, concurrency: int | None = None,
                  policy: MapPolicy = "fail_fast", poll_interval: float = 1.0) -> list[Any]:
        self.children += [(pipeline.name, item) for item in items]
        outputs = [self.child_output(pipeline.name, item) for item in items]
        if policy == "collect":
            return [{"ok": True, "output": o, "session": f"{self.session_id}.{self.task_id}.{i}"}
                    for i, o in enumerate(outputs)]
        return outputs
