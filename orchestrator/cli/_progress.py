"""Live progress of a session, read by polling the store (so it works across processes).

On a terminal: a rich bar for the session and one per running task, with retries and
failures printed as they happen. Elsewhere: one plain line per task transition.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import IO, Any

import anyio
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from orchestrator.cli._common import fmt_time
from orchestrator.durations import format_duration
from orchestrator.errors import NotFoundError, StoreError
from orchestrator.store import Lease, SessionSnapshot, Store, TaskRecord, TaskStatus
from orchestrator.store.records import Progress as SessionProgress

__all__ = ["SessionLines", "SessionWatcher", "poll_session"]

_log = logging.getLogger("orchestrator.cli")


class SessionWatcher:
    """Turns successive snapshots of one session into bars (TTY) or lines (plain)."""

    def __init__(self, session_id: str, *, live: bool, stream: IO[str]) -> None:
        self.session_id = session_id
        self.live = live
        self.stream = stream
        self._seen: dict[str, tuple[TaskStatus, int]] = {}
        self._bars: dict[str, TaskID] = {}
        self._progress: Progress | None = None
        self._overall: TaskID | None = None
        if live:
            # Descriptions hold agent text (task ids, phases): shown as written, never as markup.
            console = Console(file=stream, markup=False)
            self._progress = Progress(
                TextColumn("{task.description}", markup=False), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                console=console, transient=False,
            )
            self._overall = self._progress.add_task(f"session {session_id}", total=None)

    def __enter__(self) -> SessionWatcher:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _say(self, text: str, style: str = "") -> None:
        if self._progress is not None:
            self._progress.console.print(text, style=style or None, highlight=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def update(self, snap: SessionSnapshot) -> None:
        now = snap.session.updated_at
        for tid in sorted(snap.tasks):
            self._task_changed(snap.tasks[tid], now)
        if self._progress is not None and self._overall is not None:
            # Completed tasks, as `status` and `list` count them: a failed run never shows 100%.
            done = SessionProgress.of_tasks(Counter(t.status for t in snap.tasks.values()))
            self._progress.update(
                self._overall, total=done.total, completed=done.current,
                description=f"session {self.session_id} [{snap.session.status.value}]",
            )
            for tid, task in snap.tasks.items():
                if task.status is TaskStatus.RUNNING:
                    self._bar(task)
                elif tid in self._bars:
                    self._progress.remove_task(self._bars.pop(tid))

    def _bar(self, task: TaskRecord) -> None:
        assert self._progress is not None
        total = task.progress.total or None
        label = f"  {task.task_id} ({task.agent}) #{task.attempt}"
        if task.progress.phase:
            label += f" {task.progress.phase}"
        if task.task_id not in self._bars:
            self._bars[task.task_id] = self._progress.add_task(label, total=total)
        self._progress.update(self._bars[task.task_id], description=label, total=total,
                              completed=task.progress.current)

    def _task_changed(self, task: TaskRecord, now: float) -> None:
        key = (task.status, task.attempt)
        before = self._seen.get(task.task_id)
        if before == key:
            return
        self._seen[task.task_id] = key
        stamp = fmt_time(task.updated_at or now)
        err = f": {task.last_error.type.rsplit('.', 1)[-1]}: {task.last_error.message}" if task.last_error else ""
        if task.status is TaskStatus.RUNNING:
            if before is not None and before[1] > 0 and task.attempt > before[1] and err:
                self._say(f"{stamp} {task.task_id} retry: attempt {before[1]} failed{err}", "yellow")
            self._say(f"{stamp} {task.task_id} RUNNING ({task.agent}, attempt {task.attempt})")
        elif task.status is TaskStatus.PENDING and task.last_error is not None and task.attempt > 0:
            self._say(f"{stamp} {task.task_id} retry scheduled after attempt {task.attempt}{err}", "yellow")
        elif task.status is TaskStatus.COMPLETED:
            self._say(f"{stamp} {task.task_id} COMPLETED in {format_duration(task.duration)}", "green")
        elif task.status is TaskStatus.FAILED:
            self._say(f"{stamp} {task.task_id} FAILED after {task.attempt} attempt(s){err}", "bold red")
        elif task.status in (TaskStatus.SKIPPED, TaskStatus.CANCELLED, TaskStatus.WAITING):
            self._say(f"{stamp} {task.task_id} {task.status.value}", "dim")


async def poll_session(
    store: Store, watcher: SessionWatcher, stop: anyio.Event, interval: float = 0.5,
    created_after: float | None = None,
) -> None:
    """Feed `watcher` a fresh snapshot every `interval` seconds until `stop` is set (and once more).

    `created_after` ignores an older session under the same id (a `run` whose id is taken).
    A failed poll is skipped: the display never ends a run, and an outage that matters is
    reported by the run's own store calls.
    """
    while True:
        try:
            snap = await store.load_session(watcher.session_id)
            if created_after is None or snap.session.created_at >= created_after:
                watcher.update(snap)
        except NotFoundError:
            pass  # not created yet
        except StoreError as exc:
            _log.debug("progress poll of session %s failed: %s", watcher.session_id, exc)
        if stop.is_set():
            return
        with anyio.move_on_after(interval):
            await stop.wait()


class SessionLines:
    """What `orchestrator worker` prints: one line per claimed session and one per finished one."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def claimed(self, lease: Lease, pipeline: str, how: str) -> None:
        self._console.print(f"claimed  {lease.session_id} {pipeline} ({how}, fence {lease.fence})",
                            highlight=False, markup=False, soft_wrap=True)

    def finished(self, session_id: str, pipeline: str, status: str, duration: float, detail: str | None) -> None:
        self._console.print(f"finished {session_id} {pipeline} {status} in {format_duration(duration)}"
                            + (f": {detail}" if detail else ""), highlight=False, markup=False, soft_wrap=True)
