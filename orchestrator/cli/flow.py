"""Flow-control commands: `limits set/list/show/delete` and `schedule add/list/pause/resume/delete/trigger`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from orchestrator.apps import load_pipeline
from orchestrator.cli._common import (
    add_row,
    console,
    emit_json,
    fmt_time,
    globals_of,
    open_cli_store,
    parse_json_arg,
    run_async,
)
from orchestrator.errors import ValidationError
from orchestrator.schedules import (
    add_schedule,
    delete_schedule,
    flow_store,
    list_schedules,
    next_run,
    pause_schedule,
    resume_schedule,
    trigger_schedule,
)
from orchestrator.store.records.flow import Rate, ResourceLimit, ResourceState, ScheduleRecord

__all__ = ["register"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Resource name, e.g. openai.")]
ScheduleArg = Annotated[str, typer.Argument(metavar="NAME", help="Schedule name.")]

limits_app = typer.Typer(help="Fleet-wide limits of named resources (shared by every worker of the store).",
                         no_args_is_help=True)
schedule_app = typer.Typer(help="Start pipelines on a cron schedule (fired by every worker, once per slot).",
                           no_args_is_help=True)


def _limit_json(state: ResourceState, now: float) -> dict[str, Any]:
    limit = state.limit
    return {"name": limit.name, "concurrency": limit.concurrency, "rate": str(limit.rate) if limit.rate else None,
            "holders": [{"holder": h.holder, "units": h.amount, "lease_left": round(h.lease_until - now, 1)}
                        for h in state.holders],
            "in_use": sum(h.amount for h in state.holders), "recent_starts": state.recent_starts,
            "waiting": [{"holder": w.holder, "priority": w.priority} for w in state.waiters]}


@limits_app.command("set")
def limits_set(
    ctx: typer.Context, name: NameArg,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, help="At most N holders at once across "
                                                    "the fleet.")] = None,
    rate: Annotated[str | None, typer.Option("--rate", help="At most N starts per period, e.g. 500/min, 10/s, "
                                             "5/30s.")] = None,
) -> None:
    """Set a resource's concurrency and/or rate (replacing what was set)."""
    if concurrency is None and rate is None:
        raise ValidationError("limits set needs --concurrency N, --rate N/PERIOD, or both (e.g. --concurrency 20 "
                              "--rate 500/min); to remove limits use `orchestrator limits delete NAME`")
    limit = ResourceLimit(name, concurrency, Rate.parse(rate) if rate else None)

    async def go() -> ResourceLimit:
        async with open_cli_store(globals_of(ctx)) as store:
            return await flow_store(store).set_limit(limit)

    stored = run_async(go)
    console.print(f"resource {stored.name}: concurrency {stored.concurrency or 'unlimited'}, rate "
                  f"{stored.rate or 'unlimited'}", highlight=False)


@limits_app.command("list")
def limits_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every resource with limits: units in use, starts in the current rate window, waiters."""

    async def go() -> tuple[list[ResourceState], float]:
        async with open_cli_store(globals_of(ctx)) as store:
            return await flow_store(store).list_limits(), store.clock.now()

    states, now = run_async(go)
    if as_json:
        emit_json([_limit_json(s, now) for s in states])
        return
    table = Table("resource", "concurrency", "in use", "rate", "starts in window", "waiting")
    for s in states:
        add_row(table, s.limit.name, str(s.limit.concurrency or "-"), str(sum(h.amount for h in s.holders)),
                str(s.limit.rate or "-"), str(s.recent_starts), str(len(s.waiters)))
    console.print(table)


@limits_app.command("show")
def limits_show(ctx: typer.Context, name: NameArg, as_json: JsonOpt = False) -> None:
    """One resource: its limits, current holders (with their lease left) and waiters."""

    async def go() -> tuple[ResourceState, float]:
        async with open_cli_store(globals_of(ctx)) as store:
            return await flow_store(store).resource_state(name), store.clock.now()

    state, now = run_async(go)
    data = _limit_json(state, now)
    if as_json:
        emit_json(data)
        return
    console.print(f"resource {name}: concurrency {data['concurrency'] or 'unlimited'} ({data['in_use']} in use), "
                  f"rate {data['rate'] or 'unlimited'} ({data['recent_starts']} starts in the window)",
                  highlight=False)
    for h in data["holders"]:
        console.print(f"  held by {h['holder']} ({h['units']} unit(s), lease {h['lease_left']}s left)",
                      highlight=False)
    for w in data["waiting"]:
        console.print(f"  waiting: {w['holder']} (P{w['priority']})", highlight=False)


@limits_app.command("delete")
def limits_delete(ctx: typer.Context, name: NameArg) -> None:
    """Remove a resource's limits (it becomes unlimited)."""

    async def go() -> None:
        async with open_cli_store(globals_of(ctx)) as store:
            await flow_store(store).delete_limit(name)

    run_async(go)
    console.print(f"resource {name}: limits removed", highlight=False)


def _schedule_json(record: ScheduleRecord, now: float) -> dict[str, Any]:
    return {"name": record.name, "cron": record.cron, "timezone": record.timezone, "app": record.app,
            "pipeline": record.pipeline, "input": record.input, "catch_up": record.catch_up,
            "max_catch_up": record.max_catch_up, "overlap": record.overlap, "paused": record.paused,
            "last_slot": fmt_time(record.last_slot) if record.last_slot else None,
            "last_session": record.last_session, "next_run": fmt_time(next_run(record, now))}


@schedule_app.command("add")
def schedule_add(
    ctx: typer.Context, name: ScheduleArg,
    cron: Annotated[str, typer.Option("--cron", help="Cron expression, e.g. '0 * * * *' (seconds as a 6th field).")],
    app: Annotated[str, typer.Option("--app", "-a", help="APP:PIPELINE to start.")],
    timezone: Annotated[str, typer.Option("--timezone", help="IANA time zone of the expression.")] = "UTC",
    input_json: Annotated[str | None, typer.Option("--input", help="Session input as JSON, or @file.")] = None,
    catch_up: Annotated[str, typer.Option("--catch-up", help="After an outage: skip, latest or all.")] = "skip",
    max_catch_up: Annotated[int, typer.Option("--max-catch-up", min=1, help="With --catch-up all: at most N "
                                              "missed slots.")] = 10,
    overlap: Annotated[str, typer.Option("--overlap", help="allow, or skip a slot while the previous session "
                                         "is unfinished.")] = "allow",
    as_json: JsonOpt = False,
) -> None:
    """Add a schedule; every `worker` running the pipeline starts one session per slot."""
    pipeline = load_pipeline(app)
    value = parse_json_arg(input_json, what="--input")

    async def go() -> tuple[ScheduleRecord, float]:
        async with open_cli_store(globals_of(ctx)) as store:
            record = await add_schedule(store, name, pipeline, cron=cron, timezone=timezone, input=value, app=app,
                                        catch_up=catch_up, max_catch_up=max_catch_up,  # type: ignore[arg-type]
                                        overlap=overlap)  # type: ignore[arg-type]
            return record, store.clock.now()

    record, now = run_async(go)
    if as_json:
        emit_json(_schedule_json(record, now))
        return
    console.print(f"schedule {name}: {app} at '{cron}' ({timezone}), next run {fmt_time(next_run(record, now))}",
                  highlight=False)


@schedule_app.command("list")
def schedule_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every schedule with its next run and last session."""

    async def go() -> tuple[list[ScheduleRecord], float]:
        async with open_cli_store(globals_of(ctx)) as store:
            return await list_schedules(store), store.clock.now()

    records, now = run_async(go)
    if as_json:
        emit_json([_schedule_json(r, now) for r in records])
        return
    table = Table("schedule", "cron", "timezone", "app", "catch-up", "overlap", "next run", "last session")
    for r in records:
        add_row(table, r.name, r.cron, r.timezone, r.app or r.pipeline, r.catch_up, r.overlap,
                "paused" if r.paused else fmt_time(next_run(r, now)), r.last_session or "-")
    console.print(table)


def _change(ctx: typer.Context, name: str, verb: str) -> None:
    async def go() -> ScheduleRecord | None:
        async with open_cli_store(globals_of(ctx)) as store:
            if verb == "paused":
                return await pause_schedule(store, name)
            if verb == "resumed":
                return await resume_schedule(store, name)
            await delete_schedule(store, name)
            return None

    run_async(go)
    console.print(f"schedule {name}: {verb}", highlight=False)


@schedule_app.command("pause")
def schedule_pause(ctx: typer.Context, name: ScheduleArg) -> None:
    """Start nothing until resumed (slots in between are not caught up)."""
    _change(ctx, name, "paused")


@schedule_app.command("resume")
def schedule_resume(ctx: typer.Context, name: ScheduleArg) -> None:
    """Fire again from now on."""
    _change(ctx, name, "resumed")


@schedule_app.command("delete")
def schedule_delete(ctx: typer.Context, name: ScheduleArg) -> None:
    """Delete a schedule (sessions it started are kept)."""
    _change(ctx, name, "deleted")


@schedule_app.command("trigger")
def schedule_trigger(
    ctx: typer.Context, name: ScheduleArg,
    app: Annotated[str | None, typer.Option("--app", "-a", help="APP:PIPELINE (default: the schedule's).")] = None,
) -> None:
    """Start the schedule's pipeline now (a worker runs it); prints the session id."""

    async def go() -> str:
        async with open_cli_store(globals_of(ctx)) as store:
            record = await flow_store(store).get_schedule(name)
            return await trigger_schedule(store, name, load_pipeline(app or record.app))

    print(run_async(go))


def register(app: typer.Typer) -> None:
    app.add_typer(limits_app, name="limits")
    app.add_typer(schedule_app, name="schedule")
