"""The anyio DAG runner: claim a session, run ready tasks under limits, checkpoint every step.

A pure core decides, an I/O shell performs (imports point down this list; no cycles,
type-only imports included, as tests/scheduler/test_structure.py checks):

    entry.py         run, submit, resume, execute and their sync twins
    runner.py        SessionRunner: the I/O shell; commits, launches, feeds outcomes back
    lease_keeper.py  LeaseKeeper: owns the lease; renews it, enforces its local deadline
    attempt.py       one attempt of one task on its executor, reported as a typed outcome
    context.py       TaskContext / SyncTaskContext: the engine's AgentContext
    plan.py          SessionPlan: the pure core; outcomes in, Steps (writes, launches) out
    tasks.py         TaskState, one record per task, and the TaskTable that changes them
    step.py          Step and its parts: what the plan decided, as values
    ports.py         SessionPort, LeaseListener: the protocols collaborators depend on
    messages.py      Launch and the attempt outcomes (Finished, Failed, TimedOut, ...)
    options.py       RunOptions, RunResult, WorkerLimits

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
