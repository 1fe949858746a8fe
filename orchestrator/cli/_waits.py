"""What a WAITING session waits for, and the commands that continue it.

The signal a task waits for is named only by its latest "wait" event (the task record
keeps the deadline, as `not_before`), so `status`, `run`, `resume` and the signal
commands all read it here, the same way.
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
from orchestrator.store import SessionSnapshot, Store, TaskStatus

__all__ = ["TaskWait", "cli_base", "cli_command", "continue_commands", "describe_wait", "signals_awaited", "task_waits"]

#: Pages of events read (oldest first) to find the latest "wait" event of each task.
_WAIT_SCAN_PAGES = 10
#: The signal `approve`/`reject` send by default.
_APPROVAL = "approval"


@dataclass(frozen=True, slots=True)
class TaskWait:
    """A WAITING task: the signal it waits for (None until its "wait" event is written) and its deadline."""

    task_id: str
    signal: str | None
    until: float | None


async def signals_awaited(store: Store, session_id: str, task_ids: Sequence[str]) -> dict[str, str]:
    """The signal each of `task_ids` waits for, from its latest "wait" event (tasks without one left out)."""
    wanted, names = set(task_ids), {}
    if not wanted:
        return {}
    after: str | None = None
    for _ in range(_WAIT_SCAN_PAGES):
        page = await store.read_events(session_id, after=after, limit=1000)
        for event in page.items:
            signal = event.data.get("signal")
            if event.kind == "wait" and event.task_id in wanted and isinstance(signal, str):
                names[event.task_id] = signal
        if page.cursor is None:
            break
        after = page.cursor
    return names


async def task_waits(store: Store, snap: SessionSnapshot) -> list[TaskWait]:
    """Every WAITING task of the session, by task id."""
    waiting = sorted(tid for tid, t in snap.tasks.items() if t.status is TaskStatus.WAITING)
    names = await signals_awaited(store, snap.session.session_id, waiting)
    return [TaskWait(tid, names.get(tid), snap.tasks[tid].not_before) for tid in waiting]


def describe_wait(wait: TaskWait, now: float) -> str:
    """`task review waits for signal 'approval' until 2026-12-01 13:40:00Z (in 20m00s)`, in words."""
    what = f"signal {wait.signal!r}" if wait.signal is not None else "a signal (its name is not recorded yet)"
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
