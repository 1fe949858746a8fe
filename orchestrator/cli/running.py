"""Commands that run sessions: run, submit, resume, fork, worker, resume-failed."""

from __future__ import annotations

import logging
import shlex
import signal as signals
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import typer

from orchestrator.apps import load_pipeline, load_pipelines
from orchestrator.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_WAITING,
    console,
    emit_json,
    err_console,
    globals_of,
    open_cli_store,
    parse_json_arg,
    run_async,
)
from orchestrator.cli._progress import SessionLines, SessionWatcher, poll_session
from orchestrator.cli._waits import TaskWait, cli_base, continue_commands, describe_wait, task_waits
from orchestrator.durations import parse_duration
from orchestrator.errors import ValidationError
from orchestrator.fork import fork_session
from orchestrator.graph import Pipeline
from orchestrator.recovery import ResumeReport, Worker, WorkerReport, resume_failed
from orchestrator.scheduler import RunOptions, RunResult, resume, run, submit
from orchestrator.store import SessionStatus, Store
from orchestrator.tuning import Knobs

__all__ = ["register"]

_log = logging.getLogger("orchestrator.cli")

AppArg = Annotated[str, typer.Argument(metavar="APP:PIPELINE", help="module:attribute of a Pipeline (or a "
                                       "zero-argument function returning one), e.g. myapp.pipelines:build")]
InputOpt = Annotated[str | None, typer.Option("--input", "-i", help="Session input as JSON, or @file.json "
                                              "(@- reads stdin).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Agents running at once.")]
AppsOpt = Annotated[list[str], typer.Option("--app", "-a", help="APP:PIPELINE this process can run "
                                            "(repeat, or comma-separate).")]
LeaseOpt = Annotated[str | None, typer.Option("--lease", help="Lease length, e.g. 30s (default 30s); "
                                              "renewed every fifth of it. Another worker may take the "
                                              "session over once it lapses.")]
AgentLimitOpt = Annotated[list[str] | None, typer.Option("--agent-limit", metavar="AGENT=N", help="At most N "
                                                         "agents of that name at once (repeat, or "
                                                         "comma-separate).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Run agents that have a CachePolicy instead of "
                                          "reusing cached outputs (and store none).")]
ProgressOpt = Annotated[str | None, typer.Option("--progress-interval", help="Write task and session progress "
                                                 "at most this often, e.g. 2s (default 1s).")]


def _knobs(lease: str | None, agent_limits: list[str] | None, progress: str | None,
           pipelines: list[Pipeline]) -> Knobs:
    """The knobs, parsed and checked against the loaded agents before anything runs."""
    knobs = Knobs.parse(lease=lease, progress_interval=progress, agent_limits=agent_limits or ())
    knobs.check_agents(pipelines)
    return knobs


def _options(concurrency: int, knobs: Knobs, fail_fast: bool = False, no_cache: bool = False) -> RunOptions:
    return knobs.options(RunOptions(concurrency=concurrency, fail_fast=fail_fast, cache=not no_cache))


@dataclass(frozen=True, slots=True)
class Outcome:
    """A run's result, with what its tasks wait for when it ends WAITING (read at `now`)."""

    result: RunResult
    now: float = 0.0
    waits: list[TaskWait] = field(default_factory=list)


async def _watched(store: Store, session_id: str, as_json: bool,
                   body: Callable[[], Awaitable[RunResult]], *, new: bool = False) -> Outcome:
    """Run `body` while a poller shows the session's progress (bars on a TTY, lines otherwise)."""
    stream = sys.stderr if as_json else sys.stdout
    live = stream.isatty()
    stop = anyio.Event()
    outcome: list[RunResult] = []
    failure: list[BaseException] = []
    with SessionWatcher(session_id, live=live, stream=stream) as watcher:
        async with anyio.create_task_group() as tg:
            created_after = store.clock.now() - 1.0 if new else None
            tg.start_soon(lambda: poll_session(store, watcher, stop, created_after=created_after))
            try:
                outcome.append(await body())
            except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group
                failure.append(exc)
            finally:
                stop.set()
    if failure:
        raise failure[0]
    result = outcome[0]
    if result.status is not SessionStatus.WAITING:
        return Outcome(result)
    return Outcome(result, store.clock.now(), task_waits(await store.load_session(session_id)))


def _finish(outcome: Outcome, as_json: bool, app: str, store_url: str | None) -> None:
    result = outcome.result
    if as_json:
        emit_json({"session_id": result.session_id, "status": result.status, "reason": result.reason,
                   "tasks": result.tasks, "outputs": result.outputs,
                   "waiting": [{"task_id": w.task_id, "signal": w.signal, "until": w.until} for w in outcome.waits]})
    else:
        done = sum(1 for s in result.tasks.values() if s.value == "COMPLETED")
        style = {"COMPLETED": "green", "FAILED": "bold red", "WAITING": "yellow"}.get(result.status.value, "")
        console.print(f"session {result.session_id} {result.status.value} ({done}/{len(result.tasks)} tasks "
                      f"completed)" + (f": {result.reason}" if result.reason else ""), style=style or None,
                      highlight=False)
        if result.status is SessionStatus.FAILED:
            console.print(f"resume it with: {cli_base(store_url)} resume {shlex.quote(result.session_id)} "
                          f"--app {shlex.quote(app)}", highlight=False)
        elif result.status is SessionStatus.WAITING:
            waits = "; ".join(describe_wait(w, outcome.now) for w in outcome.waits) or "it waits for a signal"
            console.print(f"{waits}. Continue it with:", highlight=False)
            for line in continue_commands(result.session_id, outcome.waits, app, store_url):
                console.print(f"  {line}", highlight=False)
    if result.status in (SessionStatus.FAILED, SessionStatus.CANCELLED):
        raise typer.Exit(EXIT_FAILED)
    if result.status is SessionStatus.WAITING:
        raise typer.Exit(EXIT_WAITING)


def run_cmd(
    ctx: typer.Context,
    app: AppArg,
    input: InputOpt = None,
    session_id: Annotated[str | None, typer.Option("--session-id", help="Id for the new session "
                                                   "(default: PIPELINE-<random>).")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Project id.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="User id.")] = None,
    pipeline_type: Annotated[str | None, typer.Option("--type", help="Pipeline type (free text).")] = None,
    concurrency: ConcurrencyOpt = 16,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Cancel the rest when a task fails.")] = False,
    lease: LeaseOpt = None,
    agent_limit: AgentLimitOpt = None,
    progress_interval: ProgressOpt = None,
    no_cache: NoCacheOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a session and run it here, with live progress; exit 1 if it ends FAILED, 6 if it waits."""
    g = globals_of(ctx)
    pipeline = load_pipeline(app)
    options = _options(concurrency, _knobs(lease, agent_limit, progress_interval, [pipeline]), fail_fast, no_cache)
    value = parse_json_arg(input, what="--input")
    sid = session_id or f"{pipeline.name}-{uuid.uuid4().hex[:12]}"

    async def go() -> Outcome:
        async with open_cli_store(g) as store:
            return await _watched(store, sid, as_json, lambda: run(
                pipeline, value, store=store, session_id=sid, project_id=project, user_id=user,
                pipeline_type=pipeline_type, options=options), new=True)

    _finish(run_async(go), as_json, app, g.store)


def submit_cmd(
    ctx: typer.Context,
    app: AppArg,
    input: InputOpt = None,
    session_id: Annotated[str | None, typer.Option("--session-id", help="Id for the new session.")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Project id.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="User id.")] = None,
    pipeline_type: Annotated[str | None, typer.Option("--type", help="Pipeline type (free text).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Store a PENDING session for a worker to run, and print its id."""
    g = globals_of(ctx)
    pipeline = load_pipeline(app)
    value = parse_json_arg(input, what="--input")

    async def go() -> str:
        async with open_cli_store(g) as store:
            return await submit(pipeline, value, store=store, session_id=session_id, project_id=project,
                                user_id=user, pipeline_type=pipeline_type)

    sid = run_async(go)
    if as_json:
        emit_json({"session_id": sid, "status": SessionStatus.PENDING})
    else:
        sys.stdout.write(sid + "\n")


def resume_cmd(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="Session id.")],
    app: Annotated[str, typer.Option("--app", "-a", help="APP:PIPELINE that started the session.")],
    force: Annotated[bool, typer.Option("--force", help="Past the redrive limit, clearing needs-human, and "
                                        "despite a pipeline version mismatch.")] = False,
    concurrency: ConcurrencyOpt = 16,
    lease: LeaseOpt = None,
    agent_limit: AgentLimitOpt = None,
    progress_interval: ProgressOpt = None,
    no_cache: NoCacheOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Claim a session and run what is left (completed kept); exit 1 if it ends FAILED, 6 if it waits."""
    g = globals_of(ctx)
    pipeline = load_pipeline(app)
    options = _options(concurrency, _knobs(lease, agent_limit, progress_interval, [pipeline]), no_cache=no_cache)

    async def go() -> Outcome:
        async with open_cli_store(g) as store:
            return await _watched(store, session, as_json, lambda: resume(
                pipeline, session, store=store, force=force, options=options))

    _finish(run_async(go), as_json, app, g.store)


def fork_cmd(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="Session to fork.")],
    from_task: Annotated[str, typer.Option("--from", help="Re-run this task and everything downstream.")],
    app: Annotated[str | None, typer.Option("--app", "-a", help="APP:PIPELINE: use the current code's DAG "
                                            "(needed with --run).")] = None,
    new_session_id: Annotated[str | None, typer.Option("--session-id", help="Id of the new session.")] = None,
    run_now: Annotated[bool, typer.Option("--run", help="Run the fork here instead of leaving it to a "
                                          "worker.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """New session keeping the outputs upstream of TASK; re-runs TASK and its dependents."""
    g = globals_of(ctx)
    if run_now and app is None:
        raise ValidationError("fork --run needs --app APP:PIPELINE to run the new session")
    pipeline = load_pipeline(app) if app else None

    async def go() -> tuple[str, Outcome | None]:
        async with open_cli_store(g) as store:
            new_id = await fork_session(store, session, from_task, pipeline=pipeline, new_session_id=new_session_id)
            if not run_now or pipeline is None:
                return new_id, None
            return new_id, await _watched(store, new_id, as_json, lambda: resume(pipeline, new_id, store=store))

    new_id, result = run_async(go)
    if result is not None:
        _finish(result, as_json, app or "", g.store)
    elif as_json:
        emit_json({"session_id": new_id, "forked_from": session, "from_task": from_task,
                   "status": SessionStatus.PENDING})
    else:
        sys.stdout.write(new_id + "\n")


def worker_cmd(
    ctx: typer.Context,
    apps: AppsOpt,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Sessions at once.")] = 4,
    max_sessions: Annotated[int | None, typer.Option("--max-sessions", min=1, help="Exit after claiming "
                                                     "this many sessions (and finishing them).")] = None,
    idle_exit: Annotated[str | None, typer.Option("--idle-exit", help="Exit after this long with nothing to "
                                                  "do, e.g. 30s.")] = None,
    worker_id: Annotated[str | None, typer.Option("--worker-id", help="Owner id in leases "
                                                  "(default host-pid-random).")] = None,
    poll: Annotated[str, typer.Option("--poll-interval", help="How often to look for work.")] = "1s",
    grace: Annotated[str, typer.Option("--grace", help="On SIGTERM/SIGINT, how long running sessions may "
                                       "finish before they are stopped and released.")] = "10s",
    lease: LeaseOpt = None,
    agent_limit: Annotated[list[str] | None, typer.Option("--agent-limit", metavar="AGENT=N", help="At most N "
                                                          "agents of that name at once across all the sessions "
                                                          "this worker runs (repeat, or comma-separate).")] = None,
    progress_interval: ProgressOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No line per claimed and finished session.")]
    = False,
    no_cache: NoCacheOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Claim and run submitted, abandoned and due sessions until SIGTERM/SIGINT.

    The first signal stops claiming, lets running sessions finish within --grace, then
    cancels and releases them so another worker takes them at once. A second signal
    exits at once (held sessions are picked up when their lease expires).
    """
    g = globals_of(ctx)
    pipelines = load_pipelines(apps)
    idle = parse_duration(idle_exit, what="--idle-exit") if idle_exit is not None else None
    poll_s = parse_duration(poll, what="--poll-interval")
    grace_s = parse_duration(grace, what="--grace")
    if poll_s <= 0:
        raise ValidationError("--poll-interval must be > 0")
    knobs = _knobs(lease, agent_limit, progress_interval, list(pipelines))
    options = knobs.options(RunOptions(worker_id=worker_id, cache=not no_cache), per_session_limits=False)
    limits = knobs.worker_limits()
    forced: list[int] = []
    lines = None if quiet else SessionLines(err_console if as_json else console)

    async def go() -> WorkerReport | None:
        async with open_cli_store(g) as store:
            worker = Worker(store, pipelines, worker_id=worker_id, concurrency=concurrency, options=options,
                            poll_interval=poll_s, grace=grace_s, limits=limits, listener=lines,
                            schedule_interval=min(5.0, poll_s))
            reports: list[WorkerReport] = []
            async with anyio.create_task_group() as tg:

                async def on_signals() -> None:
                    with anyio.open_signal_receiver(signals.SIGTERM, signals.SIGINT) as received:
                        async for signum in received:
                            if not worker.stopping:
                                err_console.print(f"worker {worker.worker_id}: {signals.Signals(signum).name}: "
                                                  f"stopping (again to force)", highlight=False)
                                worker.stop()
                            else:
                                forced.append(signum)
                                tg.cancel_scope.cancel()
                                return

                tg.start_soon(on_signals)
                reports.append(await worker.run(max_sessions=max_sessions, idle_exit=idle))
                tg.cancel_scope.cancel()
            return reports[0] if reports else None

    report = run_async(go)
    if forced or report is None:
        err_console.print("worker forced to exit; sessions it held resume when their lease expires",
                          highlight=False)
        raise typer.Exit(EXIT_FAILED)
    if as_json:
        emit_json(report)
    else:
        console.print(f"worker {report.worker_id}: {len(report.results)} session(s) run, "
                      f"{len(report.released)} released, {len(report.errors)} error(s)", highlight=False)
        for sid, status in sorted(report.results.items()):
            console.print(f"  {sid} {status}", highlight=False)
        for sid, error in sorted(report.errors.items()):
            console.print(f"  {sid} error: {error}", style="red", highlight=False)
    raise typer.Exit(EXIT_OK if not report.errors else EXIT_FAILED)


def resume_failed_cmd(
    ctx: typer.Context,
    apps: AppsOpt,
    older_than: Annotated[str, typer.Option("--older-than", help="Only sessions not updated for this long.")]
    = "1h",
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many candidates.")] = 100,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Sessions resumed at "
                                             "once.")] = 4,
    max_redrives: Annotated[int | None, typer.Option("--max-redrives", min=0, help="Flag needs-human after "
                                                     "this many redrives (default: each session's own "
                                                     "limit).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be resumed; change "
                                          "nothing.")] = False,
    lease: LeaseOpt = None,
    agent_limit: AgentLimitOpt = None,
    progress_interval: ProgressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resume FAILED and abandoned sessions (a cron's job); exit 1 if any resume failed.

    Safe to run from many machines at once: each session is claimed by one sweep.
    Sessions past their redrive limit are flagged needs-human and left alone.
    """
    g = globals_of(ctx)
    pipelines = load_pipelines(apps)
    bound = parse_duration(older_than, what="--older-than")
    options = _knobs(lease, agent_limit, progress_interval, list(pipelines)).options()

    async def go() -> ResumeReport:
        async with open_cli_store(g) as store:
            return await resume_failed(store, pipelines, older_than=bound, limit=limit, concurrency=concurrency,
                                       max_redrives=max_redrives, dry_run=dry_run, options=options)

    report = run_async(go)
    if as_json:
        emit_json({**_report_dict(report), "ok": report.ok})
    else:
        title = "resume-failed (dry run)" if report.dry_run else "resume-failed"
        console.print(f"{title}: {len(report.candidates)} candidate(s), {len(report.resumed)} resumed, "
                      f"{len(report.skipped)} skipped, {len(report.flagged)} flagged needs-human, "
                      f"{len(report.errors)} error(s)", highlight=False)
        for label, items in (("resumed", report.resumed), ("skipped", report.skipped),
                             ("needs-human", report.flagged), ("error", report.errors)):
            for sid, what in sorted(items.items()):
                console.print(f"  {label:<11} {sid}: {what}", highlight=False)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


def _report_dict(report: ResumeReport) -> dict[str, Any]:
    return {"dry_run": report.dry_run, "candidates": report.candidates, "resumed": report.resumed,
            "skipped": report.skipped, "flagged": report.flagged, "errors": report.errors}


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
    app.command("submit")(submit_cmd)
    app.command("resume")(resume_cmd)
    app.command("fork")(fork_cmd)
    app.command("worker")(worker_cmd)
    app.command("resume-failed")(resume_failed_cmd)

