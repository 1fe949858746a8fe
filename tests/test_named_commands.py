"""Every `orchestrator COMMAND --option` that an error message or docstring tells a user
to run exists in the CLI (STYLE.md §7: the message names the next action, so that
action must work).

Collected with ast from every string literal under `orchestrator/` and `agents/`
(f-strings with their placeholders as `{}`), wherever a backticked span starts with
`orchestrator `.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from typing import Any

import pytest
import typer.main

from orchestrator.cli import app

ROOT = Path(__file__).resolve().parent.parent

_MENTION = re.compile(r"`orchestrator\s+([^`]*)`")


@dataclass(frozen=True, slots=True)
class Mention:
    where: str  # path:line
    text: str  # what follows `orchestrator ` inside the backticks

    @property
    def tokens(self) -> list[str]:
        return self.text.split()


def _literal_text(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's with `{}` for each placeholder."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) and isinstance(part.value, str) else "{}"
                       for part in node.values)
    return None


def mentions_in(source: str, module: str) -> list[Mention]:
    tree = ast.parse(source, filename=module)
    inside_fstrings = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    found: list[Mention] = []
    for node in ast.walk(tree):
        text = None if id(node) in inside_fstrings else _literal_text(node)
        if text is not None:
            found.extend(Mention(f"{module}:{getattr(node, 'lineno', 0)}", m[1]) for m in _MENTION.finditer(text))
    return found


def _mentions() -> list[Mention]:
    found: list[Mention] = []
    for package in ("orchestrator", "agents"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = path.relative_to(ROOT).as_posix()
            if module.startswith("orchestrator/agents/"):
                continue  # the symlink to agents/, read once as agents/
            found.extend(mentions_in(path.read_text(encoding="utf-8"), module))
    return found


MENTIONS = _mentions()
# The click group typer builds (typer may ship its own click: duck-typed, not isinstance-checked).
CLI: Any = typer.main.get_command(app)
COMMANDS: dict[str, Any] = CLI.commands


HELP_OPTIONS: list[str] = CLI.context_settings.get("help_option_names", ["--help"])


def _opts(command: Any) -> dict[str, Any]:
    """Option name (`--app`, `-a`, `--no-x`, `--help`) -> its parameter (None for help)."""
    found: dict[str, Any] = dict.fromkeys(HELP_OPTIONS)
    found.update({opt: p for p in command.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")})
    return found


def parse(mention: Mention) -> tuple[str | None, list[str]]:
    """(the command named, the unknown options) of a mention; command None when only root options."""
    root = _opts(CLI)
    tokens = mention.tokens
    unknown: list[str] = []
    i = 0
    while i < len(tokens) and tokens[i].startswith("-"):
        name = tokens[i].split("=")[0]
        option = root.get(name)
        if name not in root:
            unknown.append(tokens[i])
        elif option is not None and "=" not in tokens[i] and not option.is_flag:
            i += 1  # its value
        i += 1
    if i == len(tokens):
        return None, unknown
    name = tokens[i]
    command = COMMANDS.get(name)
    sub = getattr(command, "commands", None)  # a group (`limits`, `schedule`): its subcommand's options
    if sub is not None and i + 1 < len(tokens) and tokens[i + 1] in sub:
        i += 1
        command = sub[tokens[i]]
    if command is not None:
        known = {**root, **_opts(command)}
        unknown += [t for t in tokens[i + 1:] if t.startswith("-") and t.split("=")[0] not in known]
    return name, unknown


def test_messages_mention_commands() -> None:
    assert len(MENTIONS) >= 10 and {"init", "resume", "signal"} <= {parse(m)[0] for m in MENTIONS}


def test_every_command_named_in_a_message_exists() -> None:
    missing = [f"{m.where}: `orchestrator {m.text}`" for m in MENTIONS
               if (name := parse(m)[0]) is not None and name not in COMMANDS]
    assert missing == [], f"these messages name commands that do not exist (see `orchestrator --help`): {missing}"


def test_every_option_named_in_a_message_exists() -> None:
    wrong = [f"{m.where}: `orchestrator {m.text}`: {unknown}" for m in MENTIONS if (unknown := parse(m)[1])]
    assert wrong == []


def test_every_command_named_in_a_message_parses_as_written() -> None:
    """Arity and required options too: `{}` and SESSION-like placeholders stand for one word each."""
    wrong: list[str] = []
    for m in MENTIONS:
        name = parse(m)[0]
        if name not in COMMANDS:
            continue
        tokens = shlex.split(m.text)
        words = tokens[tokens.index(name) + 1:]
        if not words:
            continue  # a bare `orchestrator NAME` names the command, not a command line
        try:
            COMMANDS[name].make_context(name, [w.replace("{}", "x") for w in words])
        except Exception as exc:  # noqa: BLE001 - typer's own click raises usage errors of its own classes
            wrong.append(f"{m.where}: `orchestrator {m.text}`: {exc}")
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize(("source", "expected"), [
    ('"run `orchestrator init` first"', [("init", [])]),
    ('f"`orchestrator resume {sid} --force` or `orchestrator --store {url} list --nope`"',
     [("resume", []), ("list", ["--nope"])]),
    ('"""Docs:\n`orchestrator\n    doctor --json`; not `orchestrator.store`; `orchestrator --help`."""',
     [("doctor", []), (None, [])]),
])
def test_mentions_are_found_in_plain_strings_fstrings_and_wrapped_docstrings(
    source: str, expected: list[tuple[str | None, list[str]]]
) -> None:
    assert [parse(m) for m in mentions_in(source, "x.py")] == expected
