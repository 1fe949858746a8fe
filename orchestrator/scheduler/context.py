"""The engine's side of `orchestrator.agents.AgentContext`: one object per task attempt.

Progress and log lines are buffered and written by the session runner (coalesced,
batched); `checkpoint` writes at once (fenced); `add_task` stages tasks that the store
adopts with this attempt's completion; `wait_for_signal` either returns a stored
payload or suspends the attempt so the session can go WAITING without holding a lease.
It sees the session only through a `SessionPort`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import anyio.from_thread

from orchestrator.agents.context import MapPolicy, TaskSpec
from orchestrator.agents.errors import SignalTimeoutError
from orchestrator.errors import PipelineDefinitionError
from orchestrator.scheduler.children import MAPS_KEY, ChildIO, run_map, split_state
from orchestrator.scheduler.messages import Launch
from orchestrator.scheduler.ports import SessionPort
from orchestrator.store.records import NewTask, Progress, check_id
from orchestrator.store.rules import check_graph
from orchestrator.store.rules.children import MapProgress, check_map_args, map_results

__all__ = ["CHILDREN_SIGNAL", "SuspendForSignal", "SyncTaskContext", "TaskContext"]

CHILDREN_SIGNAL = "orchestrator.children"  # the wait of a task whose children are running


class SuspendForSignal(BaseException):
    """Raised inside an agent waiting for a signal that has not arrived.

    A BaseException so agent code catching `Exception` does not swallow it; the
    runner records the task WAITING (with its deadline) and frees its slot.
    """

    def __init__(self, name: str, deadline: float | None) -> None:
        super().__init__(name, deadline)
        self.name = name
        self.deadline = deadline


class TaskContext:
    """`AgentContext` for one attempt of one task."""

    def __init__(self, port: SessionPort, launch: Launch) -> None:
        self._port = port
        self._task_id = launch.task_id
        self._agent = launch.agent
        self._attempt = launch.attempt
        self._input = launch.input
        self._deps = dict(launch.deps)
        self._state, self._maps = split_state(launch.state)
        self._calls = 0  # map/run_child calls so far in this attempt: each names its children
        # Each signal waited for keeps its own deadline; a woken wait's comes from the task record.
        self._inherited: tuple[str | None, float | None] | None = (launch.wait_signal, launch.wait_deadline)
        self._deadlines: dict[str, float | None] = {}
        self._cancelled = False
        self.added: dict[str, NewTask] = {}

    # -- identity -----------------------------------------------------------------------
    @property
    def session_id(self) -> str:
        return self._port.session_id

    @property
    def task_id(self) -> str:
        return self._task_id

    @property
    def agent(self) -> str:
        return self._agent

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def fence(self) -> int:
        return self._port.fence

    @property
    def input(self) -> Any:
        return self._input

    @property
    def session_input(self) -> Any:
        return self._port.session_input

    @property
    def deps(self) -> Mapping[str, Any]:
        return self._deps

    @property
    def state(self) -> Any:
        return self._state

    @property
    def cancelled(self) -> bool:
        return self._cancelled or self._port.stopping

    def mark_cancelled(self) -> None:
        """The attempt was cancelled: `cancelled` reads True from now on."""
        self._cancelled = True

    # -- buffered reports -----------------------------------------------------------------
    def progress(self, current: int, total: int, phase: str | None = None, step: str | None = None) -> None:
        self._port.report_progress(self._task_id, self._attempt, Progress(current, total, phase, step))

    def log(self, message: str, *, level: str = "INFO", **data: Any) -> None:
        self._port.log(self._task_id, self._attempt, message, level, data)

    def heartbeat(self) -> None:
        self._port.heartbeat(self._task_id)

    # -- durable operations ---------------------------------------------------------------
    async def checkpoint(self, state: Any) -> None:
        stored = {MAPS_KEY: self._maps, "state": state} if self._maps else state
        await self._port.checkpoint(self._task_id, self._attempt, stored)
        self._state = state

    async def add_task(self, task: TaskSpec) -> str:
        port = self._port
        check_id("task", task.task_id, where=f"add_task from task {self._task_id!r}")
        spec = port.agents.get(task.agent)
        if spec is None:
            raise PipelineDefinitionError(
                f"task {self._task_id!r} of session {port.session_id} added task {task.task_id!r} "
                f"with unknown agent {task.agent!r}; known agents: {', '.join(sorted(port.agents))}",
                session_id=port.session_id,
                task_id=task.task_id,
            )
        # Dependencies must exist already (in the session, or added before by this attempt),
        # so nothing added earlier can depend on this task: a cycle can only be a self-loop,
        # and checking the one new task is enough (linear over many add_task calls).
        check_graph([(task.task_id, tuple(task.depends_on))], where=f"the tasks added by {self._task_id}",
                    known=lambda dep: dep in self.added or port.task_origin(dep) is not None,
                    session_id=port.session_id)
        existing = port.task_origin(task.task_id)
        if existing is not None and task.task_id not in self.added:
            if existing.added_by == self._task_id and existing.agent == task.agent:
                return task.task_id  # adopted by an earlier completion of this very task
            raise PipelineDefinitionError(
                f"task {self._task_id!r} tried to add task {task.task_id!r}, which already exists in "
                f"session {port.session_id}; derive added task ids from the input so they are unique",
                session_id=port.session_id,
                task_id=task.task_id,
            )
        new = NewTask(
            task_id=task.task_id,
            agent=task.agent,
            input=task.input,
            priority=task.priority,
            max_attempts=task.max_attempts or spec.retry.max_attempts,
            depends_on=tuple(task.depends_on),
            added_by=self._task_id,
        )
        port.codec.to_jsonable(task.input, where=f"input of added task {task.task_id!r}")
        previous = self.added.get(task.task_id)
        if previous is not None and previous != new:
            raise PipelineDefinitionError(
                f"task {self._task_id!r} added task {task.task_id!r} twice with different definitions",
                session_id=port.session_id,
                task_id=task.task_id,
            )
        self.added[task.task_id] = new
        return task.task_id

    async def wait_for_signal(self, name: str, timeout: float | None = None) -> Any:
        port = self._port
        # The name is stored on the task and in signal keys; one `send_signal` refuses is never delivered.
        check_id("signal", name, where=f"wait_for_signal of task {self._task_id!r}")
        signal = port.signal(self._task_id, name)
        if signal is not None:
            return signal.payload
        now = port.clock.now()
        if name not in self._deadlines:
            inherited, self._inherited = self._inherited, None
            if inherited is not None and inherited[1] is not None and inherited[0] in (None, name):
                self._deadlines[name] = inherited[1]
            else:
                self._deadlines[name] = None if timeout is None else now + timeout
        deadline = self._deadlines[name]
        if deadline is not None and now >= deadline:
            raise SignalTimeoutError(name, timeout or 0.0, session_id=port.session_id, task_id=self._task_id)
        raise SuspendForSignal(name, deadline)


    async def run_child(self, pipeline: Any, input: Any = None) -> Any:
        [output] = await self.map(pipeline, [input], concurrency=1)
        return output

    async def map(self, pipeline: Any, items: Sequence[Any], *, concurrency: int | None = None,
                  policy: MapPolicy = "fail_fast", poll_interval: float = 1.0) -> list[Any]:
        port = self._port
        call = self._calls
        self._calls += 1
        where = f"map {call} of task {self._task_id} in session {port.session_id}"
        check_map_args(items, concurrency, policy, where=where)
        for i, item in enumerate(items):
            port.codec.to_jsonable(item, where=f"item {i} of {where}")
        progress = MapProgress.from_json(self._maps.get(str(call)), len(items), where=where)
        io = ChildIO(port.child_store, port.session_id, self._task_id, call, {})

        async def save() -> None:
            self._maps[str(call)] = progress.to_json()
            await self.checkpoint(self._state)
            ended = progress.watermark + len(progress.ended)
            port.log(self._task_id, self._attempt, f"{where}: {progress.created} of {progress.total} child sessions "
                     f"created, {ended} ended", "INFO", {"children": {"call": call, "created": progress.created,
                                                                      "ended": ended, "total": progress.total}})

        results = await run_map(io, progress, pipeline, items, concurrency=concurrency,
                                fail_fast=policy == "fail_fast", put_definition=port.child_store.put_pipeline,
                                save=save, attempt=self._attempt,
                                redrive=lambda sid: port.redrive_child(pipeline, sid))
        if results is None:
            raise SuspendForSignal(CHILDREN_SIGNAL, port.clock.now() + poll_interval)
        return map_results(results, policy)


class SyncTaskContext:
    """`SyncAgentContext`: the same operations, blocking, for agents in worker threads."""

    def __init__(self, inner: TaskContext) -> None:
        self._inner = inner

    session_id = property(lambda self: self._inner.session_id)
    task_id = property(lambda self: self._inner.task_id)
    agent = property(lambda self: self._inner.agent)
    attempt = property(lambda self: self._inner.attempt)
    fence = property(lambda self: self._inner.fence)
    input = property(lambda self: self._inner.input)
    session_input = property(lambda self: self._inner.session_input)
    deps = property(lambda self: self._inner.deps)
    state = property(lambda self: self._inner.state)
    cancelled = property(lambda self: self._inner.cancelled)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return anyio.from_thread.run(fn, *args)

    def progress(self, current: int, total: int, phase: str | None = None, step: str | None = None) -> None:
        anyio.from_thread.run_sync(self._inner.progress, current, total, phase, step)

    def log(self, message: str, *, level: str = "INFO", **data: Any) -> None:
        anyio.from_thread.run_sync(lambda: self._inner.log(message, level=level, **data))

    def heartbeat(self) -> None:
        anyio.from_thread.run_sync(self._inner.heartbeat)

    def checkpoint(self, state: Any) -> None:
        self._call(self._inner.checkpoint, state)

    def add_task(self, task: TaskSpec) -> str:
        result: str = self._call(self._inner.add_task, task)
        return result

    def wait_for_signal(self, name: str, timeout: float | None = None) -> Any:
        return self._call(self._inner.wait_for_signal, name, timeout)

    def run_child(self, pipeline: Any, input: Any = None) -> Any:
        return self._call(self._inner.run_child, pipeline, input)

    def map(self, pipeline: Any, items: Sequence[Any], *, concurrency: int | None = None,
            policy: MapPolicy = "fail_fast", poll_interval: float = 1.0) -> list[Any]:
        result: list[Any] = anyio.from_thread.run(
            lambda: self._inner.map(pipeline, items, concurrency=concurrency, policy=policy,
                                    poll_interval=poll_interval))
        return result
