"""Durable agent pipelines: run a DAG of agents, checkpoint every step, resume what crashed.

Layout (imports point down only):

    cli          orchestrator/cli/           command line: parses, calls the API, prints
    recovery     orchestrator/recovery.py    resume-failed sweep, worker loop
                 orchestrator/fork.py        a new session from part of an old one
    scheduler    orchestrator/scheduler.py   run, submit, resume, execute (the entry points)
                 orchestrator/session_runner.py  the dispatcher of one claimed session
                 orchestrator/run_options.py RunOptions, RunResult, WorkerLimits
                 orchestrator/lease.py       lease renewal and the local deadline
                 orchestrator/task_runner.py one attempt of one task on its executor
                 orchestrator/context.py     the engine's AgentContext
    state        orchestrator/state/         recording external sessions without a scheduler
    graph        orchestrator/graph.py       Pipeline, validation, ready sets (networkx)
    store        orchestrator/store/         Store protocol, records, rules, config at the root;
                 orchestrator/store/sqlite/  the embedded backend (same module names as dynamodb/)
                 orchestrator/store/dynamodb/ the DynamoDB backend (pynamodb only here)
    telemetry    orchestrator/telemetry.py   OpenTelemetry spans/metrics, logging
    errors       orchestrator/errors.py      every exception (stdlib + agents.errors only)
    agents       agents/                     what agent authors import

Only `orchestrator/store/dynamodb/` imports pynamodb; only the cli imports typer and
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
