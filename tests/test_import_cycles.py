"""No import cycle among the modules of `orchestrator/` and `agents/`, type-only imports included.

Every `import` and `from ... import` counts: at module level, under `if TYPE_CHECKING:`,
and inside functions. `from package import name` points at the submodule `name` when
there is one, else at the package's `__init__`. The implicit import of a module's
parent packages is not counted (every module would otherwise "import" the top-level
`__init__` that re-exports it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx

ROOT = Path(__file__).resolve().parent.parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "agents":  # installed as orchestrator.agents (orchestrator/agents links to it)
        parts.insert(0, "orchestrator")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> networkx.DiGraph:
    files = {_module_name(p): p for pkg in ("orchestrator", "agents") for p in (ROOT / pkg).rglob("*.py")
             if not p.relative_to(ROOT).as_posix().startswith("orchestrator/agents/")}
    graph = networkx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for imported in targets:
                target = imported
                while target and target not in files:  # `import a.b.c` of a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph.add_edge(name, target)
    return graph


GRAPH = _graph()


def test_the_import_graph_covers_the_packages() -> None:
    assert {"orchestrator.store.rules.claims", "orchestrator.graph.dag", "orchestrator.agents.spec"} <= set(GRAPH)
    assert GRAPH.has_edge("orchestrator.store.sqlite.store", "orchestrator.store.rules")


def test_there_is_no_import_cycle() -> None:
    cycles = [c for c in networkx.simple_cycles(GRAPH) if len(c) > 0]
    assert cycles == [], f"import cycles: {[' -> '.join([*c, c[0]]) for c in cycles[:5]]}"
