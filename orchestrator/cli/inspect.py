"""Commands that read: status, list, events, graph, metrics, projects.

Each opens the store read-only (`open_cli_store(read_only=True)`): none of them writes,
so a SQLite file is read with `mode=ro` and never waits for a writer's lock.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.apps import load_pipeline
from orchestrator.cli._children import children_view, graph_note
from orchestrator.cli._common import (
    add_row,
    console,
    decode_cursor,
    emit_json,
    encode_cursor,
    fmt_time,
    globals_of,
    jsonable,
    open_cli_store,
    run_async,
    status_text,
)
from orchestrator.cli._waits import TaskWait, describe_wait, task_waits
from orchestrator.durations import format_duration, parse_duration
from orchestrator.errors import ConfigError, ValidationError
from orchestrator.graph import RENDER_FORMATS, render
from orchestrator.metrics import (
    SESSION_METRIC,
    agent_stats,
    custom_stats,
    day_of,
    project_stats,
)
from orchestrator.store import (
    Event,
    MetricSummary,
    Progress,
    ProjectStats,
    SessionRecord,
    SessionSnapshot,
    SessionStatus,
    Store,
    UserProjectRecord,
)

__all__ = ["register"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SessionArg = Annotated[str, typer.Argument(help="Session id.")]


def _snapshot_json(snap: SessionSnapshot, waits: Sequence[TaskWait] = ()) -> dict[str, Any]:
    return {
        "session": jsonable(snap.session),
        "tasks": {tid: jsonable(t) for tid, t in snap.tasks.items()},
        "edges": [{"task_id": e.task_id, "depends_on": e.depends_on} for e in snap.edges],
        "signals": [jsonable(s) for s in snap.signals.values()],
        "waiting": [{"task_id": w.task_id, "signal": w.signal, "until": w.until} for w in waits],
    }


def _status_view(snap: SessionSnapshot, waits: Sequence[TaskWait] = (), now: float | None = None) -> Table:
    s = snap.session
    done = Progress.of_tasks(Counter(t.status for t in snap.tasks.values()))
    title = Text.assemble(f"{s.session_id}  {s.pipeline} v{s.pipeline_version}  ",
                          status_text(s.status.value, "bold"), f"  {done.current}/{done.total} tasks completed")
    caption = [Text(f"created {fmt_time(s.created_at)}"), Text(f"updated {fmt_time(s.updated_at)}"),
               Text(f"fence {s.fence}"), Text(f"redrives {s.redrive_count}/{s.max_redrives}")]
    if s.lease_owner:
        caption.append(Text(f"owner {s.lease_owner} until {fmt_time(s.lease_expires_at)}"))
    if s.project_id:
        caption.append(Text(f"project {s.project_id}"))
    if s.needs_human:
        caption.append(Text(f"needs-human: {s.needs_human_reason}", style="red"))
    if s.reason:
        caption.append(Text(f"reason: {s.reason}"))
    caption.extend(Text(describe_wait(w, s.updated_at if now is None else now), style="yellow") for w in waits)
    table = Table(title=title, caption=Text("  ").join(caption), title_justify="left", caption_justify="left")
    for col in ("task", "agent", "status", "attempts", "duration", "progress", "last error"):
        table.add_column(col, overflow="fold")
    for tid in sorted(snap.tasks, key=lambda t: (snap.tasks[t].started_at or float("inf"), t)):
        t = snap.tasks[tid]
        prog = f"{t.progress.current}/{t.progress.total}" if t.progress.total else "-"
        if t.progress.phase:
            prog += f" {t.progress.phase}"
        err = f"{t.last_error.type.rsplit('.', 1)[-1]}: {t.last_error.message}" if t.last_error else ""
        add_row(table, tid, t.agent, status_text(t.status.value), f"{t.attempt}/{t.max_attempts}",
                format_duration(t.duration), prog, err[:200])
    return table


async def _view(store: Store, snap: SessionSnapshot) -> tuple[Table, dict[str, Any]]:
    """The table and the JSON of a snapshot, with what its waiting tasks wait for."""
    waits, links = await task_waits(store, snap), await children_view(store, snap)
    table = links.extend(_status_view(snap, waits, store.clock.now()))
    return table, {**_snapshot_json(snap, waits), **links.json()}


def status_cmd(
    ctx: typer.Context,
    session: SessionArg,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until the session is COMPLETED, FAILED "
                                        "or CANCELLED (through WAITING: it follows a resume).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """A session and its tasks: status, attempts, durations, progress, last error."""
    g = globals_of(ctx)

    async def go() -> None:
        async with open_cli_store(g, read_only=True) as store:
            snap = await store.load_session(session)
            if not watch or snap.session.status.is_final:
                table, view = await _view(store, snap)
                if as_json:
                    emit_json(view)
                else:
                    console.print(table, highlight=False)
                return
            await _watch(store, session, snap, as_json)

    run_async(go)


async def _watch(store: Store, session: str, snap: SessionSnapshot, as_json: bool) -> None:
    """Print the session each time it changes (live on a terminal) until it is final."""
    if as_json or not sys.stdout.isatty():
        last: Any = None
        while True:
            table, view = await _view(store, snap)
            if view != last:
                if as_json:
                    sys.stdout.write(json.dumps(view, sort_keys=True, default=str) + "\n")
                    sys.stdout.flush()
                else:
                    console.print(table, highlight=False)
                    sys.stdout.flush()
                last = view
            if snap.session.status.is_final:
                return
            await anyio.sleep(1.0)
            snap = await store.load_session(session)
    with Live((await _view(store, snap))[0], console=console, refresh_per_second=4) as live:
        while not snap.session.status.is_final:
            await anyio.sleep(1.0)
            snap = await store.load_session(session)
            live.update((await _view(store, snap))[0])


#: Store pages one `list --user/--type` call reads at most to fill its page: `--user`/`--type`
#: read their index (never a Scan) and one `--status` (or `--needs-human`) is checked by the
#: store on each session read, so a store page may be short; several statuses and
#: `--since`/`--older-than` are checked here.
_FILL_READS = 10


def list_cmd(
    ctx: typer.Context,
    status: Annotated[list[SessionStatus] | None, typer.Option("--status", "-s", case_sensitive=False,
                                                               help="Only this status (repeatable; default "
                                                               "all).")] = None,
    project: Annotated[str | None, typer.Option("--project", help="A project's sessions, newest "
                                                "first.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="A user's sessions, newest first (the user "
                                             "index).")] = None,
    pipeline_type: Annotated[str | None, typer.Option("--type", help="A pipeline type's sessions, newest first "
                                                      "(the type index); with --user, both must match.")] = None,
    needs_human: Annotated[bool, typer.Option("--needs-human", help="Only FAILED sessions flagged for a "
                                              "person.")] = False,
    since: Annotated[str | None, typer.Option("--since", help="Updated within this long, e.g. 24h.")] = None,
    older_than: Annotated[str | None, typer.Option("--older-than", help="Not updated for this long, e.g. "
                                                   "1h.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="Page size.")] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor", help="Next-page cursor printed by the previous "
                                               "call.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Sessions by status (oldest first) or by project, user or type (newest first); prints the next cursor."""
    g = globals_of(ctx)
    statuses = [SessionStatus.FAILED] if needs_human else list(status or SessionStatus)
    since_s = parse_duration(since, what="--since") if since else None
    older_s = parse_duration(older_than, what="--older-than") if older_than else None
    by_owner = user is not None or pipeline_type is not None
    if by_owner and project is not None:
        raise ValidationError("--project cannot be combined with --user or --type: each reads its own index; "
                              "list by one of them")

    async def go() -> tuple[list[SessionRecord], str | None]:
        async with open_cli_store(g, read_only=True) as store:
            now = store.clock.now()
            state = decode_cursor(cursor) if cursor else {}
            items: list[SessionRecord] = []
            next_state: dict[str, Any] | None = None
            if project is not None:
                page = await store.list_project_sessions(project, limit=limit, cursor=state.get("c"))
                items = list(page.items)
                next_state = {"p": project, "c": page.cursor} if page.cursor else None
            elif by_owner:
                inner = state.get("c")
                for _ in range(_FILL_READS):
                    page = await store.find_sessions(
                        user_id=user, pipeline_type=pipeline_type, status=statuses[0] if len(statuses) == 1 else None,
                        limit=limit - len(items), cursor=inner)
                    items.extend(page.items)
                    inner = page.cursor
                    if inner is None or len(items) >= limit:
                        break
                next_state = {"c": inner} if inner else None
            else:
                index = int(state.get("i", 0))
                inner = state.get("c")
                while index < len(statuses) and len(items) < limit:
                    page = await store.list_sessions(
                        statuses[index], updated_before=(now - older_s) if older_s is not None else None,
                        limit=limit - len(items), cursor=inner)
                    items.extend(page.items)
                    if page.cursor:
                        inner = page.cursor
                        if len(items) >= limit:
                            next_state = {"i": index, "c": inner}
                            break
                    else:
                        index, inner = index + 1, None
                        if len(items) >= limit and index < len(statuses):
                            next_state = {"i": index, "c": None}
            scoped = project is not None or by_owner  # read by an index that does not hold the status
            keep = [
                s for s in items
                if (not needs_human or s.needs_human)
                and (since_s is None or s.updated_at >= now - since_s)
                and (not scoped or status is None or s.status in statuses)
                and (not scoped or older_s is None or s.updated_at <= now - older_s)
            ]
            return keep, encode_cursor(next_state) if next_state else None

    sessions, next_cursor = run_async(go)
    if as_json:
        emit_json({"sessions": sessions, "cursor": next_cursor})
        return
    table = Table(title_justify="left")
    columns = (("session", "pipeline", "type", "user", "status", "progress", "created", "note") if by_owner
               else ("session", "pipeline", "status", "progress", "updated", "project", "note"))
    for col in columns:
        table.add_column(col, overflow="fold")
    for s in sessions:
        note = f"needs-human: {s.needs_human_reason}" if s.needs_human else (s.reason or "")
        progress = f"{s.progress.current}/{s.progress.total}"
        if by_owner:
            add_row(table, s.session_id, s.pipeline, s.pipeline_type or "-", s.user_id or "-",
                    status_text(s.status.value), progress, fmt_time(s.created_at), note[:120])
        else:
            add_row(table, s.session_id, s.pipeline, status_text(s.status.value), progress, fmt_time(s.updated_at),
                    s.project_id or "-", note[:120])
    console.print(table, highlight=False)
    console.print(f"{len(sessions)} session(s)" + (f"; next page: --cursor {next_cursor}" if next_cursor else ""),
                  highlight=False)


def _event_line(e: Event) -> str:
    task = f" {e.task_id}" if e.task_id else ""
    return f"{fmt_time(e.at)} {e.level:<7} {e.kind:<8}{task} {e.message}"


def events_cmd(
    ctx: typer.Context,
    session: SessionArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events until the "
                                         "session ends.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Page size of each read.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event (JSON lines).")] = False,
) -> None:
    """A session's event history (retries, leases, signals, cancels, agent logs)."""
    g = globals_of(ctx)

    def show(e: Event) -> None:
        if as_json:
            sys.stdout.write(json.dumps(jsonable(e), sort_keys=True, default=str) + "\n")
        else:
            console.print(_event_line(e), highlight=False, markup=False)
        sys.stdout.flush()

    async def go() -> None:
        async with open_cli_store(g, read_only=True) as store:
            await store.get_session(session)  # SessionNotFoundError before printing anything
            after: str | None = None
            while True:
                page = await store.read_events(session, after=after, limit=limit)
                for e in page.items:
                    show(e)
                if page.items:
                    after = page.items[-1].cursor
                if page.cursor is not None:
                    continue
                if not follow or (await store.get_session(session)).status.is_final:
                    # one last read: events flushed with the final session write
                    if follow:
                        for e in (await store.read_events(session, after=after, limit=limit)).items:
                            show(e)
                    return
                await anyio.sleep(1.0)

    run_async(go)


def graph_cmd(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="SESSION|APP:PIPELINE", help="A session id (statuses "
                                          "coloured) or a pipeline to draw.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help=f"One of {', '.join(RENDER_FORMATS)}.")] = "mermaid",
) -> None:
    """Draw a session's DAG (status-coloured) or a pipeline's, as Mermaid, Graphviz dot or text."""
    g = globals_of(ctx)
    if fmt not in RENDER_FORMATS:
        raise ValidationError(f"--format {fmt!r} is not supported; use one of {', '.join(RENDER_FORMATS)}")
    if ":" in target:
        try:
            sys.stdout.write(load_pipeline(target).render(fmt))  # type: ignore[arg-type]
            return
        except ConfigError as exc:
            if "was not found" not in str(exc):
                raise

    async def go() -> str:
        async with open_cli_store(g, read_only=True) as store:
            snap = await store.load_session(target)
            return render(snap.tasks, snap.edges, format=fmt) + graph_note(snap, fmt)  # type: ignore[arg-type]

    sys.stdout.write(run_async(go))


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return ">4.7h"
    return format_duration(value / 1000.0)


def _metric_row(s: MetricSummary) -> dict[str, Any]:
    return {"agent": s.agent, "hour": s.hour if s.hour >= 0 else None, "count": s.count, "errors": s.errors,
            "error_rate": round(s.error_rate, 4), "mean_ms": s.mean_ms, "p50_ms": s.percentile(0.5),
            "p95_ms": s.percentile(0.95), "min_ms": s.min_ms, "max_ms": s.max_ms}


def _custom_row(s: MetricSummary) -> dict[str, Any]:
    """A custom metric: a duration (recorded with a unit) or a sum of values."""
    if any(s.buckets):
        return {"name": s.name, "agent": s.agent, "kind": "duration", "count": s.count, "errors": s.errors,
                "sum_ms": s.sum_ms, "mean_ms": s.mean_ms, "p50_ms": s.percentile(0.5),
                "p95_ms": s.percentile(0.95)}
    return {"name": s.name, "agent": s.agent, "kind": "value", "count": s.count, "errors": s.errors,
            "sum": s.sum_ms, "mean": s.sum_ms / s.count if s.count else None}


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


@dataclass(frozen=True, slots=True)
class _Metrics:
    """What `metrics` shows for one day (agents limited to a project's when asked)."""

    day: str
    hourly: list[MetricSummary]
    daily: list[MetricSummary]
    custom: list[MetricSummary]
    projects: list[ProjectStats]
    agents_of: str | None = None  # the project whose tasks these count


def metrics_cmd(
    ctx: typer.Context,
    date: Annotated[str | None, typer.Option("--date", help="UTC day YYYY-MM-DD (default today).")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent.")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Only this project: its aggregates, its "
                                                "sessions' tasks per agent, its agents' custom metrics.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per agent and hour: count, error rate, mean, p50, p95; custom metrics; and project aggregates."""
    g = globals_of(ctx)
    if date is not None:
        import datetime as dt

        try:
            dt.date.fromisoformat(date)
        except ValueError:
            raise ValidationError(f"--date {date!r} is not a date; use YYYY-MM-DD (UTC)") from None

    async def go() -> _Metrics:
        async with open_cli_store(g, read_only=True) as store:
            day = date or day_of(store.clock.now())[0]
            hourly = await agent_stats(store, day, agent, by_hour=True, project=project)
            daily = await agent_stats(store, day, agent, project=project)
            custom = await custom_stats(store, day, agent)
            if project is None:
                rows = await store.read_metrics(day, name=SESSION_METRIC)
                projects = sorted({r.agent.removeprefix("project:") for r in rows if r.agent.startswith("project:")})
                return _Metrics(day, hourly, daily, custom, [await project_stats(store, p, [day]) for p in projects])
            agents = {s.agent for s in daily}  # custom metrics are per agent: keep this project's agents'
            return _Metrics(day, hourly, daily, [s for s in custom if s.agent in agents],
                            [await project_stats(store, project, [day])], agents_of=project)

    m = run_async(go)
    if as_json:
        emit_json({"date": m.day, "agents": [_metric_row(s) for s in m.daily],
                   "hourly": [_metric_row(s) for s in m.hourly], "metrics": [_custom_row(s) for s in m.custom],
                   "projects": [{**jsonable(p), "success_rate": round(p.success_rate, 4)} for p in m.projects]})
        return
    title = f"agents on {m.day} (UTC)"
    if m.agents_of is not None:
        title = f"agents of project {m.agents_of} on {m.day} (UTC)"
    table = Table(title=Text(title), title_justify="left")
    for col in ("agent", "hour", "count", "errors", "error rate", "mean", "p50", "p95"):
        table.add_column(col, justify="left" if col == "agent" else "right")
    by_agent: dict[str, list[MetricSummary]] = {}
    for s in m.hourly:
        by_agent.setdefault(s.agent, []).append(s)
    for total in m.daily:
        for s in [*by_agent.get(total.agent, []), total]:
            r = _metric_row(s)
            add_row(table, s.agent, "day" if r["hour"] is None else f"{s.hour:02d}", str(s.count), str(s.errors),
                    f"{100 * s.error_rate:.1f}%", _ms(s.mean_ms), _ms(r["p50_ms"]), _ms(r["p95_ms"]),
                    end_section=r["hour"] is None)
    console.print(table, highlight=False)
    if m.custom:
        ct = Table(title=Text(f"custom metrics on {m.day} (UTC)"), title_justify="left")
        for col in ("metric", "agent", "count", "errors", "sum", "mean", "p50", "p95"):
            ct.add_column(col, justify="left" if col in ("metric", "agent") else "right")
        for s in m.custom:
            r = _custom_row(s)
            if r["kind"] == "duration":
                add_row(ct, s.name, s.agent, str(s.count), str(s.errors), _ms(r["sum_ms"]), _ms(r["mean_ms"]),
                        _ms(r["p50_ms"]), _ms(r["p95_ms"]))
            else:
                add_row(ct, s.name, s.agent, str(s.count), str(s.errors), _number(r["sum"]), _number(r["mean"]),
                        "-", "-")
        console.print(ct, highlight=False)
    if m.projects:
        pt = Table(title=Text(f"projects on {m.day} (UTC)"), title_justify="left")
        for col in ("project", "sessions", "completed", "failed", "blocked", "success rate", "mean duration"):
            pt.add_column(col, justify="left" if col == "project" else "right")
        for p in m.projects:
            add_row(pt, p.project_id, str(p.total), str(p.completed), str(p.failed), str(p.blocked),
                    f"{100 * p.success_rate:.1f}%", _ms(p.mean_duration_ms))
        console.print(pt, highlight=False)


def projects_cmd(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="User id.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="Page size.")] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor", help="Next-page cursor printed by the previous "
                                               "call.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A user's project history (name, tech stack, size, downloads), by project id."""
    g = globals_of(ctx)

    async def go() -> tuple[list[UserProjectRecord], str | None]:
        async with open_cli_store(g, read_only=True) as store:
            page = await store.list_user_projects(user, limit=limit, cursor=cursor)
            return list(page.items), page.cursor

    found, next_cursor = run_async(go)
    if as_json:
        emit_json({"projects": found, "cursor": next_cursor})
        return
    table = Table(title_justify="left")
    for col in ("project", "name", "tech stack", "size", "downloads", "last accessed", "file"):
        table.add_column(col, overflow="fold")
    for p in found:
        add_row(table, p.project_id, p.project_name, ", ".join(p.tech_stack) or "-", f"{p.size_mb:g} MB",
                str(p.download_count), fmt_time(p.last_accessed), p.file_path or "-")
    console.print(table, highlight=False)
    console.print(f"{len(found)} project(s) of user {user}"
                  + (f"; next page: --cursor {next_cursor}" if next_cursor else ""), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("status")(status_cmd)
    app.command("list")(list_cmd)
    app.command("events")(events_cmd)
    app.command("graph")(graph_cmd)
    app.command("metrics")(metrics_cmd)
    app.command("projects")(projects_cmd)
