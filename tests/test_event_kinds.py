"""The kinds of event the history holds are listed once (`EVENT_KINDS`), and the code,
docs/design.md and `orchestrator events --help` agree with that list exactly.

The code is read with `ast`: every `Event(...)`, `Note(...)`, `<draft>.note(...)`, `<lifecycle>._emit(...)` and
`<buffer>.events.add(...)` whose kind is a string literal is a kind the SDK records.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from cli_helpers import cli

from orchestrator.store import EVENT_KINDS

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for folder in ("orchestrator", "agents") for p in (ROOT / folder).rglob("*.py")
           if "testing" not in p.relative_to(ROOT).parts]


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _kind_of(call: ast.Call) -> str | None:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    keyword = next((k.value for k in call.keywords if k.arg == "kind"), None)
    if name == "Event":
        return _literal(keyword) or (_literal(call.args[1]) if len(call.args) > 1 else None)
    if name == "Note":
        return _literal(keyword) or (_literal(call.args[0]) if call.args else None)
    owner = func.value if isinstance(func, ast.Attribute) else None
    is_buffer = isinstance(owner, ast.Attribute) and owner.attr in ("events", "_events") and name == "add"
    if (name in ("note", "_emit") or is_buffer) and call.args:
        return _literal(call.args[0])
    return None


def kinds_in_code() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and (kind := _kind_of(node)) is not None:
                found.setdefault(kind, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_kind_the_code_records_is_listed_and_every_listed_kind_is_recorded() -> None:
    found = kinds_in_code()
    assert set(found) == set(EVENT_KINDS), (
        f"recorded but not in EVENT_KINDS: {sorted(set(found) - set(EVENT_KINDS))} "
        f"({ {k: found[k] for k in set(found) - set(EVENT_KINDS)} }); listed but never recorded: "
        f"{sorted(set(EVENT_KINDS) - set(found))}")


def test_the_design_notes_list_exactly_the_event_kinds() -> None:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## The event history", 1)[1].split("\n## ", 1)[0]
    table = section.split("| kind | recorded by | says |", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)
    assert listed == list(EVENT_KINDS)


def test_events_help_lists_every_kind_with_what_it_says(tmp_path: Path) -> None:
    shown = cli("events", "--help", store=None, tmp=tmp_path, env={"COLUMNS": "400"})
    assert shown.code == 0, shown.err
    for kind in EVENT_KINDS:
        assert re.search(rf"\b{kind}: ", shown.out), f"{kind} is not in `orchestrator events --help`"
