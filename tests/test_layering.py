"""Imports point down the layer map that opens `orchestrator/__init__.py`, and each
third-party library stays behind the one module that owns it (STYLE.md §1, §2).

The map in that docstring is the only copy: this file names no layer and no module of
it. When a module moves, update the map; a module the map does not cover, a map entry
that names nothing, or an import that points up (under `if TYPE_CHECKING:` or inside a
function too) fails here.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestrator", "agents")  # folders; agents/ is installed as orchestrator.agents
MAP_FILE = "orchestrator/__init__.py"


# -- the map ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the map: `path` is a module (`orchestrator/graph.py`) or a folder (`orchestrator/cli/`)."""

    layer: str
    rank: int  # 0 is the top layer
    path: str

    def covers(self, module: str) -> bool:
        return module.startswith(self.path) if self.path.endswith("/") else module == self.path


# `    layer   path   what it holds` starts a layer; `            path   ...` continues it.
_MAP_LINE = re.compile(r"^ {4}(?:(?P<layer>[a-z_]+) +| +)(?P<path>(?:orchestrator|agents)/\S*)")


def parse_layer_map(doc: str) -> list[Entry]:
    entries: list[Entry] = []
    layers: list[str] = []
    for line in doc.splitlines():
        m = _MAP_LINE.match(line)
        if m is None:
            continue
        if m["layer"]:
            if m["layer"] in layers:
                raise ValueError(f"layer {m['layer']!r} starts twice in the map: {line.strip()!r}")
            layers.append(m["layer"])
        elif not layers:
            raise ValueError(f"map line before any layer name: {line.strip()!r}")
        entries.append(Entry(layers[-1], len(layers) - 1, m["path"]))
    return entries


def layer_of(module: str, entries: list[Entry]) -> Entry | None:
    """The most specific entry covering `module` (a folder entry may hold a more specific one)."""
    covering = [e for e in entries if e.covers(module)]
    return max(covering, key=lambda e: len(e.path)) if covering else None


# -- the modules and what they import ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Import:
    line: int
    name: str  # as written, absolute: `orchestrator.store.records`, `pynamodb.models`
    candidate: str  # what it may name: for `from a import b`, `a.b` (a module, or a name in `a`)


def dotted(module: str) -> str:
    """`orchestrator/store/records.py` -> `orchestrator.store.records`; a package is its `__init__`."""
    parts = module.removesuffix(".py").split("/")
    if parts[0] == "agents":  # the folder orchestrator/agents links to
        parts.insert(0, "orchestrator")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(module: str, source: str) -> list[Import]:
    """Every import in the module, wherever it is: top level, `if TYPE_CHECKING:`, a function body."""
    tree = ast.parse(source, filename=module)
    package = dotted(module) if module.endswith("/__init__.py") else dotted(module).rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(node.lineno, alias.name, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.extend(Import(node.lineno, base, f"{base}.{alias.name}") for alias in node.names)
    return found


def _modules() -> dict[str, list[Import]]:
    """Module path (relative, posix) -> its imports."""
    found: dict[str, list[Import]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = path.relative_to(ROOT).as_posix()
            if module.startswith("orchestrator/agents/"):
                continue  # the symlink to agents/ (followed by rglob on newer Pythons): read once, as agents/
            found[module] = imports_of(module, path.read_text(encoding="utf-8"))
    return found


MODULES = _modules()
LAYER_MAP = parse_layer_map(ast.get_docstring(ast.parse((ROOT / MAP_FILE).read_text(encoding="utf-8"))) or "")


def resolve(name: str, modules: dict[str, str]) -> str | None:
    """The module path an import name lands in: the longest known module prefix of `name`."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        found = modules.get(".".join(parts[:n]))
        if found is not None:
            return found
    return None


def upward_imports(modules: dict[str, list[Import]], entries: list[Entry]) -> list[str]:
    """`module:line imports target` for every import of a module in a layer above the importer's."""
    by_name = {dotted(m): m for m in modules}
    offenders = []
    for module, imports in modules.items():
        here = layer_of(module, entries)
        if here is None:
            continue  # reported by test_every_module_is_in_the_layer_map
        for imp in imports:
            target = resolve(imp.candidate, by_name)
            there = layer_of(target, entries) if target is not None else None
            if there is not None and there.rank < here.rank:
                offenders.append(f"{module}:{imp.line} imports {imp.candidate} "
                                 f"({here.layer} must not import {there.layer}, a layer above it)")
    return offenders


def _importers(prefix: str) -> set[str]:
    """Modules importing `prefix` or anything under it (third-party names included)."""
    return {m for m, imports in MODULES.items()
            if any(i.name == prefix or i.name.startswith(prefix + ".") for i in imports)}


# -- the checks on this tree ---------------------------------------------------------------------


def test_the_tree_and_the_map_were_found() -> None:
    assert MAP_FILE in MODULES and "agents/__init__.py" in MODULES
    assert len({e.layer for e in LAYER_MAP}) >= 3, f"no layer map parsed from the docstring of {MAP_FILE}"


def test_every_module_is_in_the_layer_map() -> None:
    missing = sorted(m for m in MODULES if layer_of(m, LAYER_MAP) is None)
    assert missing == [], f"add these modules to the layer map in {MAP_FILE}: {missing}"


def test_every_map_entry_names_an_existing_module_or_folder() -> None:
    stale = [e.path for e in LAYER_MAP if not any(e.covers(m) for m in MODULES)]
    assert stale == [], f"the layer map in {MAP_FILE} names modules that do not exist: {stale}"


def test_no_import_points_up_the_layer_map() -> None:
    assert upward_imports(MODULES, LAYER_MAP) == []


def test_every_import_of_the_sdk_lands_in_a_module() -> None:
    by_name = {dotted(m): m for m in MODULES}
    dangling = [f"{m}:{i.line} {i.candidate}" for m, imports in MODULES.items() for i in imports
                if i.name.split(".")[0] in PACKAGES and resolve(i.candidate, by_name) is None]
    assert dangling == []


def may_import_pynamodb(module: str) -> bool:
    """The DynamoDB backend: `store/dynamodb.py`, `store/dynamodb_*.py`, or the `store/dynamodb/` folder."""
    return module.startswith("orchestrator/store/dynamodb/") or fnmatch(module, "orchestrator/store/dynamodb*.py")


def test_only_the_dynamodb_backend_imports_pynamodb() -> None:
    assert {m for m in _importers("pynamodb") if not may_import_pynamodb(m)} == set()


def test_agents_imports_nothing_from_orchestrator() -> None:
    outside = {m for m, imports in MODULES.items() if m.startswith("agents/")
               and any(i.name.split(".")[0] == "orchestrator" and not i.name.startswith("orchestrator.agents")
                       for i in imports)}
    assert outside == set()


def test_nothing_imports_a_top_level_agents_package() -> None:
    """`agents` is the OpenAI Agents SDK's import name; ours is `orchestrator.agents`."""
    assert _importers("agents") == set()


def test_only_telemetry_imports_opentelemetry() -> None:
    assert _importers("opentelemetry") <= {"orchestrator/telemetry.py"}


@pytest.mark.parametrize("library", ["typer", "rich", "click"])
def test_only_the_cli_imports_terminal_libraries(library: str) -> None:
    assert {m for m in _importers(library) if not m.startswith("orchestrator/cli/")} == set()


@pytest.mark.parametrize("library", ["starlette", "uvicorn", "httpx"])
def test_only_the_ui_imports_web_libraries(library: str) -> None:
    """The `ui` extra is optional: nothing else may need it."""
    assert {m for m in _importers(library) if not m.startswith("orchestrator/ui/")} == set()


def test_the_cli_imports_the_ui_only_inside_the_command() -> None:
    """`orchestrator --help` and every other command work without the `ui` extra installed."""
    tree = ast.parse((ROOT / "orchestrator/cli/dashboard.py").read_text(encoding="utf-8"))
    top_level = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert not any(m and m.startswith("orchestrator.ui") for m in top_level)
    assert {m for m in _importers("orchestrator.ui") if m.startswith("orchestrator/cli/")} == {
        "orchestrator/cli/dashboard.py"}


def test_errors_module_imports_only_the_stdlib_and_agent_errors() -> None:
    names = {i.name for i in MODULES["orchestrator/errors.py"]}
    assert {n for n in names if n.split(".")[0] in PACKAGES} <= {"orchestrator.agents.errors"}


def test_the_sdk_never_scans_dynamodb() -> None:
    for path in (ROOT / "orchestrator").rglob("*.py"):
        if "testing" in path.parts:
            continue  # the contract suite asserts that no Scan happened
        text = path.read_text(encoding="utf-8")
        assert ".scan(" not in text and "\"Scan\"" not in text, path


# -- the checker itself, on a made-up tree -------------------------------------------------------

_TOY_MAP = """Layout:

    top          orchestrator/cli/      commands
                 orchestrator/app.py    entry point
    middle       orchestrator/engine/   the engine
                 orchestrator/engine/special.py  a more specific entry
    low          orchestrator/base.py   basics

Prose after the map: orchestrator/not_an_entry.py is not parsed.
"""


def test_the_map_parser_reads_layers_continuations_and_folders() -> None:
    entries = parse_layer_map(_TOY_MAP)
    assert [(e.layer, e.rank, e.path) for e in entries] == [
        ("top", 0, "orchestrator/cli/"), ("top", 0, "orchestrator/app.py"),
        ("middle", 1, "orchestrator/engine/"), ("middle", 1, "orchestrator/engine/special.py"),
        ("low", 2, "orchestrator/base.py"),
    ]
    assert layer_of("orchestrator/cli/sub/deep.py", entries) == entries[0]
    assert layer_of("orchestrator/engine/special.py", entries) == entries[3]
    assert layer_of("orchestrator/apps.py", entries) is None
    with pytest.raises(ValueError, match="twice"):
        parse_layer_map(_TOY_MAP + "\n    top          orchestrator/again.py\n")


def test_the_checker_sees_type_checking_function_local_and_relative_imports() -> None:
    entries = parse_layer_map(_TOY_MAP)
    toy = {
        "orchestrator/base.py": """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from orchestrator.engine import Engine
def late() -> None:
    import orchestrator.app
""",
        "orchestrator/engine/__init__.py": "from . import special\nfrom .special import thing\n",
        "orchestrator/engine/special.py": "from orchestrator.base import late\nfrom ..cli import run\n",
        "orchestrator/cli/__init__.py": "def run() -> None: ...\n",
        "orchestrator/app.py": "from orchestrator.cli import run\nfrom orchestrator import base\n",
    }
    modules = {m: imports_of(m, source) for m, source in toy.items()}
    assert sorted(upward_imports(modules, entries)) == [
        "orchestrator/base.py:4 imports orchestrator.engine.Engine (low must not import middle, a layer above it)",
        "orchestrator/base.py:6 imports orchestrator.app (low must not import top, a layer above it)",
        "orchestrator/engine/special.py:2 imports orchestrator.cli.run (middle must not import top, a layer above it)",
    ]


@pytest.mark.parametrize(("module", "allowed"), [
    ("orchestrator/store/dynamodb.py", True),
    ("orchestrator/store/dynamodb_models.py", True),
    ("orchestrator/store/dynamodb/models.py", True),
    ("orchestrator/store/dynamodb/__init__.py", True),
    ("orchestrator/store/sqlite/db.py", False),
    ("orchestrator/store/protocol.py", False),
    ("orchestrator/cli/admin.py", False),
])
def test_the_pynamodb_rule_accepts_the_dynamodb_backend_as_files_or_a_folder(module: str, allowed: bool) -> None:
    assert may_import_pynamodb(module) is allowed
