"""The one check of a task graph: unique ids, known dependencies, no cycle.

`Pipeline.validate`, `DagState.add_tasks`, `add_task` at run time and both backends'
`create_session`/`add_tasks` call `check_graph`, so a bad graph gets the same error
and message wherever it is caught. O(tasks + edges), iterative (a 10,000-task chain
does not reach the recursion limit), and it names the cycle it finds.
"""

from __future__ import annotations

import difflib
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
                raise PipelineDefinitionError.unknown_dependency(where, tid, dep, close_matches(dep, deps), **ids)
    cycle = find_cycle(deps)
    if cycle is not None:
        raise CycleError.among(where, cycle, **ids)


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle among the keys of `deps` (task -> what it depends on), smallest id first; or None.

    Iterative depth-first search with white/grey/black marks; edges to ids outside
    `deps` are ignored (they cannot close a cycle).
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(deps):
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            node, i = stack.pop()
            if i == 0:
                state[node] = 1
                path.append(node)
            children = deps[node]
            # Skip edges out of the batch and finished nodes without re-pushing per edge.
            while i < len(children) and (children[i] not in deps or state.get(children[i]) == 2):
                i += 1
            if i < len(children):
                stack.append((node, i + 1))
                nxt = children[i]
                if state.get(nxt) == 1:
                    cycle = path[path.index(nxt):]
                    start = cycle.index(min(cycle))
                    return cycle[start:] + cycle[:start]
                stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
    return None
