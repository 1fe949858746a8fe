"""`DagState`: the scheduler's view of one session's DAG at run time.

Statuses, the ready set, skip closures and tasks added by agents. Its work is linear
in tasks + edges: each completion touches only the finished task's dependents, never
the whole graph.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import PipelineDefinitionError, TaskNotFoundError
from orchestrator.graph.render import RenderFormat, render
from orchestrator.store.records import Edge, NewTask, TaskRecord, TaskStatus
from orchestrator.store.rules import check_graph, close_matches

__all__ = ["DagState"]


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
        check_graph(((tid, tuple(ds)) for tid, ds in deps.items()), where="the session's task graph")
        for tid, rec in tasks.items():
            state._nodes[tid] = _Node(
                agent=rec.agent,
                priority=rec.priority,
                input=rec.input,
                deps=tuple(deps[tid]),
                dependents=[],
                status=rec.status,
            )
        state._link(list(state._nodes))
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

    def _maybe_queue(self, tid: str, node: _Node) -> None:
        if node.status is TaskStatus.PENDING and node.unmet == 0 and not node.queued:
            node.queued = True
            heapq.heappush(self._heap, (node.priority, tid))

    def _node(self, task_id: str) -> _Node:
        try:
            return self._nodes[task_id]
        except KeyError:
            raise TaskNotFoundError(
                f"the session's DAG has no task {task_id!r}{close_matches(task_id, self._nodes)}",
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

    def priority_of(self, task_id: str) -> int:
        return self._node(task_id).priority

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
        """Tasks in a final status (COMPLETED, FAILED, SKIPPED, CANCELLED): when all are, the run ends."""
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
                    f"{close_matches(task.agent, agents)}; known agents: {', '.join(sorted(agents)) or '(none)'}",
                    task_id=task.task_id,
                    agent=task.agent,
                )
        check_graph(((t.task_id, t.depends_on) for t in fresh.values()), where="the added tasks",
                    known=self._nodes)
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

    def render(self, format: RenderFormat = "mermaid") -> str:
        """The DAG with current statuses (see `render`)."""
        statuses = {tid: node.status for tid, node in self._nodes.items()}
        labels = [(tid, node.agent) for tid, node in self._nodes.items()]
        return render(labels, self.edges(), statuses, format=format)
