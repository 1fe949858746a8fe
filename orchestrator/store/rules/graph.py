"""The one check of a task graph: unique ids, known dependencies, no cycle.

`Pipeline.validate`, `DagState` (loading a session, tasks added at run time) and both
backends' `create_session`/`add_tasks` call `check_graph`, so a bad graph gets the
same error and message wherever it is caught. O(tasks + edges), and it names the
cycle it finds.
"""

from __future__ import annotations

import difflib
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from orchestrator.errors import CycleError, PipelineDefinitionError

__all__ = ["check_graph", "close_matches", "find_cycle"]


def close_matches(word: str, choices: Iterable[str]) -> str:
    """' (did you mean ...?)' for a mistyped id, or ''."""
    found = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(f) for f in found)}?)" if found else ""


def check_graph(
    nodes: Iterable[tuple[str, Sequence[str]]],
    *,
    where: str,
    known: Collection[str] | Callable[[str], bool] = (),
    **ids: Any,
) -> None:
    """Raise for a duplicate id, a dependency neither in `nodes` nor `known`, or a cycle.

    `nodes` are (task id, its dependencies). Tasks in `known` already exist and cannot
    depend on the new ones, so a cycle can only close among `nodes`. `ids` (session_id,
    pipeline) go onto the error.
    """
    deps: dict[str, Sequence[str]] = {}
    for tid, depends_on in nodes:
        if tid in deps:
            raise PipelineDefinitionError.duplicate_task(where, tid, **ids)
        deps[tid] = depends_on
    is_known = known if callable(known) else known.__contains__
    for tid, depends_on in deps.items():
        for dep in depends_on:
            if dep not in deps and not is_known(dep):
                choices = [*deps, *known] if not callable(known) else list(deps)
                raise PipelineDefinitionError.unknown_dependency(where, tid, dep, close_matches(dep, choices), **ids)
    cycle = find_cycle(deps)
    if cycle is not None:
        raise CycleError.among(where, cycle, **ids)


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle among the keys of `deps` (task -> what it depends on), smallest id first; or None.

    Kahn's algorithm decides in O(tasks + edges); only when it leaves tasks behind is
    networkx imported (it costs ~0.4 s of a CLI start) to name a cycle among them.
    Edges to ids outside `deps` are ignored: they cannot close a cycle.
    """
    unmet = {tid: sum(1 for d in set(ds) if d in deps) for tid, ds in deps.items()}
    dependents: dict[str, list[str]] = {tid: [] for tid in deps}
    for tid, ds in deps.items():
        for d in set(ds):
            if d in deps:
                dependents[d].append(tid)
    queue = deque(tid for tid, n in unmet.items() if n == 0)
    while queue:
        for child in dependents[queue.popleft()]:
            unmet[child] -= 1
            if unmet[child] == 0:
                queue.append(child)
    left = sorted(tid for tid, n in unmet.items() if n > 0)
    if not left:
        return None
    import networkx

    graph = networkx.DiGraph()
    graph.add_nodes_from(left)
    graph.add_edges_from((tid, d) for tid in left for d in deps[tid] if unmet.get(d, 0) > 0)
    cycle = [str(edge[0]) for edge in networkx.find_cycle(graph)]
    start = cycle.index(min(cycle))
    return cycle[start:] + cycle[:start]
