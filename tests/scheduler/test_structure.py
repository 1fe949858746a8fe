"""The scheduler package's shape: no import cycle (type-only imports included), a pure core,
collaborators that never import the runner, small modules, time from the injected clock."""

from __future__ import annotations

import ast
from pathlib import Path

import orchestrator.scheduler

PACKAGE = "orchestrator.scheduler"
ROOT = Path(orchestrator.scheduler.__file__).resolve().parent
MODULES = sorted(p.stem for p in ROOT.glob("*.py"))

# The pure core: values and decisions only.
CORE = {"plan", "tasks", "step", "messages"}
# Nothing that sleeps, reads a clock, writes, or spans: the core must not import these.
IO_MODULES = ("anyio", "asyncio", "time", "threading", "subprocess", "orchestrator.clock", "orchestrator.events",
              "orchestrator.metrics", "orchestrator.telemetry", "orchestrator.store.sqlite", "orchestrator.store.dynamodb")


def _imports(module: str) -> set[str]:
    """Every absolute module name `module` imports, anywhere in the file (TYPE_CHECKING blocks too).

    `from X import name` yields `X` and `X.name` (the name may be a submodule).
    """
    path = ROOT / f"{module}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: level 1 is this package, 2 its parent...
                base = PACKAGE.rsplit(".", node.level - 1)[0] if node.level > 1 else PACKAGE
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def _package_graph() -> dict[str, set[str]]:
    """Module -> the modules of this package it imports ("__init__" stands for the package itself)."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        edges = set()
        for name in _imports(module):
            if name == PACKAGE:
                edges.add("__init__")
            elif name.startswith(PACKAGE + "."):
                target = name[len(PACKAGE) + 1:].split(".")[0]
                if target in MODULES:
                    edges.add(target)
                else:
                    edges.add("__init__")  # `from orchestrator.scheduler import run`: a name of the package
        edges.discard(module)
        graph[module] = edges
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_dag() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_graph_sees_type_only_imports() -> None:
    graph = _package_graph()
    assert "runner" in graph["entry"] and "plan" in graph["runner"]
    assert set(MODULES) >= {"__init__", "plan", "runner", "lease_keeper", "attempt", "context", "options", "entry"}


def test_no_import_cycle_among_the_scheduler_modules_type_only_imports_included() -> None:
    cycle = _find_cycle(_package_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_the_pure_core_imports_only_itself_and_nothing_that_does_io() -> None:
    for module in sorted(CORE):
        names = _imports(module)
        inside = {n[len(PACKAGE) + 1:].split(".")[0] for n in names if n.startswith(PACKAGE + ".")}
        assert inside <= CORE, (module, inside - CORE)
        offenders = {n for n in names if any(n == io or n.startswith(io + ".") for io in IO_MODULES)}
        assert offenders == set(), (module, offenders)


def test_only_the_entry_points_import_the_runner() -> None:
    importers = {m for m, edges in _package_graph().items() if "runner" in edges}
    assert importers <= {"entry", "__init__"}


def test_no_scheduler_module_is_over_500_lines() -> None:
    sizes = {m: len((ROOT / f"{m}.py").read_text(encoding="utf-8").splitlines()) for m in MODULES}
    assert {m: n for m, n in sizes.items() if n > 500} == {}


def test_scheduler_modules_read_time_only_from_the_injected_clock() -> None:
    for module in MODULES:
        assert "time" not in _imports(module), module


def test_the_package_still_exports_its_entry_points_and_values() -> None:
    assert set(orchestrator.scheduler.__all__) >= {
        "RunOptions", "RunResult", "SessionRunner", "WorkerLimits", "default_worker_id", "execute", "resume",
        "resume_sync", "run", "run_sync", "submit", "submit_sync",
    }
    for name in orchestrator.scheduler.__all__:
        assert hasattr(orchestrator.scheduler, name), name
