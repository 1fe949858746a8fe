"""Commands that change a session from outside: signal, approve, reject, cancel."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from orchestrator.cli._common import console, emit_json, globals_of, open_cli_store, parse_json_arg, run_async
from orchestrator.store import SessionRecord

__all__ = ["register"]

SessionArg = Annotated[str, typer.Argument(help="Session id.")]
TaskArg = Annotated[str, typer.Argument(help="Task id (the waiting task).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _send(ctx: typer.Context, session: str, task: str, name: str, payload: Any, as_json: bool) -> None:
    g = globals_of(ctx)

    async def go() -> int:
        async with open_cli_store(g) as store:
            snap = await store.load_session(session)
            snap.task(task)  # TaskNotFoundError naming the known tasks
            return await store.send_signal(session, task, name, payload)

    seq = run_async(go)
    if as_json:
        emit_json({"session_id": session, "task_id": task, "name": name, "signal_seq": seq})
    else:
        console.print(f"signal {name!r} delivered to task {task} of session {session} (sequence {seq}); a worker "
                      f"continues the session", highlight=False)


def signal_cmd(
    ctx: typer.Context,
    session: SessionArg,
    task: TaskArg,
    name: Annotated[str, typer.Argument(help="Signal name the task waits for.")],
    data: Annotated[str, typer.Option("--data", "-d", help="Payload as JSON, or @file.json.")] = "null",
    as_json: JsonOpt = False,
) -> None:
    """Deliver a signal (with a JSON payload) to a task waiting in a session."""
    _send(ctx, session, task, name, parse_json_arg(data, what="--data"), as_json)


def approve_cmd(
    ctx: typer.Context,
    session: SessionArg,
    task: TaskArg,
    name: Annotated[str, typer.Option("--name", help="Signal name.")] = "approval",
    comment: Annotated[str | None, typer.Option("--comment", help="Note stored with the decision.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who approves.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a waiting approval task: sends {"approved": true, ...}."""
    payload: dict[str, Any] = {"approved": True}
    if comment:
        payload["comment"] = comment
    if by:
        payload["by"] = by
    _send(ctx, session, task, name, payload, as_json)


def reject_cmd(
    ctx: typer.Context,
    session: SessionArg,
    task: TaskArg,
    name: Annotated[str, typer.Option("--name", help="Signal name.")] = "approval",
    reason: Annotated[str | None, typer.Option("--reason", help="Why it is rejected.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who rejects.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a waiting approval task: sends {"approved": false, "reason": ...}."""
    payload: dict[str, Any] = {"approved": False, "reason": reason or "rejected"}
    if by:
        payload["by"] = by
    _send(ctx, session, task, name, payload, as_json)


def cancel_cmd(
    ctx: typer.Context,
    session: SessionArg,
    reason: Annotated[str, typer.Option("--reason", help="Stored with the cancel request.")] = "cancelled from "
    "the command line",
    as_json: JsonOpt = False,
) -> None:
    """Cancel a session: at once if nobody holds it, else its owner stops at its next heartbeat."""
    g = globals_of(ctx)

    async def go() -> SessionRecord:
        async with open_cli_store(g) as store:
            return await store.request_cancel(session, reason)

    record = run_async(go)
    if as_json:
        emit_json(record)
    elif record.status.value == "CANCELLED":
        console.print(f"session {session} CANCELLED", highlight=False)
    else:
        console.print(f"cancel requested for session {session} ({record.status.value}, held by "
                      f"{record.lease_owner or '-'}); its owner stops it at the next heartbeat", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("signal")(signal_cmd)
    app.command("approve")(approve_cmd)
    app.command("reject")(reject_cmd)
    app.command("cancel")(cancel_cmd)
