"""Commands that change a session from outside: signal, approve, reject, cancel.

A signal nothing could ever read (its task COMPLETED, its session COMPLETED or
CANCELLED) is refused before anything is written, as Temporal refuses a signal to a
closed workflow. Any other is stored, and the command says what it will do: wake the
waiting task, or wait for the task to ask for that name (a running task, a task waiting
for another name, a failed task of a session that may be resumed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from orchestrator.scheduler.children import cancel_session
from orchestrator.cli._common import console, emit_json, globals_of, open_cli_store, parse_json_arg, run_async
from orchestrator.errors import SessionStateError
from orchestrator.store import SessionRecord, SessionStatus, Store, TaskStatus

__all__ = ["Sent", "approval_payload", "deliver_signal", "describe_cancel", "describe_signal", "register", "rejection_payload"]

SessionArg = Annotated[str, typer.Argument(help="Session id.")]
TaskArg = Annotated[str, typer.Argument(help="Task id (the waiting task).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


_FINAL_SESSION = (SessionStatus.COMPLETED, SessionStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class Sent:
    """What sending a signal did, as the task stood when it was sent."""

    seq: int
    task_status: TaskStatus
    session_status: SessionStatus
    waiting_for: str | None  # the signal the task waits for, as its record says (WAITING only)

    def awaited(self, name: str) -> bool | None:
        """Whether the task waits for `name` now: None when it waits but its record names no signal."""
        if self.task_status is not TaskStatus.WAITING:
            return False
        return None if self.waiting_for is None else self.waiting_for == name


async def deliver_signal(store: Store, session: str, task: str, name: str, payload: Any) -> Sent:
    """Store a signal unless nothing could ever read it (SessionStateError); what `signal`,
    `approve`, `reject` and the dashboard's buttons all do."""
    snap = await store.load_session(session)
    record = snap.task(task)  # TaskNotFoundError naming the known tasks
    status = snap.session.status
    if record.status is TaskStatus.COMPLETED:
        raise SessionStateError.signal_unread(session, task, f"task {task} of session {session}", "COMPLETED")
    if status in _FINAL_SESSION:
        raise SessionStateError.signal_unread(session, task, f"session {session}", status.value)
    waiting_for = record.waiting_for if record.status is TaskStatus.WAITING else None
    seq = await store.send_signal(session, task, name, payload)
    return Sent(seq, record.status, status, waiting_for)


def _send(ctx: typer.Context, session: str, task: str, name: str, payload: Any, as_json: bool) -> None:
    """Store a signal, refusing one nothing could read, and say truthfully what it will do."""
    g = globals_of(ctx)

    async def go() -> Sent:
        async with open_cli_store(g) as store:
            return await deliver_signal(store, session, task, name, payload)

    sent = run_async(go)
    if as_json:
        emit_json({"session_id": session, "task_id": task, "name": name, "signal_seq": sent.seq,
                   "task_status": sent.task_status, "waiting_for": sent.waiting_for, "awaited": sent.awaited(name)})
        return
    console.print(describe_signal(sent, session, task, name), highlight=False)


def describe_signal(sent: Sent, session: str, task: str, name: str) -> str:
    """What a delivered signal will do, in one sentence."""
    stored = f"signal {name!r} stored for task {task} of session {session} (sequence {sent.seq})"
    awaited = sent.awaited(name)
    if awaited:
        return (f"signal {name!r} delivered to waiting task {task} of session {session} (sequence {sent.seq}); "
                + ("its worker continues the task at its next heartbeat" if sent.session_status is
                   SessionStatus.RUNNING else "a worker continues the session"))
    if awaited is None:
        return (f"{stored}; the task is WAITING (for which signal is not recorded): if it waits for {name!r}, "
                f"a worker continues the session")
    if sent.task_status is TaskStatus.WAITING:
        return (f"{stored}, but the task waits for {sent.waiting_for!r}, not {name!r}: nothing reads it unless the "
                f"task waits for {name!r} later (the session is woken once, then waits again)")
    if sent.task_status in (TaskStatus.PENDING, TaskStatus.RUNNING):
        return f"{stored}; the task is {sent.task_status.value}, not waiting: it gets the signal when it waits for {name!r}"
    return (f"{stored}; the task is {sent.task_status.value}: it gets the signal only if the session is resumed and "
            f"the task waits for {name!r}")


def approval_payload(comment: str | None, by: str | None) -> dict[str, Any]:
    """The signal payload of an approval: `{"approved": true}` with the optional note and approver."""
    payload: dict[str, Any] = {"approved": True}
    if comment:
        payload["comment"] = comment
    if by:
        payload["by"] = by
    return payload


def rejection_payload(reason: str | None, by: str | None) -> dict[str, Any]:
    """The signal payload of a rejection: `{"approved": false, "reason": ...}`."""
    payload: dict[str, Any] = {"approved": False, "reason": reason or "rejected"}
    if by:
        payload["by"] = by
    return payload


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
    _send(ctx, session, task, name, approval_payload(comment, by), as_json)


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
    _send(ctx, session, task, name, rejection_payload(reason, by), as_json)


def cancel_cmd(
    ctx: typer.Context,
    session: SessionArg,
    reason: Annotated[str, typer.Option("--reason", help="Stored with the cancel request.")] = "cancelled from "
    "the command line",
    as_json: JsonOpt = False,
) -> None:
    """Cancel a session and its unfinished children: at once if nobody holds it, else at its next heartbeat."""
    g = globals_of(ctx)

    async def go() -> tuple[SessionRecord, list[str]]:
        async with open_cli_store(g) as store:
            return await cancel_session(store, session, reason)

    record, children = run_async(go)
    if as_json:
        emit_json(record)
    else:
        console.print(describe_cancel(record), highlight=False)
        if children:
            console.print(f"cancelled {len(children)} child session(s) of {session}", highlight=False)


def describe_cancel(record: SessionRecord) -> str:
    """What a cancel request did: cancelled at once, or left for the session's owner."""
    if record.status is SessionStatus.CANCELLED:
        return f"session {record.session_id} CANCELLED"
    return (f"cancel requested for session {record.session_id} ({record.status.value}, held by "
            f"{record.lease_owner or '-'}); its owner stops it at the next heartbeat")


def register(app: typer.Typer) -> None:
    app.command("signal")(signal_cmd)
    app.command("approve")(approve_cmd)
    app.command("reject")(reject_cmd)
    app.command("cancel")(cancel_cmd)
