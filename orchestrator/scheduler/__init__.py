"""The anyio DAG runner: claim a session, run ready tasks under limits, checkpoint every step.

    entry.py         run, submit, resume, execute and their sync twins
    runner.py        SessionRunner: the dispatcher of one claimed session
    options.py       RunOptions, RunResult, WorkerLimits
    lease_keeper.py  LeaseKeeper: renewal, cancel/signal news, the local deadline
    attempt.py       one attempt of one task on its executor
    context.py       the engine's AgentContext / SyncAgentContext

The scheduler knows the Store protocol only, never a backend.
"""

from __future__ import annotations

from orchestrator.scheduler.entry import (
    execute,
    resume,
    resume_sync,
    run,
    run_sync,
    submit,
    submit_sync,
)
from orchestrator.scheduler.options import RunOptions, RunResult, WorkerLimits, default_worker_id
from orchestrator.scheduler.runner import SessionRunner

__all__ = [
    "RunOptions",
    "RunResult",
    "SessionRunner",
    "WorkerLimits",
    "default_worker_id",
    "execute",
    "resume",
    "resume_sync",
    "run",
    "run_sync",
    "submit",
    "submit_sync",
]
