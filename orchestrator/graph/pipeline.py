"""`Task` and `Pipeline`: what users declare, validated before anything is written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from orchestrator.agents import AgentSpec, spec_of
from orchestrator.agents.spec import check_uses
from orchestrator.errors import PipelineDefinitionError, TaskNotFoundError
from orchestrator.graph.render import RenderFormat, render
from orchestrator.store.records import Edge, NewTask, PipelineDefinition, check_id
from orchestrator.store.rules import check_graph, close_matches

__all__ = ["Pipeline", "Task"]


def _uses(uses: Mapping[str, int] | None, where: str) -> tuple[tuple[str, int], ...]:
    try:
        return tuple(sorted(check_uses(uses, where).items()))
    except ValueError as exc:
        raise PipelineDefinitionError(str(exc), field="uses") from None


@dataclass(frozen=True)
class Task:
    """One node of a pipeline: run agent `agent` after every task in `depends_on` completed.

    `priority` orders ready tasks (0 is the highest); `max_attempts=None` takes the
    agent's `RetryPolicy.max_attempts`.
    """

    id: str
    agent: str
    depends_on: tuple[str, ...] = ()
    priority: int = 2
    input: Any = None
    max_attempts: int | None = None
    uses: tuple[tuple[str, int], ...] = ()  # fleet-wide resources this task holds, beyond its agent's

    def __post_init__(self) -> None:
        # Accept a list or a single id for convenience; store a tuple so Task stays hashable.
        deps: Any = self.depends_on
        if isinstance(deps, str):
            deps = (deps,)
        object.__setattr__(self, "depends_on", tuple(deps))
        uses: Any = self.uses
        if isinstance(uses, Mapping):
            uses = _uses(uses, f"task {self.id!r}")
        object.__setattr__(self, "uses", tuple(uses))


class Pipeline:
    """A named, versioned DAG of tasks and the agents that run them.

        pipe = (Pipeline("build", agents=[plan, code])
                .task("plan", plan)
                .task("code", "code", depends_on=["plan"], priority=0))

    Nothing is checked until `validate()` (called by `new_tasks()` and `definition()`),
    so a pipeline can be assembled in any order.
    """

    def __init__(
        self,
        name: str,
        *,
        version: str = "1",
        agents: Sequence[Any] = (),
        tasks: Sequence[Task] = (),
    ) -> None:
        self._name = name
        self._version = version
        # Lists keep every addition (validate() reports duplicates); the dicts index the
        # first of each name so lookups stay O(1) for a scheduler calling agent_for per task.
        self._agent_specs: list[AgentSpec] = []
        self._agents_by_name: dict[str, AgentSpec] = {}
        self._task_list: list[Task] = []
        self._tasks_by_id: dict[str, Task] = {}
        for a in agents:
            self._add_spec(spec_of(a))
        for t in tasks:
            self._add_task(t)

    def _add_spec(self, spec: AgentSpec) -> None:
        self._agent_specs.append(spec)
        self._agents_by_name.setdefault(spec.name, spec)

    def _add_task(self, task: Task) -> None:
        self._task_list.append(task)
        self._tasks_by_id.setdefault(task.id, task)

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._version

    @property
    def agents(self) -> Mapping[str, AgentSpec]:
        """Agents by name (the first one given, when a name repeats)."""
        return MappingProxyType(self._agents_by_name)

    @property
    def tasks(self) -> Mapping[str, Task]:
        """Tasks by id, in the order they were added (the first one, when an id repeats)."""
        return MappingProxyType(self._tasks_by_id)

    def add_agent(self, agent: Any) -> Pipeline:
        """Make an agent (anything `orchestrator.agents.spec_of` accepts) available to this pipeline's tasks."""
        self._add_spec(spec_of(agent))
        return self

    def task(
        self,
        id: str,
        agent: Any,
        *,
        depends_on: Sequence[str] | str = (),
        priority: int = 2,
        input: Any = None,
        max_attempts: int | None = None,
        uses: Mapping[str, int] | None = None,
    ) -> Pipeline:
        """Add a task; `agent` is an agent name, or an agent object (also added to `agents`).

        `uses` adds fleet-wide resources this task holds to those its agent declares."""
        if isinstance(agent, str):
            agent_name = agent
        else:
            spec = spec_of(agent)
            self._add_spec(spec)
            agent_name = spec.name
        deps = (depends_on,) if isinstance(depends_on, str) else tuple(depends_on)
        self._add_task(
            Task(id=id, agent=agent_name, depends_on=deps, priority=priority, input=input, max_attempts=max_attempts,
                 uses=_uses(uses, f"task {id!r}"))
        )
        return self

    def validate(self) -> None:
        """Raise `PipelineDefinitionError` (or `CycleError`) if this is not a valid DAG of known agents."""
        where = f"pipeline {self._name!r}"
        check_id("pipeline", self._name)
        check_id("pipeline version", self._version, where=where)
        if not self._task_list:
            raise PipelineDefinitionError(
                f"{where} has no tasks; add at least one with .task(id, agent)", pipeline=self._name
            )
        agents = self._validate_agents(where)
        self._validate_tasks(where, agents)
        check_graph(((t.id, t.depends_on) for t in self._task_list), where=f"pipeline {self._name}",
                    pipeline=self._name)

    def _validate_agents(self, where: str) -> dict[str, AgentSpec]:
        agents: dict[str, AgentSpec] = {}
        for spec in self._agent_specs:
            seen = agents.get(spec.name)
            if seen is not None and seen.fn != spec.fn:
                raise PipelineDefinitionError(
                    f"{where} has two different agents named {spec.name!r} ({seen.fn!r} and {spec.fn!r}); "
                    f"give one of them another name with @agent(name=...)",
                    pipeline=self._name,
                    agent=spec.name,
                )
            agents.setdefault(spec.name, spec)
        return agents

    def _validate_tasks(self, where: str, agents: Mapping[str, AgentSpec]) -> None:
        """Each task on its own: ids, priority, attempts, a known agent (the graph is checked after)."""
        for task in self._task_list:
            check_id("task", task.id, where=where)
            for dep in task.depends_on:
                check_id("task", dep, where=f"depends_on of task {task.id!r} in {where}")
            if task.priority not in (0, 1, 2, 3):
                raise PipelineDefinitionError(
                    f"task {task.id!r} in {where} has priority {task.priority!r}; use 0..3 (P0 is the highest)",
                    pipeline=self._name,
                    task_id=task.id,
                )
            if task.max_attempts is not None and task.max_attempts < 1:
                raise PipelineDefinitionError(
                    f"task {task.id!r} in {where} has max_attempts={task.max_attempts}; use 1 or more",
                    pipeline=self._name,
                    task_id=task.id,
                )
            if task.agent not in agents:
                known = ", ".join(sorted(agents)) or "(none)"
                raise PipelineDefinitionError(
                    f"task {task.id!r} in {where} uses unknown agent {task.agent!r}"
                    f"{close_matches(task.agent, agents)}; known agents: {known}. "
                    f"Pass the agent in Pipeline(agents=[...]) or to .task(id, agent_object)",
                    pipeline=self._name,
                    task_id=task.id,
                    agent=task.agent,
                )

    def agent_for(self, task_id: str) -> AgentSpec:
        """The agent that runs `task_id`."""
        task = self.tasks.get(task_id)
        if task is None:
            raise TaskNotFoundError(
                f"pipeline {self._name!r} has no task {task_id!r}{close_matches(task_id, self.tasks)}; "
                f"known tasks: {', '.join(self.tasks) or '(none)'}",
                task_id=task_id,
                pipeline=self._name,
            )
        spec = self.agents.get(task.agent)
        if spec is None:
            raise PipelineDefinitionError(
                f"task {task_id!r} in pipeline {self._name!r} uses unknown agent {task.agent!r}; "
                f"known agents: {', '.join(sorted(self.agents)) or '(none)'}",
                task_id=task_id,
                pipeline=self._name,
                agent=task.agent,
            )
        return spec

    def new_tasks(self) -> list[NewTask]:
        """The validated tasks as the store creates them, `max_attempts` resolved from the agents."""
        self.validate()
        agents = self.agents
        return [
            NewTask(
                task_id=t.id,
                agent=t.agent,
                input=t.input,
                priority=t.priority,
                max_attempts=t.max_attempts if t.max_attempts is not None else agents[t.agent].retry.max_attempts,
                depends_on=t.depends_on,
            )
            for t in self.tasks.values()
        ]

    def edges(self) -> list[Edge]:
        """Dependency edges, one per (task, dependency)."""
        return [Edge(t.id, dep) for t in self.tasks.values() for dep in dict.fromkeys(t.depends_on)]

    def definition(self) -> PipelineDefinition:
        """The stored shape of this pipeline (validated), to check resumed sessions against."""
        return PipelineDefinition(name=self._name, version=self._version, tasks=tuple(self.new_tasks()))

    def render(self, format: RenderFormat = "mermaid") -> str:
        """This pipeline drawn as Mermaid, Graphviz dot, or text levels (see `render`)."""
        return render(list(self.tasks.values()), self.edges(), format=format)

    def __repr__(self) -> str:
        return f"Pipeline({self._name!r}, version={self._version!r}, tasks={len(self._task_list)})"
