"""`ApprovalAgent`: pause a pipeline until a person approves or rejects it.

The wait is durable (`ctx.wait_for_signal`): the session goes WAITING, holds no
worker, and resumes when the signal is delivered, e.g.
`orchestrator signal SESSION TASK approval --data '{"approved": true, "by": "ana"}'`
(or `orchestrator approve SESSION TASK --by ana`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.agents.context import AgentContext
from orchestrator.agents.errors import NonRetryableError
from orchestrator.agents.retry import RetryPolicy
from orchestrator.agents.spec import Agent, AgentSpec

__all__ = ["ApprovalAgent"]

_APPROVE = frozenset({"approve", "approved", "yes", "ok", "lgtm"})
_REJECT = frozenset({"reject", "rejected", "deny", "denied", "no"})


def _decision(payload: Any) -> tuple[bool | None, str]:
    """(approved?, reason); approved is None when the payload says neither."""
    if isinstance(payload, bool):
        return payload, "rejected"
    if isinstance(payload, str):
        word = payload.strip().lower()
        if word in _APPROVE:
            return True, ""
        if word in _REJECT:
            return False, "rejected"
        return None, ""
    if isinstance(payload, Mapping) and isinstance(payload.get("approved"), bool):
        reason = payload.get("reason") or payload.get("comment") or "no reason given"
        by = payload.get("by")
        return bool(payload["approved"]), f"{reason}{f' (by {by})' if by else ''}"
    return None, ""


class ApprovalAgent(Agent):
    """Wait for signal `signal` (default "approval"); return its payload when it approves.

    Approves: `{"approved": true, ...}`, `true`, or a string like "approve". Rejects:
    `{"approved": false, "reason": ...}`, `false`, or "reject": raises
    `NonRetryableError` with the reason. `timeout` bounds the wait (it does not count
    toward the task's run time); when it passes, `SignalTimeoutError` is raised.
    One attempt by default: the decision is a person's, a retry would read it again.
    """

    def __init__(
        self,
        name: str = "approval",
        *,
        signal: str = "approval",
        timeout: float | None = None,
        retry: RetryPolicy = RetryPolicy(max_attempts=1),
    ) -> None:
        if not signal:
            raise ValueError(f"ApprovalAgent {name!r}: signal name must be non-empty")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"ApprovalAgent {name!r}: timeout={timeout} must be > 0 seconds")
        self.name = name
        self.signal = signal
        self.wait_timeout = timeout
        self.retry = retry

    def spec(self) -> AgentSpec:
        return AgentSpec(name=self.name, fn=self.run, retry=self.retry, timeout=None, executor="async")

    def __repr__(self) -> str:
        return f"ApprovalAgent({self.name!r}, signal={self.signal!r})"

    async def run(self, ctx: AgentContext) -> Any:
        payload = await ctx.wait_for_signal(self.signal, timeout=self.wait_timeout)
        approved, reason = _decision(payload)
        where = f"task {ctx.task_id} of session {ctx.session_id}"
        if approved is None:
            raise NonRetryableError(
                f"{where}: signal {self.signal!r} carried {payload!r}, which neither approves nor "
                f'rejects; send {{"approved": true}} / "approve" or {{"approved": false, "reason": ...}}'
            )
        if not approved:
            raise NonRetryableError(f"{where} was rejected: {reason}")
        return payload
