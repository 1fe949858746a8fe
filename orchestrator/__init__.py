"""Durable agent pipelines: run a DAG of agents, checkpoint every step, resume what crashed.

Layout (imports point down only):

    cli          orchestrator/cli.py        command line: parses, calls the API, prints
    recovery     orchestrator/recovery.py   resume-failed, worker loop
    scheduler    orchestrator/scheduler.py  anyio DAG runner over the Store protocol
    graph        orchestrator/graph.py      Pipeline, validation, ready sets (networkx)
    state        orchestrator/state.py      recording external sessions without a scheduler
    store        orchestrator/store/        Store protocol, records, rules; sqlite, dynamodb
    telemetry    orchestrator/telemetry.py  OpenTelemetry spans/metrics, logging
    errors       orchestrator/errors.py     every exception (stdlib + agents.errors only)
    agents       agents/                    what agent authors import
"""

from __future__ import annotations

from orchestrator.clock import Clock, SystemClock
from orchestrator.codec import Codec, Secret
from orchestrator.store import Store, StoreConfig, open_store

__all__ = [
    "Clock",
    "Codec",
    "Secret",
    "Store",
    "StoreConfig",
    "SystemClock",
    "open_store",
]
