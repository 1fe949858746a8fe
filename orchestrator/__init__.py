"""Durable agent pipelines: run a DAG of agents, checkpoint every step, resume what crashed.

Layout, top to bottom. Imports point down only (within a layer, anywhere).
`tests/test_layering.py` reads this map: every module must be in it, and no import
(not even one under TYPE_CHECKING or inside a function) may point up. A folder entry
covers every module under it. Move a module, and update this map.

    testing      orchestrator/testing/          FakeClock, temporary_store, the Store contract suite, moto server, fault proxy
    api          orchestrator/__init__.py       this file: the public names
    cli          orchestrator/cli/              command line: parses, calls the API, prints
                 orchestrator/__main__.py       `python -m orchestrator`: the command line
                 orchestrator/ui/               `orchestrator ui`: the web dashboard (starlette, uvicorn)
                 orchestrator/aws_lambda.py     Lambda handlers: resume-failed sweep, worker batch
                 orchestrator/apps.py           `module:attribute` -> Pipeline, for the entry points
                 orchestrator/durations.py      `1h30m` -> seconds, for the entry points
                 orchestrator/tuning.py         lease, per-agent limits, progress interval: parsed for the entry points
    recovery     orchestrator/recovery.py       resume-failed sweep, worker loop
                 orchestrator/schedules.py      schedules: add/pause/resume/trigger, fire due slots exactly once
                 orchestrator/pacing.py         how a worker paces listing: spread, back off when idle
                 orchestrator/fork.py           a new session from part of an old one
    scheduler    orchestrator/scheduler/__init__.py     the public names: run, submit, resume, ...
                 orchestrator/scheduler/entry.py        run, submit, resume, execute (the entry points)
                 orchestrator/scheduler/runner.py       SessionRunner: the I/O shell of one claimed session
                 orchestrator/scheduler/beyond.py       the runner's port beyond its session: children, cache hits
                 orchestrator/scheduler/lease_keeper.py owns the lease: renewal and the local deadline
                 orchestrator/scheduler/lifecycle.py    claim/takeover/lease-lost/end: history events and log records
                 orchestrator/scheduler/attempt.py      one attempt of one task on its executor
                 orchestrator/scheduler/resources.py    fleet-wide resources around an attempt: wait, hold, renew
                 orchestrator/scheduler/context.py      the engine's AgentContext
                 orchestrator/scheduler/children.py     child sessions of ctx.map / run_child: create, look, results, cancel
                 orchestrator/scheduler/cache.py        cached outputs around an attempt: look up, record a hit, store
                 orchestrator/scheduler/plan.py         SessionPlan: the pure core (outcomes in, steps out)
                 orchestrator/scheduler/tasks.py        TaskState (one record per task), TaskTable
                 orchestrator/scheduler/step.py         Step: the writes, launches and notes decided
                 orchestrator/scheduler/ports.py        protocols the runner's collaborators depend on
                 orchestrator/scheduler/messages.py     Launch and the typed attempt outcomes
                 orchestrator/scheduler/options.py      RunOptions, RunResult, WorkerLimits
                 orchestrator/events.py         session events, buffered and written in batches
    state        orchestrator/state/            recording external sessions without a scheduler
    metrics      orchestrator/metrics.py        per-writer metric counters, flushed to the store
    graph        orchestrator/graph/            Pipeline (validated), DagState (ready sets), render
    store        orchestrator/store/            Store protocol (role protocols), records, config, call deadlines
                 orchestrator/store/rules/      the rulebook: every decision, pure, both backends call it
                 orchestrator/store/sqlite/     the embedded backend (module names match dynamodb/)
                 orchestrator/store/dynamodb/   the DynamoDB backend (the only pynamodb importer)
    telemetry    orchestrator/telemetry.py      OpenTelemetry spans/metrics, logging
    base         orchestrator/codec.py          the JSON codec, Secret
                 orchestrator/clock.py          the Clock protocol, SystemClock
    errors       orchestrator/errors.py         every exception (stdlib + orchestrator.agents.errors only)
    agents       agents/                        what agent authors import, as `orchestrator.agents` (a symlink)

Only `orchestrator/store/dynamodb/` imports pynamodb; only the cli imports typer and
rich; only the ui imports starlette and uvicorn (an optional extra, which the cli
imports lazily); only telemetry imports opentelemetry; `orchestrator.agents` imports nothing else from here.
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
from orchestrator.scheduler.children import cancel_session
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
    "cancel_session",
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
