"""AWS Lambda entry points: a scheduled resume-failed sweep and a bounded worker batch.

Configuration comes from the function's environment (entry points may read it):

    ORCHESTRATOR_STORE          dynamodb://TABLE?region=...      (required in practice)
    ORCHESTRATOR_APP            APP:PIPELINE[,APP:PIPELINE...]   (required)
    ORCHESTRATOR_OLDER_THAN     resume-failed bound, e.g. 1h     (default 1h)
    ORCHESTRATOR_LIMIT          sessions per sweep               (default 50)
    ORCHESTRATOR_CONCURRENCY    sessions at once                 (default 4)
    ORCHESTRATOR_MAX_REDRIVES   flag needs-human after this many (default: each session's own)
    ORCHESTRATOR_MAX_SESSIONS   sessions per worker invocation   (default 10)
    ORCHESTRATOR_IDLE_EXIT      worker returns when idle this long (default 2s)
    ORCHESTRATOR_SAFETY_MARGIN  stop this long before the Lambda's deadline (default 30s)
    ORCHESTRATOR_LEASE          lease length, e.g. 30s           (default 30s; heartbeat a fifth of it)
    ORCHESTRATOR_AGENT_LIMITS   AGENT=N[,AGENT=N...]: at most N of that agent at once (default: no limit)
    ORCHESTRATOR_PROGRESS_INTERVAL  progress written at most this often (default 1s)

An event may override `older_than`, `limit`, `concurrency`, `max_redrives`, `dry_run`,
`max_sessions`, `lease`, `agent_limits` (a string as above, or an object `{"build": 2}`)
and `progress_interval`. The worker's agent limits are shared by the sessions of one
invocation; the sweep's apply to each session. A bad knob raises ValidationError before
the store is opened. Both handlers stop before `context.get_remaining_time_in_millis()`
runs out: the sweep is cut off (the sessions it held resume after their lease
expires), the worker stops claiming and releases what it holds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Protocol

import anyio

from orchestrator.apps import load_pipelines
from orchestrator.durations import parse_duration
from orchestrator.errors import ConfigError
from orchestrator.graph import Pipeline
from orchestrator.recovery import ResumeReport, Worker, resume_failed
from orchestrator.scheduler import RunOptions
from orchestrator.store import StoreConfig, open_store
from orchestrator.tuning import Knobs

__all__ = ["LambdaContext", "resume_failed_handler", "worker_handler"]

_log = logging.getLogger("orchestrator.aws_lambda")
_pipelines_cache: dict[str, list[Pipeline]] = {}


class LambdaContext(Protocol):
    """The part of the Lambda context object the handlers use."""

    def get_remaining_time_in_millis(self) -> int: ...


def _setting(event: Mapping[str, Any], env: Mapping[str, str], key: str, default: str) -> str:
    value = event.get(key.lower().removeprefix("orchestrator_"))
    if value is None:
        value = env.get(key, "")
    return str(value) if str(value) != "" else default


def _int(event: Mapping[str, Any], env: Mapping[str, str], key: str, default: str) -> int:
    text = _setting(event, env, key, default)
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{key}={text!r} is not an integer") from None


def _knobs(event: Mapping[str, Any], env: Mapping[str, str], pipelines: list[Pipeline]) -> Knobs:
    """Lease, agent limits and progress interval from the event or the environment, checked."""
    limits: Any = event.get("agent_limits")
    if isinstance(limits, Mapping):
        specs = [f"{name}={n}" for name, n in limits.items()]
    else:
        specs = [str(limits if limits is not None else env.get("ORCHESTRATOR_AGENT_LIMITS", ""))]
    lease = _setting(event, env, "ORCHESTRATOR_LEASE", "") or None
    interval = _setting(event, env, "ORCHESTRATOR_PROGRESS_INTERVAL", "") or None
    names = ("lease (ORCHESTRATOR_LEASE)", "progress_interval (ORCHESTRATOR_PROGRESS_INTERVAL)",
             "agent_limits (ORCHESTRATOR_AGENT_LIMITS)")
    knobs = Knobs.parse(lease=lease, progress_interval=interval, agent_limits=specs, names=names)
    knobs.check_agents(pipelines, what=names[2])
    return knobs


def _pipelines(env: Mapping[str, str]) -> list[Pipeline]:
    spec = env.get("ORCHESTRATOR_APP", "").strip()
    if not spec:
        raise ConfigError("ORCHESTRATOR_APP is not set; set it to APP:PIPELINE (comma-separated for several)")
    if spec not in _pipelines_cache:  # warm invocations reuse the imported pipelines
        _pipelines_cache[spec] = load_pipelines([spec])
    return _pipelines_cache[spec]


def _budget(context: LambdaContext | None, env: Mapping[str, str], event: Mapping[str, Any]) -> float | None:
    """Seconds this invocation may work, leaving the safety margin; None without a context."""
    if context is None:
        return None
    margin = parse_duration(_setting(event, env, "ORCHESTRATOR_SAFETY_MARGIN", "30s"),
                            what="ORCHESTRATOR_SAFETY_MARGIN")
    return max(0.0, context.get_remaining_time_in_millis() / 1000.0 - margin)


def _report(report: ResumeReport, timed_out: bool) -> dict[str, Any]:
    return {
        "ok": report.ok and not timed_out,
        "dry_run": report.dry_run,
        "timed_out": timed_out,
        "candidates": len(report.candidates),
        "resumed": dict(report.resumed),
        "skipped": dict(report.skipped),
        "flagged": dict(report.flagged),
        "errors": dict(report.errors),
    }


def resume_failed_handler(event: Mapping[str, Any] | None, context: LambdaContext | None,
                          *, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """EventBridge-scheduled sweep: resume FAILED/abandoned sessions; returns a JSON-able summary."""
    env = os.environ if env is None else env
    event = event or {}
    pipelines = _pipelines(env)
    older = parse_duration(_setting(event, env, "ORCHESTRATOR_OLDER_THAN", "1h"), what="ORCHESTRATOR_OLDER_THAN")
    limit = _int(event, env, "ORCHESTRATOR_LIMIT", "50")
    concurrency = _int(event, env, "ORCHESTRATOR_CONCURRENCY", "4")
    redrives_text = _setting(event, env, "ORCHESTRATOR_MAX_REDRIVES", "")
    max_redrives = _int(event, env, "ORCHESTRATOR_MAX_REDRIVES", "0") if redrives_text else None
    dry_run = str(event.get("dry_run", env.get("ORCHESTRATOR_DRY_RUN", ""))).lower() in ("1", "true", "yes")
    options = _knobs(event, env, pipelines).options()
    budget = _budget(context, env, event)
    config = StoreConfig.from_env(env)

    async def go() -> dict[str, Any]:
        store = open_store(config)
        try:
            await store.initialize()
            report = ResumeReport(dry_run=dry_run)
            timed_out = True
            with anyio.move_on_after(budget if budget is not None else float("inf")):
                report = await resume_failed(store, pipelines, older_than=older, limit=limit,
                                             concurrency=concurrency, max_redrives=max_redrives, dry_run=dry_run,
                                             options=options)
                timed_out = False
            if timed_out:
                _log.warning("resume-failed stopped before the Lambda deadline; held sessions resume after "
                             "their lease expires")
            return _report(report, timed_out)
        finally:
            with anyio.CancelScope(shield=True):
                await store.aclose()

    summary: dict[str, Any] = anyio.run(go)
    return summary


def worker_handler(event: Mapping[str, Any] | None, context: LambdaContext | None,
                   *, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Process a bounded batch of submitted/abandoned/due sessions, stopping before the deadline.

    It also starts the due slots of schedules of its pipelines (`orchestrator schedule`),
    as every worker does; those sessions are listed under "scheduled"."""
    env = os.environ if env is None else env
    event = event or {}
    pipelines = _pipelines(env)
    max_sessions = _int(event, env, "ORCHESTRATOR_MAX_SESSIONS", "10")
    concurrency = _int(event, env, "ORCHESTRATOR_CONCURRENCY", "4")
    idle = parse_duration(_setting(event, env, "ORCHESTRATOR_IDLE_EXIT", "2s"), what="ORCHESTRATOR_IDLE_EXIT")
    knobs = _knobs(event, env, pipelines)
    budget = _budget(context, env, event)
    config = StoreConfig.from_env(env)

    async def go() -> dict[str, Any]:
        store = open_store(config)
        try:
            await store.initialize()
            # The grace period must fit in the margin left after `budget`: finish or release in time.
            worker = Worker(store, pipelines, concurrency=concurrency,
                            options=knobs.options(RunOptions(), per_session_limits=False),
                            limits=knobs.worker_limits(), poll_interval=0.5, grace=min(10.0, (budget or 10.0) / 4))
            stopped_early = False
            async with anyio.create_task_group() as tg:
                async def deadline() -> None:
                    nonlocal stopped_early
                    if budget is None:
                        return
                    await anyio.sleep(budget)
                    stopped_early = True
                    worker.stop()

                tg.start_soon(deadline)
                report = await worker.run(max_sessions=max_sessions, idle_exit=idle)
                tg.cancel_scope.cancel()
            return {
                "ok": not report.errors,
                "worker_id": report.worker_id,
                "stopped_for_deadline": stopped_early,
                "results": dict(report.results),
                "released": list(report.released),
                "scheduled": list(report.scheduled),  # sessions started for due schedule slots
                "errors": dict(report.errors),
            }
        finally:
            with anyio.CancelScope(shield=True):
                await store.aclose()

    summary: dict[str, Any] = anyio.run(go)
    return summary
