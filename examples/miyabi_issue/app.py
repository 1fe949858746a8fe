"""Run the issue pipeline up to its approval, approve it, and let it finish."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from examples.miyabi_issue.pipeline import pipeline
from orchestrator.scheduler import RunOptions, RunResult, resume, run
from orchestrator.store import Store

__all__ = ["ISSUE_FILE", "IssueRun", "approve", "run_example", "start"]

ISSUE_FILE = Path(__file__).with_name("issue_42.md")


@dataclass(frozen=True, slots=True)
class IssueRun:
    waiting: RunResult  # the first run, stopped at the approval
    finished: RunResult | None  # after the approval (None if not approved here)


async def start(
    store: Store, workdir: Path, *, issue_text: str | None = None, options: RunOptions | None = None
) -> RunResult:
    """Run the issue pipeline until it waits for the approval; returns that (WAITING) result."""
    text = issue_text if issue_text is not None else ISSUE_FILE.read_text()
    return await run(
        pipeline, {"issue": text, "workdir": str(workdir)}, store=store, project_id="miyabi-webui",
        metadata={"github": {"issue_number": 42}}, options=options,
    )


async def approve(store: Store, session_id: str, *, by: str, task_id: str = "approval") -> int:
    """Deliver the approval signal, as `orchestrator approve SESSION approval` does; returns the signal seq."""
    return await store.send_signal(session_id, task_id, "approval", {"approved": True, "by": by})


async def run_example(
    store: Store, workdir: Path, *, approve_as: str | None = "demo", options: RunOptions | None = None
) -> IssueRun:
    """Run to the approval; with `approve_as`, approve and resume the session to the end."""
    waiting = await start(store, workdir, options=options)
    if approve_as is None:
        return IssueRun(waiting, None)
    await approve(store, waiting.session_id, by=approve_as)
    finished = await resume(pipeline, waiting.session_id, store=store, options=options)
    return IssueRun(waiting, finished)
