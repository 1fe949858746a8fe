"""Durable agent pipelines: run a DAG of agents, checkpoint every step, resume what crashed.

Layout (imports point down only):

    cli          orchestrator/cli/           command line: parses, calls the API, prints
    recovery     orchestrator/recovery.py    resume-failed sweep, worker loop
                 orchestrator/fork.py        a new session from part of an old one
    scheduler    orchestrator/scheduler/     the anyio DAG runner of claimed sessions:
                   entry.py                  run, submit, resume, execute (the entry points)
                   runner.py                 SessionRunner: the I/O shell of one claimed session
                   lease_keeper.py           owns the lease: renewal and the local deadline
                   attempt.py                one attempt of one task on its executor
                   context.py                the engine's AgentContext
                   plan.py                   SessionPlan: the pure core (outcomes in, steps out)
                   tasks.py                  TaskState (one record per task), TaskTable
                   step.py                   Step: the writes, launches and notes decided
                   ports.py                  protocols the runner's collaborators depend on
                   messages.py               Launch and the typed attempt outcomes
                   options.py                RunOptions, RunResult, WorkerLimits
    state        orchestrator/state/         recording external sessions without a scheduler
    graph        orchestrator/graph.py       Pipeline, validation, ready sets (networkx)
    store        orchestrator/store/         Store protocol, records, rules; sqlite, dynamodb
    telemetry    orchestrator/telemetry.py   OpenTelemetry spans/metrics, logging
    errors       orchestrator/errors.py      every exception (stdlib + agents.errors only)
    agents       agents/                     what agent authors import

Only `orchestrator/store/dynamodb*` imports pynamodb; only the cli imports typer and
rich; only telemetry imports opentelemetry; `agents` imports nothing from here.
"""

from __future__ import annotations

from orchestrator.clock import Clock, SystemClock
from orchestrator.codec import Codec, Secret
from orchestrator.graph import DagState, Pipeline, Task, render
from orchestrator.metrics import MetricsRecorder, agent_stats, project_stats
from orchestrator.recovery import ResumeReport, Worker, WorkerReport, resume_failed, run_batch
from orchestrator.scheduler import (
    RunOptions,
    RunResult,
    WorkerLimits,
    resume,
    resume_sync,
    run,
    run_sync,
    submit,
    submit_sync,
)
from orchestrator.state import SessionRecorder, StateAPI, UserProject
from orchestrator.store import Store, StoreConfig, open_store
from orchestrator.store.records import SessionStatus, TaskStatus
from orchestrator.telemetry import JsonFormatter, Telemetry

__all__ = [
    "Clock",
    "Codec",
    "DagState",
    "JsonFormatter",
    "MetricsRecorder",
    "Pipeline",
    "ResumeReport",
    "RunOptions",
    "RunResult",
    "Secret",
    "SessionRecorder",
    "SessionStatus",
    "StateAPI",
    "Store",
    "StoreConfig",
    "SystemClock",
    "Task",
    "TaskStatus",
    "Telemetry",
    "UserProject",
    "Worker",
    "WorkerLimits",
    "WorkerReport",
    "agent_stats",
    "open_store",
    "project_stats",
    "render",
    "resume",
    "resume_failed",
    "resume_sync",
    "run",
    "run_batch",
    "run_sync",
    "submit",
    "submit_sync",
]

__version__ = "0.1.0"
