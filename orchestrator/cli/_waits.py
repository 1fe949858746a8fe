"""What a WAITING session waits for, and the commands that continue it.

The task record keeps the signal a task waits for (`waiting_for`, set by its WAIT
write) and its deadline (`not_before`), so `status`, `run`, `resume` and the signal
commands all read them from the session snapshot, the same way.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.cli._common import fmt_time
from orchestrator.durations import format_duration
from orchestrator.store import SessionSnapshot, TaskStatus

__all__ = ["TaskWait", "cli_base", "cli_command", "continue_commands", "describe_wait", "task_waits"]

#: The signal `approve`/`reject` send by default.
_APPROVAL = "approval"


@dataclass(frozen=True, slots=True)
class TaskWait:
    """A WAITING task: the signal it waits for (None when its record names none) and its deadline."""

    task_id: str
    signal: str | None
    until: float | None


def task_waits(snap: SessionSnapshot) -> list[TaskWait]:
    """Every WAITING task of the session, by task id."""
    waiting = sorted(tid for tid, t in snap.tasks.items() if t.status is TaskStatus.WAITING)
    return [TaskWait(tid, snap.tasks[tid].waiting_for, snap.tasks[tid].not_before) for tid in waiting]


def describe_wait(wait: TaskWait, now: float) -> str:
    """`task review waits for signal 'approval' until 2026-12-01 13:40:00Z (in 20m00s)`, in words."""
    what = f"signal {wait.signal!r}" if wait.signal is not None else "a signal (its name is not recorded)"
    if wait.until is None:
        when = "with no deadline"
    elif wait.until > now:
        when = f"until {fmt_time(wait.until)} (in {format_duration(wait.until - now)})"
    else:
        when = f"until {fmt_time(wait.until)} (due now: a worker or resume times it out)"
    return f"task {wait.task_id} waits for {what} {when}"


def cli_command() -> str:
    """How to call this CLI again from here: `orchestrator` when that name on PATH is this
    interpreter's script, else the script's path (e.g. `.venv/bin/orchestrator`, not activated)."""
    script = Path(sys.executable).parent / "orchestrator"
    found = shutil.which("orchestrator")
    if found is not None and Path(found).resolve() == script.resolve():
        return "orchestrator"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return os.fspath(script)


def cli_base(store_url: str | None) -> str:
    """The start of a command that works on the same store as this one (`--store` repeated if given)."""
    return cli_command() + (f" --store {shlex.quote(store_url)}" if store_url else "")


def continue_commands(session_id: str, waits: Sequence[TaskWait], app: str, store_url: str | None) -> list[str]:
    """The commands that deliver what each task waits for, then the one that runs the session on."""
    base = cli_base(store_url)
    sid = shlex.quote(session_id)
    lines = []
    for wait in waits:
        tid = shlex.quote(wait.task_id)
        if wait.signal == _APPROVAL:
            lines.append(f"{base} approve {sid} {tid}   (or: {base} reject {sid} {tid} --reason TEXT)")
        else:
            name = shlex.quote(wait.signal) if wait.signal is not None else "SIGNAL"
            lines.append(f"{base} signal {sid} {tid} {name} --data JSON")
    lines.append(f"{base} resume {sid} --app {shlex.quote(app)}   "
                 f"(or leave it to a running `{base} worker --app {shlex.quote(app)}`)")
    return lines
