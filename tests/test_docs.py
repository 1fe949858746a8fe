"""Every code block of README.md and docs/*.md runs as printed, so the docs cannot drift.

One test per block, named `doc:line` of its opening fence; tests/docs_blocks.py says
what each kind of block must do. A block that cannot run (a make target, a cron line,
real AWS) says so in the doc (`<!-- not run: REASON -->`) and is listed by
`test_blocks_not_run_say_why`. Commands named in the prose (`orchestrator ...` in
backticks) parse with the CLI's own parser, as tests/test_named_commands.py does for
the package's docstrings and error messages.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from docs_blocks import (
    SHELLS,
    DOCS,
    REPO,
    Block,
    ShellRun,
    all_blocks,
    normalized,
    real_output,
    run_python,
)

from orchestrator.cli import app

BLOCKS = all_blocks()
RUN = [b for b in BLOCKS if b.not_run is None]
NOT_RUN = [b for b in BLOCKS if b.not_run is not None]


def _earlier_python(block: Block) -> list[Block]:
    return [b for b in RUN if b.doc == block.doc and b.line < block.line and b.lang == "python"
            and not b.is_test_code and b.script is None]


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_block_runs_as_printed(block: Block, tmp_path: Path) -> None:
    if block.lang == "python":
        done = run_python(block, _earlier_python(block), tmp_path)
        assert done.returncode == 0, f"{block.id} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        if block.is_test_code:
            assert re.search(r"\d+ warning", done.stdout) is None, f"{block.id} warns:\n{done.stdout[-3000:]}"
    elif block.is_transcript:
        command, _, expected = block.text.partition("\n")
        assert normalized(real_output(command.removeprefix("$ "), tmp_path)) == normalized(expected), (
            f"{block.id}: the copy of `{command[2:]}` is stale; paste the output of `COLUMNS=100 {command[2:]}`")
    elif block.lang in SHELLS:
        ShellRun(block, tmp_path).run()
    elif block.lang == "json" and block.output_of is not None:
        shown = normalized(block.text)
        cut = shown.index("    ...") if "    ..." in shown else len(shown)
        real = normalized(real_output(block.output_of, tmp_path))
        assert real[:cut] == shown[:cut], f"{block.id}: not the start of `{block.output_of}`'s output"
    elif block.lang == "yaml":
        handlers = re.findall(r"Handler:\s*(\S+)", block.text)
        assert handlers, f"{block.id}: a YAML block with no Handler to check; mark it not run with a reason"
        for handler in handlers:
            module, _, name = handler.rpartition(".")
            assert callable(getattr(importlib.import_module(module), name)), f"{block.id}: {handler}"
    else:
        pytest.fail(f"{block.id}: a ```{block.lang} block this test cannot run; make it runnable or put "
                    f"`<!-- not run: REASON -->` on the line before it")


def test_blocks_not_run_say_why() -> None:
    listing = "\n".join(f"{b.id} ({b.lang}): {b.not_run}" for b in NOT_RUN)
    print(f"{len(NOT_RUN)} of {len(BLOCKS)} doc blocks not run:\n{listing}")
    assert all(len(b.not_run.split()) >= 3 for b in NOT_RUN if b.not_run), listing
    # make demo/make test in the README, the production crontab, the dashboard's start (README
    # and docs/cli.md: a server until stopped, driven by tests/test_ui_*.py), a worker's sample
    # lines (tests/test_cli_lifecycle.py): nothing more
    assert len(NOT_RUN) <= 5, f"more blocks left unrun than before; make them runnable instead:\n{listing}"


def test_every_doc_has_its_blocks_found() -> None:
    docs = {b.doc for b in BLOCKS}
    assert {"README.md", "docs/cli.md", "docs/examples.md"} <= docs
    assert sum(b.lang == "python" for b in BLOCKS) >= 4


# -- commands named in the prose ------------------------------------------------------------

_INLINE = re.compile(r"`orchestrator ([^`]+)`")


def _prose_commands() -> list[tuple[str, str]]:
    """(doc:line, what follows `orchestrator `) for each inline code span outside the blocks."""
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        text = (REPO / doc).read_text()
        prose = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)
        for m in _INLINE.finditer(prose):
            found.append((f"{doc}:{prose.count(chr(10), 0, m.start()) + 1}", " ".join(m.group(1).split())))
    return found


PROSE = _prose_commands()


@pytest.mark.parametrize(("where", "command"), PROSE, ids=[f"{w} {c}" for w, c in PROSE])
def test_a_command_named_in_the_prose_parses(where: str, command: str) -> None:
    """A bare `orchestrator NAME` names a command; anything longer must parse as written
    (SESSION-like placeholders and `...` stand for one word, `a|b` for its first choice)."""
    group: Any = typer.main.get_command(app)
    words = [w.split("|")[0].replace("...", "x") for w in shlex.split(command)]
    root = {o: p for p in group.params for o in (*p.opts, *p.secondary_opts)}
    while words and words[0].startswith("-"):  # root options (and their values) before the command
        option = words.pop(0)
        assert option in root or option in ("--help", "-h"), f"{where}: `orchestrator {command}`: unknown root option"
        if option in root and not root[option].is_flag:
            assert words, f"{where}: `orchestrator {command}`: {option} needs a value"
            words.pop(0)
    if not words:
        return
    assert words[0] in group.commands, f"{where}: `orchestrator {command}`: no command {words[0]!r}"
    if len(words) > 1:
        try:
            group.commands[words[0]].make_context(words[0], words[1:])
        except Exception as exc:  # noqa: BLE001 - typer's own click raises usage errors of its own classes
            if getattr(exc, "exit_code", None) == 0:
                return  # `--help` parses, and exits 0
            pytest.fail(f"{where}: `orchestrator {command}` does not parse: {exc}")
