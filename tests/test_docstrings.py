"""The code shown in the package's docstrings is code: `>>>` examples run as doctests, and
indented snippets (an assignment, a `with`, a class, a decorator, a call) compile.

The snippets are fragments that name things from their context (`store`, `plan`), so
they are compiled, not run; the README's and docs' blocks are run (tests/test_docs.py).
"""

from __future__ import annotations

import ast
import doctest
import importlib
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_CODE_START = re.compile(r"^(\w+ = |async with |with |class |@\w|await |(\w+\.)*\w+\()")


def _modules() -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for package, importable in (("orchestrator", "orchestrator"), ("agents", "orchestrator.agents")):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT / package)
            if rel.parts[0] == "agents" and package == "orchestrator":
                continue  # the symlink to agents/, read once as agents/
            parts = [importable, *rel.with_suffix("").parts]
            if parts[-1] in ("__init__", "__main__"):
                parts.pop()
            if rel.name != "__main__.py":
                found.append((".".join(parts), path))
    return found


MODULES = _modules()


def _snippets() -> list[tuple[str, str]]:
    """(path:line, snippet) for each indented run of lines in a docstring that opens like code."""
    found: list[tuple[str, str]] = []
    for _, path in MODULES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            lines = doc.splitlines()
            i = 0
            while i < len(lines):
                if not lines[i].startswith("    "):
                    i += 1
                    continue
                j = i
                while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                    j += 1
                block = textwrap.dedent("\n".join(lines[i:j])).strip("\n")
                if _CODE_START.match(block) and not block.startswith(">>>"):
                    found.append((f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}", block))
                i = j
    return found


SNIPPETS = _snippets()


@pytest.mark.parametrize(("where", "snippet"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_a_docstring_snippet_compiles(where: str, snippet: str) -> None:
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    try:
        compile(snippet, where, "exec", flags=flags)
    except SyntaxError as exc:
        pytest.fail(f"{where}: the docstring's example is not Python: {exc}\n{snippet}")


def test_docstrings_show_code() -> None:
    assert len(SNIPPETS) >= 5


def test_doctests_pass() -> None:
    """Every `>>>` example in the package's docstrings runs and prints what it shows."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for module, _ in MODULES:
        for test in finder.find(importlib.import_module(module)):
            runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted >= 2 and results.failed == 0, f"{results.failed} doctest example(s) failed (above)"
