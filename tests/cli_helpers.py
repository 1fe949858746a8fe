"""Run the installed `orchestrator` console script in a child process, as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.testing._workers import child_env

APPS = Path(__file__).resolve().parent / "apps"
_BIN = Path(sys.executable).parent


def console_script() -> str:
    """The installed console script (`pip install -e .` puts it next to the interpreter)."""
    found = shutil.which("orchestrator", path=f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found is not None, f"no `orchestrator` script in {_BIN}; run `{_BIN / 'pip'} install -e . --no-deps`"
    return found


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli_env(tmp: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = child_env()
    env["XDG_STATE_HOME"] = str(tmp / "xdg")  # never the real user's state dir
    env["DEMO_MARK_DIR"] = str(tmp)
    env.pop("ORCHESTRATOR_STORE", None)
    env.update(extra or {})
    return env


def cli(*args: str, store: str | None, tmp: Path, timeout: float = 90.0,
        env: Mapping[str, str] | None = None, wrapper: Sequence[str] = ()) -> Result:
    """`orchestrator [--store URL] ARGS...` run from the demo apps' directory (under `wrapper`, e.g. setpriv)."""
    argv = [*wrapper, console_script(), *(["--store", store] if store else []), *args]
    proc = subprocess.run(argv, cwd=APPS, env=cli_env(tmp, env), capture_output=True, text=True, timeout=timeout,
                          check=False)  # tests assert on the exit code
    return Result(proc.returncode, proc.stdout, proc.stderr)


def spawn(*args: str, store: str, tmp: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a long-running command (worker, resume-failed) without waiting for it."""
    return subprocess.Popen([console_script(), "--store", store, *args], cwd=APPS, env=cli_env(tmp, env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def executions(tmp: Path, session_id: str) -> list[tuple[str, int, int]]:
    """(task, attempt, pid) of every agent execution the demo agents recorded for a session."""
    path = tmp / f"{session_id}.log"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        task, attempt, pid = line.split()
        rows.append((task, int(attempt), int(pid)))
    return rows
