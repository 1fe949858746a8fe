"""Pipelines as DAGs: declare and validate them, track a session's ready set, render them.

`Pipeline` is what users build (tasks, their agents and dependencies) and validate
before anything is written. `DagState` is the scheduler's view of one session's DAG at
run time: statuses, the ready set, skip closures and tasks added by agents. Its work
is linear in tasks + edges: each completion touches only the finished task's
dependents, never the whole graph.
"""

from __future__ import annotations

import difflib
import heapq
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal


from agents import AgentSpec, spec_of
from orchestrator.errors import (
    CycleError,
    PipelineDefinitionError,
    TaskNotFoundError,
    ValidationError,
)
from orchestrator.store.records import (
    Edge,
    NewTask,
    PipelineDefinition,
    TaskRecord,
    TaskStatus,
    check_id,
)

__all__ = ["RENDER_FORMATS", "DagState", "Pipeline", "RenderFormat", "Task", "render"]

RenderFormat = Literal["mermaid", "dot", "text"]
RENDER_FORMATS: tuple[str, ...] = ("mermaid", "dot", "text")


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

    def __post_init__(self) -> None:
        # Accept a list or a single id for convenience; store a tuple so Task stays hashable.
        deps: Any = self.depends_on
        if isinstance(deps, str):
            deps = (deps,)
        object.__setattr__(self, "depends_on", tuple(deps))


def _close_matches(word: str, choices: Iterable[str]) -> str:
    found = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(f) for f in found)}?)" if found else ""


def _cycle_message(where: str, cycle: Sequence[str]) -> str:
    path = " -> ".join([*cycle, cycle[0]])
    return (
        f"{where} has a cycle: {path} (each task depends on the next); "
        f"remove one of these dependencies"
    )


def _rotate_cycle(cycle: list[str]) -> list[str]:
    """Start a cycle at its smallest id, so the message is the same on every run."""
    i = cycle.index(min(cycle))
    return cycle[i:] + cycle[:i]


def _nx() -> Any:
    """networkx, imported when a cycle must be named: it costs ~0.4 s of every CLI start."""
    import networkx

    return networkx


def _find_cycle(graph: Any) -> list[str] | None:
    """A cycle of `graph` (edges point from a task to what it depends on), or None."""
    try:
        edges = _nx().find_cycle(graph)
    except _nx().NetworkXNoCycle:
        return None
    return _rotate_cycle([str(edge[0]) for edge in edges])


def _acyclic(tasks: Mapping[str, Task]) -> bool:
    """Kahn's algorithm, O(tasks + edges); networkx is asked only to name a cycle."""
    unmet = {tid: len(set(t.depends_on)) for tid, t in tasks.items()}
    dependents: dict[str, list[str]] = {tid: [] for tid in tasks}
    for tid, t in tasks.items():
        for dep in set(t.depends_on):
            dependents[dep].append(tid)
    queue = deque(tid for tid, n in unmet.items() if n == 0)
    seen = 0
    while queue:
        tid = queue.popleft()
        seen += 1
        for child in dependents[tid]:
            unmet[child] -= 1
            if unmet[child] == 0:
                queue.append(child)
    return seen == len(tasks)


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
        """Make an agent (anything `agents.spec_of` accepts) available to this pipeline's tasks."""
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
    ) -> Pipeline:
        """Add a task; `agent` is an agent name, or an agent object (also added to `agents`)."""
        if isinstance(agent, str):
            agent_name = agent
        else:
            spec = spec_of(agent)
            self._add_spec(spec)
            agent_name = spec.name
        deps = (depends_on,) if isinstance(depends_on, str) else tuple(depends_on)
        self._add_task(
            Task(id=id, agent=agent_name, depends_on=deps, priority=priority, input=input, max_attempts=max_attempts)
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
        tasks = self._validate_tasks(where, agents)
        if _acyclic(tasks):
            return
        graph = _nx().DiGraph()
        graph.add_nodes_from(tasks)
        graph.add_edges_from((t.id, dep) for t in tasks.values() for dep in t.depends_on)
        cycle = _find_cycle(graph)
        if cycle is not None:
            raise CycleError(
                _cycle_message(f"pipeline {self._name}", cycle), cycle=cycle, pipeline=self._name
            )

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

    def _validate_tasks(self, where: str, agents: Mapping[str, AgentSpec]) -> dict[str, Task]:
        tasks: dict[str, Task] = {}
        for task in self._task_list:
            check_id("task", task.id, where=where)
            if task.id in tasks:
                raise PipelineDefinitionError(
                    f"{where} has two tasks with id {task.id!r}; task ids must be unique",
                    pipeline=self._name,
                    task_id=task.id,
                )
            tasks[task.id] = task
        for task in tasks.values():
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
                    f"{_close_matches(task.agent, agents)}; known agents: {known}. "
                    f"Pass the agent in Pipeline(agents=[...]) or to .task(id, agent_object)",
                    pipeline=self._name,
                    task_id=task.id,
                    agent=task.agent,
                )
            for dep in task.depends_on:
                if dep not in tasks:
                    raise PipelineDefinitionError(
                        f"task {task.id!r} in {where} depends on unknown task {dep!r}"
                        f"{_close_matches(dep, tasks)}; add a task {dep!r} or fix the dependency",
                        pipeline=self._name,
                        task_id=task.id,
                        missing=dep,
                    )
        return tasks

    def agent_for(self, task_id: str) -> AgentSpec:
        """The agent that runs `task_id`."""
        task = self.tasks.get(task_id)
        if task is None:
            raise TaskNotFoundError(
                f"pipeline {self._name!r} has no task {task_id!r}{_close_matches(task_id, self.tasks)}; "
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


@dataclass(slots=True)
class _Node:
    agent: str
    priority: int
    input: Any
    deps: tuple[str, ...]
    dependents: list[str]
    status: TaskStatus
    unmet: int = 0  # dependencies not COMPLETED
    queued: bool = False  # has an entry in the ready heap


class DagState:
    """The runtime DAG of one session: statuses, ready set, skip closures, run-time additions.

    Every operation costs O(what it touches): completing a task visits its dependents
    only, the ready set is a heap updated as tasks become ready, and added tasks are
    checked for cycles among themselves (existing tasks cannot depend on new ones).
    """

    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {}
        self._heap: list[tuple[int, str]] = []
        self._counts: Counter[TaskStatus] = Counter()

    @classmethod
    def from_records(cls, tasks: Mapping[str, TaskRecord], edges: Sequence[Edge]) -> DagState:
        """Build from a loaded session (its adopted tasks and edges); raise if they do not form a DAG."""
        state = cls()
        deps: dict[str, dict[str, None]] = {tid: dict.fromkeys(rec.depends_on) for tid, rec in tasks.items()}
        for edge in edges:
            if edge.task_id not in deps:
                raise PipelineDefinitionError(
                    f"stored edge {edge.task_id!r} -> {edge.depends_on!r} names unknown task {edge.task_id!r}; "
                    f"the session's tasks and edges disagree",
                    task_id=edge.task_id,
                )
            deps[edge.task_id][edge.depends_on] = None
        for tid, rec in tasks.items():
            for dep in deps[tid]:
                if dep not in tasks:
                    raise PipelineDefinitionError(
                        f"task {tid!r} depends on unknown task {dep!r}{_close_matches(dep, tasks)}",
                        task_id=tid,
                        missing=dep,
                    )
            state._nodes[tid] = _Node(
                agent=rec.agent,
                priority=rec.priority,
                input=rec.input,
                deps=tuple(deps[tid]),
                dependents=[],
                status=rec.status,
            )
        state._link(list(state._nodes))
        cycle = state._cycle_among(list(state._nodes))
        if cycle is not None:
            raise CycleError(_cycle_message("the session's task graph", cycle), cycle=cycle)
        return state

    def _link(self, ids: Sequence[str]) -> None:
        """Wire dependents, unmet counts, status counts and the heap for newly inserted nodes."""
        nodes = self._nodes
        for tid in ids:
            node = nodes[tid]
            self._counts[node.status] += 1
            for dep in node.deps:
                nodes[dep].dependents.append(tid)
                if nodes[dep].status is not TaskStatus.COMPLETED:
                    node.unmet += 1
        for tid in ids:
            self._maybe_queue(tid, nodes[tid])

    def _cycle_among(self, ids: Sequence[str]) -> list[str] | None:
        """A cycle among `ids` (edges to nodes outside `ids` cannot close one), or None.

        Kahn's algorithm in O(nodes + edges); networkx names the cycle only when one exists.
        """
        members = set(ids)
        indeg = {tid: sum(1 for d in self._nodes[tid].deps if d in members) for tid in ids}
        queue = deque(tid for tid, n in indeg.items() if n == 0)
        seen = 0
        while queue:
            tid = queue.popleft()
            seen += 1
            for child in self._nodes[tid].dependents:
                if child in members:
                    indeg[child] -= 1
                    if indeg[child] == 0:
                        queue.append(child)
        if seen == len(ids):
            return None
        graph = _nx().DiGraph()
        left = [tid for tid, n in indeg.items() if n > 0]
        graph.add_edges_from((t, d) for t in left for d in self._nodes[t].deps if d in members and indeg[d] > 0)
        return _find_cycle(graph)

    def _maybe_queue(self, tid: str, node: _Node) -> None:
        if node.status is TaskStatus.PENDING and node.unmet == 0 and not node.queued:
            node.queued = True
            heapq.heappush(self._heap, (node.priority, tid))

    def _node(self, task_id: str) -> _Node:
        try:
            return self._nodes[task_id]
        except KeyError:
            raise TaskNotFoundError(
                f"the session's DAG has no task {task_id!r}{_close_matches(task_id, self._nodes)}",
                task_id=task_id,
            ) from None

    # -- queries --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._nodes

    @property
    def task_ids(self) -> list[str]:
        return list(self._nodes)

    def status(self, task_id: str) -> TaskStatus:
        return self._node(task_id).status

    def agent_of(self, task_id: str) -> str:
        return self._node(task_id).agent

    def deps_of(self, task_id: str) -> tuple[str, ...]:
        return self._node(task_id).deps

    def dependents_of(self, task_id: str) -> tuple[str, ...]:
        return tuple(self._node(task_id).dependents)

    def edges(self) -> list[Edge]:
        return [Edge(tid, dep) for tid, node in self._nodes.items() for dep in node.deps]

    def ready(self, limit: int | None = None) -> list[str]:
        """PENDING tasks whose dependencies all COMPLETED, by priority then id (at most `limit`).

        Costs O(k log n) for k returned ids plus entries gone stale since the last call,
        so a scheduler with a concurrency limit should pass `limit`.
        """
        heap, nodes = self._heap, self._nodes
        out: list[tuple[int, str]] = []
        while heap and (limit is None or len(out) < limit):
            prio, tid = heapq.heappop(heap)
            node = nodes[tid]
            if node.status is TaskStatus.PENDING and node.unmet == 0:
                out.append((prio, tid))
            else:
                node.queued = False  # stale entry: it will be queued again if it becomes ready
        for entry in out:
            heapq.heappush(heap, entry)
        return [tid for _, tid in out]

    def counts(self) -> dict[TaskStatus, int]:
        """Tasks per status (statuses with no task left out)."""
        return {status: n for status, n in self._counts.items() if n}

    @property
    def total(self) -> int:
        return len(self._nodes)

    @property
    def completed(self) -> int:
        return self._counts[TaskStatus.COMPLETED]

    @property
    def done(self) -> int:
        """Tasks in a final status (COMPLETED, FAILED, SKIPPED, CANCELLED): the progress numerator."""
        return sum(n for status, n in self._counts.items() if status.is_final)

    @property
    def is_finished(self) -> bool:
        return self.done == self.total

    def unfinished(self) -> list[str]:
        """Tasks not in a final status, in insertion order."""
        return [tid for tid, node in self._nodes.items() if not node.status.is_final]

    def dependents_closure(self, task_id: str) -> set[str]:
        """Every task that depends on `task_id`, directly or transitively (not itself)."""
        out: set[str] = set()
        stack = list(self._node(task_id).dependents)
        while stack:
            tid = stack.pop()
            if tid not in out:
                out.add(tid)
                stack.extend(self._nodes[tid].dependents)
        return out

    def outputs_of_deps(self, task_id: str, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """The outputs of `task_id`'s dependencies, by dependency id (None when one has none)."""
        return {dep: outputs.get(dep) for dep in self._node(task_id).deps}

    # -- updates --------------------------------------------------------------------------

    def mark(self, task_id: str, status: TaskStatus) -> None:
        """Set a task's status; a completion makes its dependents ready as their last dep finishes."""
        node = self._node(task_id)
        old = node.status
        if old is status:
            return
        node.status = status
        self._counts[old] -= 1
        self._counts[status] += 1
        nodes = self._nodes
        if status is TaskStatus.COMPLETED:
            for child in node.dependents:
                c = nodes[child]
                c.unmet -= 1
                if c.unmet == 0:
                    self._maybe_queue(child, c)
        elif old is TaskStatus.COMPLETED:
            for child in node.dependents:
                nodes[child].unmet += 1  # its heap entry, if any, goes stale and is dropped lazily
        self._maybe_queue(task_id, node)

    def add_tasks(self, new: Sequence[NewTask], *, known_agents: Iterable[str] | None = None) -> list[str]:
        """Add tasks (created by an agent at run time); returns the ids actually added.

        A task already present with the same definition is a no-op (agents re-run);
        a different one under an existing id, an unknown dependency or agent, or a cycle
        raises before anything changes.
        """
        agents = set(known_agents) if known_agents is not None else None
        fresh: dict[str, NewTask] = {}
        for task in new:
            existing = self._nodes.get(task.task_id)
            if existing is not None:
                if (existing.agent, existing.priority, existing.input, set(existing.deps)) != (
                    task.agent,
                    task.priority,
                    task.input,
                    set(task.depends_on),
                ):
                    raise PipelineDefinitionError(
                        f"task {task.task_id!r} already exists with another definition (agent "
                        f"{existing.agent!r}, depends on {list(existing.deps)}); an agent re-adding a task "
                        f"must pass the same definition, or derive a new id",
                        task_id=task.task_id,
                    )
                continue
            seen = fresh.get(task.task_id)
            if seen is not None and seen != task:
                raise PipelineDefinitionError(
                    f"task {task.task_id!r} is added twice with different definitions; task ids must be unique",
                    task_id=task.task_id,
                )
            fresh[task.task_id] = task
        for task in fresh.values():
            if agents is not None and task.agent not in agents:
                raise PipelineDefinitionError(
                    f"added task {task.task_id!r} uses unknown agent {task.agent!r}"
                    f"{_close_matches(task.agent, agents)}; known agents: {', '.join(sorted(agents)) or '(none)'}",
                    task_id=task.task_id,
                    agent=task.agent,
                )
            for dep in task.depends_on:
                if dep not in self._nodes and dep not in fresh:
                    choices = [*self._nodes, *fresh]
                    raise PipelineDefinitionError(
                        f"added task {task.task_id!r} depends on unknown task {dep!r}"
                        f"{_close_matches(dep, choices)}; add {dep!r} in the same batch or fix the dependency",
                        task_id=task.task_id,
                        missing=dep,
                    )
        cycle = self._batch_cycle(fresh)
        if cycle is not None:
            raise CycleError(_cycle_message("the added tasks", cycle), cycle=cycle)
        for tid, task in fresh.items():
            self._nodes[tid] = _Node(
                agent=task.agent,
                priority=task.priority,
                input=task.input,
                deps=tuple(dict.fromkeys(task.depends_on)),
                dependents=[],
                status=TaskStatus.PENDING,
            )
        self._link(list(fresh))
        return list(fresh)

    @staticmethod
    def _batch_cycle(fresh: Mapping[str, NewTask]) -> list[str] | None:
        """A cycle among a batch of new tasks (nothing stored can depend on them), or None."""
        if not fresh:
            return None
        graph = _nx().DiGraph()
        graph.add_nodes_from(fresh)
        graph.add_edges_from((tid, d) for tid, t in fresh.items() for d in t.depends_on if d in fresh)
        return _find_cycle(graph)

    def render(self, format: RenderFormat = "mermaid") -> str:
        """The DAG with current statuses (see `render`)."""
        statuses = {tid: node.status for tid, node in self._nodes.items()}
        labels = [(tid, node.agent) for tid, node in self._nodes.items()]
        return render(labels, self.edges(), statuses, format=format)


# -- rendering ------------------------------------------------------------------------------

_COLOURS: dict[TaskStatus | None, tuple[str, str]] = {
    # status: (fill, stroke)
    None: ("#ffffff", "#9e9e9e"),
    TaskStatus.PENDING: ("#eceff1", "#78909c"),
    TaskStatus.RUNNING: ("#bbdefb", "#1565c0"),
    TaskStatus.WAITING: ("#fff9c4", "#f9a825"),
    TaskStatus.COMPLETED: ("#c8e6c9", "#2e7d32"),
    TaskStatus.FAILED: ("#ffcdd2", "#c62828"),
    TaskStatus.SKIPPED: ("#e0e0e0", "#616161"),
    TaskStatus.CANCELLED: ("#d7ccc8", "#4e342e"),
}


def _task_label(item: Any) -> tuple[str, str | None, TaskStatus | None]:
    """(id, agent, status) of a Task, NewTask, TaskRecord, (id, agent) pair or plain id."""
    if isinstance(item, str):
        return item, None, None
    if isinstance(item, tuple):
        return str(item[0]), (str(item[1]) if len(item) > 1 and item[1] is not None else None), None
    tid = getattr(item, "task_id", None) or getattr(item, "id", None)
    if not isinstance(tid, str):
        raise ValidationError(f"cannot render {item!r}: pass tasks as ids, Task, NewTask or TaskRecord objects")
    status = getattr(item, "status", None)
    return tid, getattr(item, "agent", None), status if isinstance(status, TaskStatus) else None


def _status(value: Any) -> TaskStatus | None:
    if value is None or isinstance(value, TaskStatus):
        return value
    try:
        return TaskStatus(str(value).upper())
    except ValueError:
        raise ValidationError(
            f"unknown task status {value!r}; use one of {', '.join(s.value for s in TaskStatus)}"
        ) from None


def render(
    tasks: Iterable[Any] | Mapping[str, Any],
    edges: Iterable[Edge | tuple[str, str]],
    statuses: Mapping[str, TaskStatus | str] | None = None,
    format: RenderFormat = "mermaid",
) -> str:
    """Draw a DAG: a status-coloured Mermaid flowchart, Graphviz dot, or a text view by level.

    `tasks` holds ids, `Task`/`NewTask`/`TaskRecord` objects or (id, agent) pairs (or a
    mapping of them); `edges` are `Edge`s or (task, dependency) pairs; `statuses`
    overrides the status a `TaskRecord` carries.
    """
    if format not in RENDER_FORMATS:
        raise ValidationError(f"unknown render format {format!r}; use one of {', '.join(RENDER_FORMATS)}")
    items = tasks.values() if isinstance(tasks, Mapping) else tasks
    nodes: dict[str, tuple[str | None, TaskStatus | None]] = {}
    for item in items:
        tid, agent, status = _task_label(item)
        nodes[tid] = (agent, status)
    pairs: list[tuple[str, str]] = []
    for edge in edges:
        tid, dep = (edge.task_id, edge.depends_on) if isinstance(edge, Edge) else (edge[0], edge[1])
        pairs.append((tid, dep))
        for name in (dep, tid):
            nodes.setdefault(name, (None, None))
    for tid, value in (statuses or {}).items():
        agent = nodes.get(tid, (None, None))[0]
        nodes[tid] = (agent, _status(value))
    if format == "mermaid":
        return _mermaid(nodes, pairs)
    if format == "dot":
        return _dot(nodes, pairs)
    return _text(nodes, pairs)


def _mermaid(nodes: Mapping[str, tuple[str | None, TaskStatus | None]], pairs: Sequence[tuple[str, str]]) -> str:
    # Task ids may hold '.', ':' or '@', which Mermaid ids cannot: nodes get positional ids.
    key = {tid: f"n{i}" for i, tid in enumerate(nodes)}
    lines = ["flowchart TD"]
    for tid, (agent, status) in nodes.items():
        label = tid.replace('"', "#quot;")
        if agent:
            label += "<br/><small>" + agent.replace('"', "#quot;") + "</small>"
        if status is not None:
            label += f"<br/>{status.value}"
        cls = status.value.lower() if status is not None else "unknown"
        lines.append(f'    {key[tid]}["{label}"]:::{cls}')
    for tid, dep in pairs:
        lines.append(f"    {key[dep]} --> {key[tid]}")
    for status, (fill, stroke) in _COLOURS.items():
        cls = status.value.lower() if status is not None else "unknown"
        lines.append(f"    classDef {cls} fill:{fill},stroke:{stroke},color:#000")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot(nodes: Mapping[str, tuple[str | None, TaskStatus | None]], pairs: Sequence[tuple[str, str]]) -> str:
    lines = [
        "digraph pipeline {",
        "    rankdir=LR;",
        '    node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    for tid, (agent, status) in nodes.items():
        label = tid + (f"\n{agent}" if agent else "") + (f"\n{status.value}" if status is not None else "")
        fill, stroke = _COLOURS[status]
        lines.append(
            f"    {_dot_quote(tid)} [label={_dot_quote(label)}, fillcolor={_dot_quote(fill)}, "
            f"color={_dot_quote(stroke)}];"
        )
    for tid, dep in pairs:
        lines.append(f"    {_dot_quote(dep)} -> {_dot_quote(tid)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _text(nodes: Mapping[str, tuple[str | None, TaskStatus | None]], pairs: Sequence[tuple[str, str]]) -> str:
    """Tasks grouped by level (longest dependency path from a root), each with its deps."""
    deps: dict[str, list[str]] = {tid: [] for tid in nodes}
    children: dict[str, list[str]] = {tid: [] for tid in nodes}
    for tid, dep in pairs:
        deps[tid].append(dep)
        children[dep].append(tid)
    indeg = {tid: len(d) for tid, d in deps.items()}
    level = {tid: 0 for tid in nodes}
    queue = deque(tid for tid, n in indeg.items() if n == 0)
    while queue:
        tid = queue.popleft()
        for child in children[tid]:
            level[child] = max(level[child], level[tid] + 1)
            indeg[child] -= 1
            if indeg[child] == 0:
                queue.append(child)
    by_level: dict[int, list[str]] = {}
    in_cycle: list[str] = []
    for tid in nodes:
        (in_cycle if indeg[tid] > 0 else by_level.setdefault(level[tid], [])).append(tid)

    def line(tid: str) -> str:
        agent, status = nodes[tid]
        text = f"  {tid}"
        if status is not None:
            text += f" [{status.value}]"
        if agent:
            text += f" ({agent})"
        if deps[tid]:
            text += f" <- {', '.join(deps[tid])}"
        return text

    out: list[str] = []
    for lvl in sorted(by_level):
        out.append(f"level {lvl}:")
        out.extend(line(tid) for tid in sorted(by_level[lvl]))
    if in_cycle:
        out.append("in a cycle:")
        out.extend(line(tid) for tid in sorted(in_cycle))
    return "\n".join(out) + "\n"
