"""Find the fenced code blocks of README.md and docs/*.md, and run them as a reader would.

What each kind of block must do (tests/test_docs.py has one test per block):

- ```python: executed in a fresh interpreter in a temp directory, after the earlier
  python blocks of the same file (a later block may use an earlier one's names);
  top-level `await` is allowed, as in `python -m asyncio`. A block that defines
  `test_` functions is a test file: plain pytest runs it alone; it must pass without
  warnings. A block that opens with `# NAME.py` is a script, run alone as `python NAME.py`.
- ```sh / ```bash (```console: its `$ ` lines), and ```cron without each line's
  schedule: run line by line (bash) in a temp directory that holds the `myapp` package
  of tests/apps and an `issue.json`, against a fresh SQLite store, with the venv's
  `orchestrator` and `python` on PATH; each line must exit 0. The
  placeholders SESSION and build-1a2b3c stand for the first session the block created.
  A line ending in `&` starts a server (a moto server on 127.0.0.1; the block's port
  8000 becomes a free one), stopped after the block. `orchestrator worker` without
  an exit option runs until the sessions it can take are done, then gets SIGTERM.
- A block whose first line is `$ orchestrator ...`: that command's real output (100
  columns) must equal the rest of the block.
- ```json after `<!-- output of: COMMAND -->`: the block, up to a `...` line, must be
  the start of the command's output.
- ```yaml (AWS SAM): every `Handler:` it names must import and be callable.
- Any block after `<!-- not run: REASON -->` is listed, with its reason, not run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from orchestrator.store import SessionStatus, open_store
from orchestrator.testing._servers import stop_server, wait_until_answers

REPO = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
DOCS = ("README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md")))
_BIN = Path(sys.executable).parent
_FENCE = re.compile(r"^```([\w-]*)\s*$")
_NOT_RUN = re.compile(r"^<!-- not run: (.+?) -->$")
_OUTPUT_OF = re.compile(r"^<!-- output of: (.+?) -->$")
_PLACEHOLDERS = ("SESSION", "build-1a2b3c")
SHELLS = frozenset({"sh", "bash", "console", "shell", "cron"})
_WAIT_POLLS = 300  # x 0.2 s: the bound on waiting for a worker to take what it can


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text, and what the doc says about it."""

    doc: str
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    not_run: str | None = None
    output_of: str | None = None

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def is_test_code(self) -> bool:
        return self.lang == "python" and re.search(r"^\s*(async )?def test_", self.text, re.M) is not None

    @property
    def script(self) -> str | None:
        """The file name of a block that opens with `# NAME.py`: a script, run as `python NAME.py`."""
        m = re.match(r"# (\w+\.py)\b", self.text) if self.lang == "python" else None
        return m.group(1) if m else None

    @property
    def is_transcript(self) -> bool:
        return self.text.startswith("$ ")


def blocks(doc: str) -> list[Block]:
    """Every fenced block of `doc` (a path relative to the repository), in order."""
    found: list[Block] = []
    lines = (REPO / doc).read_text().splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{doc}:{start + 1}: fenced block never closed")
        before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        not_run, output_of = _NOT_RUN.match(before), _OUTPUT_OF.match(before)
        found.append(Block(doc, start + 1, m.group(1), "\n".join(body) + "\n",
                           not_run.group(1) if not_run else None, output_of.group(1) if output_of else None))
        i += 1
    return found


def all_blocks() -> list[Block]:
    return [b for doc in DOCS for b in blocks(doc)]


def base_env(tmp: Path) -> dict[str, str]:
    """A reader's shell with the venv activated: no AWS credentials, no store chosen, 100 columns."""
    drop = ("ORCHESTRATOR_", "AWS_", "DYNAMODB_", "PYTEST_", "COV_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(PATH=f"{_BIN}{os.pathsep}{env.get('PATH', '')}", XDG_STATE_HOME=str(tmp / "xdg-state"),
               COLUMNS="100", TERM="dumb", NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    return env


# -- python ---------------------------------------------------------------------------------

_RUNNER = """
import ast, asyncio, inspect, json, sys
ns = {"__name__": "__main__"}
for doc, line, src in json.load(open(sys.argv[1])):
    code = compile("\\n" * line + src, doc, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, ns))
    else:
        exec(code, ns)
"""


def run_python(block: Block, earlier: list[Block], tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run `block` (after `earlier`, in one namespace) or, if it is test code, pytest it."""
    env = base_env(tmp)
    if block.script is not None:
        (tmp / block.script).write_text(block.text)
        cmd = [sys.executable, "-W", "error", block.script]
    elif block.is_test_code:
        path = tmp / f"test_{Path(block.doc).stem}_{block.line}.py"
        path.write_text("\n" * block.line + block.text)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)]  # plain pytest
    else:
        chain = [(b.doc, b.line, b.text) for b in [*earlier, block]]
        (tmp / "blocks.json").write_text(json.dumps(chain))
        cmd = [sys.executable, "-W", "error", "-c", _RUNNER, str(tmp / "blocks.json")]
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=120, check=False)


# -- shell ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _sessions(url: str) -> set[str]:
    """Every session id in the SQLite store at `url` (read-only; none if it does not exist yet)."""
    if not Path(url.removeprefix("sqlite://")).exists():
        return set()

    async def go() -> set[str]:
        store = open_store(f"{url}?mode=ro")
        try:
            ids: set[str] = set()
            for status in SessionStatus:
                ids.update(s.session_id for s in (await store.list_sessions(status, limit=1000)).items)
            return ids
        finally:
            await store.aclose()

    return anyio.run(go)


def _busy(url: str) -> bool:
    async def go() -> bool:
        store = open_store(f"{url}?mode=ro")
        try:
            for status in (SessionStatus.PENDING, SessionStatus.RUNNING):
                if (await store.list_sessions(status, limit=1)).items:
                    return True
            return False
        finally:
            await store.aclose()

    return anyio.run(go)


def command_lines(block: Block) -> list[str]:
    """The block's commands: blank lines, comment lines and continuations joined, `$ ` dropped."""
    out: list[str] = []
    pending = ""
    for raw in block.text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if block.lang == "console" and not pending and not line.startswith("$ "):
            continue  # the output shown after a prompt line
        if block.lang == "cron" and not pending:
            line = re.sub(r"^(\S+\s+){5}", "", line)  # the schedule; the rest is the command
        line = pending + line.removeprefix("$ ")
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        out.append(line)
    return out


@dataclass
class ShellRun:
    """One shell block's run: its directory, environment, store and the servers it started."""

    block: Block
    tmp: Path

    def __post_init__(self) -> None:
        self.cwd = self.tmp / "project"
        shutil.copytree(APPS / "myapp", self.cwd / "myapp", ignore=shutil.ignore_patterns("__pycache__"))
        (self.cwd / "issue.json").write_text(json.dumps({"issue": 17, "title": "Add dark mode"}))
        self.url = f"sqlite://{self.tmp / 'state.db'}"
        self.env = {**base_env(self.tmp), "ORCHESTRATOR_STORE": self.url}
        self.port = _free_port()
        self.session: str | None = None
        self.servers: list[subprocess.Popen[str]] = []

    def lines(self) -> Iterator[str]:
        for line in command_lines(self.block):
            yield line.replace("8000", str(self.port))

    def run(self) -> None:
        try:
            for line in self.lines():
                self._one(line)
        finally:
            for server in self.servers:
                stop_server(server)

    def _one(self, line: str) -> None:
        words = shlex.split(line, comments=True)
        if words[0] == "export":
            for word in words[1:]:
                key, _, value = word.partition("=")
                self.env[key] = value
            return
        before = _sessions(self.url) if self.session is None and self._uses_store() else set()
        for name in _PLACEHOLDERS:
            if re.search(rf"\b{re.escape(name)}\b", line):
                assert self.session is not None, f"{line!r} names {name} before any session was created"
                line = re.sub(rf"\b{re.escape(name)}\b", self.session, line)
        if words[-1] == "&":
            self._background(shlex.join(words[:-1]))
        elif words[:2] == ["orchestrator", "worker"] and not {"--idle-exit", "--max-sessions"} & set(words):
            self._worker(line)
        else:
            # the examples are a package of the repository: the docs run them from its root
            cwd = REPO if words[:2] == ["python", "-m"] and words[2].startswith("examples.") else self.cwd
            done = subprocess.run(["bash", "-c", line], cwd=cwd, env=self.env, capture_output=True,
                                  text=True, timeout=120, check=False)
            expected = re.search(r"#\s*exits (\d+)", line)  # a documented exit code, e.g. 6 for WAITING
            assert done.returncode == (int(expected[1]) if expected else 0), (
                f"{line!r} exited {done.returncode}\nstdout: {done.stdout[-1500:]}\nstderr: {done.stderr[-1500:]}")
        if self.session is None and self._uses_store():
            created = sorted(_sessions(self.url) - before)
            self.session = created[0] if created else None

    def _uses_store(self) -> bool:
        return self.env.get("ORCHESTRATOR_STORE") == self.url

    def _background(self, line: str) -> None:
        proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=self.cwd, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        self.servers.append(proc)
        wait_until_answers(proc, f"http://127.0.0.1:{self.port}/moto-api/data.json", line, 30.0)

    def _worker(self, line: str) -> None:
        proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=self.cwd, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for _ in range(_WAIT_POLLS):  # until it took what it can, or a bound on that wait
                if not _busy(self.url) or proc.poll() is not None:
                    break
                time.sleep(0.2)
            assert proc.poll() is None, f"{line!r} exited {proc.returncode} before being stopped"
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, f"{line!r} exited {proc.returncode} on SIGTERM: {out[-1500:]}"


# -- transcripts and outputs ----------------------------------------------------------------


def real_output(command: str, tmp: Path) -> str:
    done = subprocess.run(["bash", "-c", command], cwd=tmp, env=base_env(tmp), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{command!r} exited {done.returncode}: {done.stderr[-1500:]}"
    return done.stdout


def normalized(text: str) -> list[str]:
    """Lines without trailing spaces, without leading and trailing blank lines."""
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines
