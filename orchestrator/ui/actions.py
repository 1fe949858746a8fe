"""The dashboard's buttons, each through the same API as its CLI command.

approve / reject / signal: `orchestrator.cli.control.deliver_signal`, which the
`approve`, `reject` and `signal` commands call; cancel: `Store.request_cancel`; clear needs-human:
`Store.set_needs_human(..., None)`; fork: `orchestrator.fork.fork_session` (the new
session is left PENDING for a worker, as `orchestrator fork` without --run);
resume: `orchestrator.resume`, which needs the pipeline's code, so it runs here only
for pipelines the dashboard was started with (`--app`), in the dashboard's process.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.scheduler.children import cancel_session
from orchestrator.cli.control import (
    approval_payload,
    deliver_signal,
    describe_cancel,
    describe_signal,
    rejection_payload,
)
from orchestrator.errors import OrchestratorError, ValidationError
from orchestrator.fork import fork_session
from orchestrator.graph import Pipeline
from orchestrator.scheduler import resume
from orchestrator.store import SessionStatus, Store

__all__ = ["ActionResult", "Actions"]

log = logging.getLogger(__name__)

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


@dataclass(frozen=True, slots=True)
class ActionResult:
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)


def _field(body: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError(f"the request has no {name!r}: fill it in and confirm again")
        return None
    if not isinstance(value, str):
        raise ValidationError.bad_value(name, value, "a string", "the action's request")
    return value.strip()


class Actions:
    """Actions on one store; `spawn` runs a resume in the server's task group."""

    def __init__(self, store: Store, pipelines: Mapping[str, Pipeline], spawn: Spawn) -> None:
        self.store = store
        self.pipelines = dict(pipelines)
        self.spawn = spawn
        self.outcomes: dict[str, str] = {}  # session -> how the last resume started here ended

    async def run(self, name: str, session_id: str, body: Mapping[str, Any]) -> ActionResult:
        """Dispatch an action by name (ValidationError for an unknown one)."""
        handlers: dict[str, Callable[[str, Mapping[str, Any]], Awaitable[ActionResult]]] = {
            "approve": self.approve, "reject": self.reject, "signal": self.signal, "cancel": self.cancel,
            "resume": self.resume, "clear-needs-human": self.clear_needs_human, "fork": self.fork,
        }
        handler = handlers.get(name)
        if handler is None:
            raise ValidationError.bad_value("action", name, f"one of {', '.join(handlers)}", "the dashboard")
        return await handler(session_id, body)

    async def _signal(self, session_id: str, task: str, name: str, payload: Any) -> ActionResult:
        sent = await deliver_signal(self.store, session_id, task, name, payload)
        return ActionResult(describe_signal(sent, session_id, task, name),
                            {"signal_seq": sent.seq, "task_status": sent.task_status.value})

    async def approve(self, session_id: str, body: Mapping[str, Any]) -> ActionResult:
        task = _field(body, "task", required=True) or ""
        payload = approval_payload(_field(body, "comment"), _field(body, "by") or "dashboard")
        return await self._signal(session_id, task, _field(body, "name") or "approval", payload)

    async def reject(self, session_id: str, body: Mapping[str, Any]) -> ActionResult:
        task = _field(body, "task", required=True) or ""
        payload = rejection_payload(_field(body, "reason"), _field(body, "by") or "dashboard")
        return await self._signal(session_id, task, _field(body, "name") or "approval", payload)

    async def signal(self, session_id: str, body: Mapping[str, Any]) -> ActionResult:
        task = _field(body, "task", required=True) or ""
        name = _field(body, "name", required=True) or ""
        raw = _field(body, "data") or "null"
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise ValidationError(f"the signal's data is not JSON ({exc}): write e.g. {{\"ok\": true}} or null") \
                from None
        return await self._signal(session_id, task, name, payload)

    async def cancel(self, session_id: str, body: Mapping[str, Any]) -> ActionResult:
        reason = _field(body, "reason") or "cancelled from the dashboard"
        record, children = await cancel_session(self.store, session_id, reason)
        return ActionResult(describe_cancel(record), {"status": record.status.value, "children": children})

    async def clear_needs_human(self, session_id: str, body: Mapping[str, Any]) -> ActionResult:
        record = await self.store.set_needs_human(session_id, None)
        return ActionResult(f"session {session_id} is no longer flagged needs-human ({record.status.value}); "
                            f"resume-failed sweeps may redrive it again", {"status": record.status.value})

    async def fork(self, session_id: str, body: Mapping[str, Any]) -> ActionResult:
        from_task = _field(body, "task", required=True) or ""
        session = await self.store.get_session(session_id)
        new_id = await fork_session(self.store, session_id, from_task, pipeline=self.pipelines.get(session.pipeline))
        return ActionResult(f"forked session {session_id} from task {from_task} as {new_id} (PENDING: a worker "
                            f"runs it)", {"session_id": new_id, "url": f"/sessions/{new_id}"})

    async def resume(self, session_id: str, body: Mapping[str, Any]) -> ActionResult:
        session = await self.store.get_session(session_id)
        pipeline = self.pipelines.get(session.pipeline)
        if pipeline is None:
            known = ", ".join(sorted(self.pipelines)) or "none"
            raise ValidationError(
                f"the dashboard cannot resume session {session_id}: it was started without pipeline "
                f"{session.pipeline!r} (it knows: {known}); restart it with `orchestrator ui --app MODULE:PIPELINE`, "
                f"or run `orchestrator resume {session_id} --app MODULE:PIPELINE`")
        if session.status is SessionStatus.COMPLETED:
            raise ValidationError(f"session {session_id} is COMPLETED: there is nothing left to resume")
        force = body.get("force") in (True, "1", "on", "true")
        store = self.store

        async def go() -> None:
            try:
                result = await resume(pipeline, session_id, store=store, force=force)
                self.outcomes[session_id] = f"resume started here ended {result.status.value}"
            except OrchestratorError as exc:
                self.outcomes[session_id] = f"resume started here failed: {exc}"
                log.warning("dashboard resume of %s failed: %s", session_id, exc)

        self.outcomes[session_id] = "resume started here is running"
        self.spawn(go)
        return ActionResult(f"resuming session {session_id} ({session.status.value}) in the dashboard's process"
                            + (" with --force" if force else "") + "; the page follows its progress",
                            {"status": session.status.value})
