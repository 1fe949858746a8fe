"""Imports point down (cli -> recovery -> scheduler -> graph/store -> agents), and each
third-party library stays behind the one module that owns it (STYLE.md §2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _modules() -> dict[str, set[str]]:
    """Module path (relative, posix) -> the top-level-qualified names it imports."""
    found: dict[str, set[str]] = {}
    for package in ("orchestrator", "agents"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            names: set[str] = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module)
            found[path.relative_to(ROOT).as_posix()] = names
    return found


MODULES = _modules()


def _importers(prefix: str) -> set[str]:
    return {m for m, names in MODULES.items() if any(n == prefix or n.startswith(prefix + ".") for n in names)}


def test_the_tree_was_found() -> None:
    assert "orchestrator/scheduler/__init__.py" in MODULES and "agents/spec.py" in MODULES


def test_only_the_dynamodb_backend_imports_pynamodb() -> None:
    offenders = {m for m in _importers("pynamodb") if not m.startswith("orchestrator/store/dynamodb")}
    assert offenders == set()


def test_agents_imports_nothing_from_orchestrator() -> None:
    assert {m for m in _importers("orchestrator") if m.startswith("agents/")} == set()


def test_only_telemetry_imports_opentelemetry() -> None:
    assert _importers("opentelemetry") <= {"orchestrator/telemetry.py"}


@pytest.mark.parametrize("library", ["typer", "rich", "click"])
def test_only_the_cli_imports_terminal_libraries(library: str) -> None:
    assert {m for m in _importers(library) if not m.startswith("orchestrator/cli")} == set()


def test_errors_module_imports_only_the_stdlib_and_agent_errors() -> None:
    names = MODULES["orchestrator/errors.py"]
    assert {n for n in names if n.split(".")[0] in ("orchestrator", "agents")} <= {"agents.errors"}


# Layer -> the layers above it, which it must never import.
_ABOVE = {
    "orchestrator/store/": ["orchestrator.graph", "orchestrator.scheduler", "orchestrator.recovery",
                            "orchestrator.cli", "orchestrator.state", "orchestrator.fork"],
    "orchestrator/graph.py": ["orchestrator.scheduler", "orchestrator.recovery", "orchestrator.cli"],
    "orchestrator/scheduler/": ["orchestrator.recovery", "orchestrator.cli", "orchestrator.fork"],
    "orchestrator/recovery.py": ["orchestrator.cli"],
    "orchestrator/state/": ["orchestrator.scheduler", "orchestrator.recovery", "orchestrator.cli"],
}


@pytest.mark.parametrize("layer", sorted(_ABOVE))
def test_imports_point_down(layer: str) -> None:
    offenders = {
        (m, n)
        for m, names in MODULES.items()
        if m.startswith(layer)
        for n in names
        if any(n == up or n.startswith(up + ".") for up in _ABOVE[layer])
    }
    assert offenders == set()


def test_the_sdk_never_scans_dynamodb() -> None:
    for path in (ROOT / "orchestrator").rglob("*.py"):
        if "testing" in path.parts:
            continue  # the contract suite asserts that no Scan happened
        text = path.read_text(encoding="utf-8")
        assert ".scan(" not in text and "\"Scan\"" not in text, path
