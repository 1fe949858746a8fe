"""Commands that read: status, list, events, graph, projects (and metrics, from cli/metrics.py).

Each opens the store read-only (`open_cli_store(read_only=True)`): none of them writes,
so a SQLite file is read with `mode=ro` and never waits for a writer's lock.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.apps import load_pipeline
from orchestrator.scheduler.resources import WAITING_FOR_RESOURCE
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
from orchestrator.cli.metrics import metrics_cmd
from orchestrator.durations import format_duration, parse_duration
from orchestrator.errors import ConfigError, ValidationError
from orchestrator.graph import RENDER_FORMATS, render
from orchestrator.store import (
    EVENT_KINDS,
    Event,
    Progress,
    OwnerKind,
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
            prog += f" {t.progress.phase}" + (f" ({t.progress.step})" if t.progress.phase == WAITING_FOR_RESOURCE else "")
        err = f"{t.last_error.type.rsplit('.', 1)[-1]}: {t.last_error.message}" if t.last_error else ""
        add_row(table, tid, t.agent, status_text(t.status.value), f"{t.attempt}/{t.max_attempts}",
                format_duration(t.duration), prog, err[:200])
    return table


async def _view(store: Store, snap: SessionSnapshot) -> tuple[Table, dict[str, Any]]:
    """The table and the JSON of a snapshot, with what its waiting tasks wait for."""
    waits, links = task_waits(snap), await children_view(store, snap)
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


def _event_json(e: Event) -> dict[str, Any]:
    """An event as JSON: `at` in ISO 8601 UTC (microseconds), `at_epoch` the same time in epoch seconds."""
    iso = datetime.fromtimestamp(e.at, tz=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return {**jsonable(e), "at": iso, "at_epoch": e.at}


def _closes(e: Event) -> bool:
    """Whether `e` is the last event of a session's run: its `end`, or a cancel that ended it at once."""
    return e.kind == "end" or (e.kind == "cancel" and e.data.get("ended") is True)


#: How long `--follow` waits, once the session has ended, for the event that closes its
#: history: the runner writes `end` right after the session's final write.
_END_GRACE_S = 10.0
_POLL_S = 1.0

_EVENTS_SHORT = "A session's history: created, claims, signals, cancels, retries, needs-human, end, agent logs."
_EVENTS_HELP = (
    "A session's event history, oldest first: what the task items do not already show. Times are UTC: "
    "`YYYY-MM-DD HH:MM:SSZ` in text; with --json, `at` is ISO 8601 (`2025-06-15T12:03:10.123456Z`) and "
    "`at_epoch` the same time in epoch seconds, for sorting and arithmetic; `data` is printed as recorded. "
    "--follow prints new events while the session runs (a runner flushes its events at least every 5 "
    "seconds) and stops once the session has ended and its closing event (`end`, or a cancel that ended it "
    "at once) is printed.\n\nKinds:\n\n"
    + "\n\n".join(f"{kind}: {what}" for kind, what in EVENT_KINDS.items())
)


def events_cmd(
    ctx: typer.Context,
    session: SessionArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events until the "
                                         "session ends.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="Page size of each read.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event (JSON lines); `at` in ISO "
                                          "8601 UTC, `at_epoch` in epoch seconds.")] = False,
) -> None:
    g = globals_of(ctx)

    def show(e: Event) -> None:
        if as_json:
            sys.stdout.write(json.dumps(_event_json(e), sort_keys=True, default=str) + "\n")
        else:
            console.print(_event_line(e), highlight=False, markup=False)
        sys.stdout.flush()

    async def go() -> None:
        async with open_cli_store(g, read_only=True) as store:
            await store.get_session(session)  # SessionNotFoundError before printing anything
            after: str | None = None
            closed = False
            ended_at: float | None = None  # monotonic time the session was first seen ended

            async def drain() -> None:
                nonlocal after, closed
                while True:
                    page = await store.read_events(session, after=after, limit=limit)
                    for e in page.items:
                        show(e)
                        closed = closed or _closes(e)
                    if page.items:
                        after = page.items[-1].cursor
                    if page.cursor is None:
                        return

            while True:
                await drain()
                if not follow or closed:
                    return
                record = await store.get_session(session)
                if record.status.is_final:
                    # Its closing event lands right after the final write; a recorded (external)
                    # session has none, and a runner killed at its end never writes one: bounded.
                    ended_at = ended_at if ended_at is not None else anyio.current_time()
                    if record.owner_kind is OwnerKind.EXTERNAL or anyio.current_time() - ended_at > _END_GRACE_S:
                        await drain()
                        return
                await anyio.sleep(_POLL_S)

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
    app.command("events", help=_EVENTS_HELP, short_help=_EVENTS_SHORT)(events_cmd)
    app.command("graph")(graph_cmd)
    app.command("metrics")(metrics_cmd)  # orchestrator/cli/metrics.py; registered here to keep the order
    app.command("projects")(projects_cmd)
