"""Exceptions an agent raises or catches.

These live in `agents` (which imports nothing from `orchestrator`) so agent code can
use them without the engine; `orchestrator.errors` re-exports them.

    AgentError
    ├── NonRetryableError      raise it to fail the task at once, retries skipped
    ├── SignalTimeoutError     `ctx.wait_for_signal(..., timeout=)` passed its timeout
    ├── AgentTimeoutError      the task ran past its per-attempt timeout
    └── CommandFailedError     a `CommandAgent` subprocess exited non-zero
"""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    """Base class of the exceptions defined for agent authors."""


class NonRetryableError(AgentError):
    """Fail the task now: the scheduler records the error and does not retry it.

    Subclass it, or list your own exception types in `RetryPolicy(non_retryable=...)`.
    """


class SignalTimeoutError(AgentError, TimeoutError):
    """A durable wait for a signal passed its timeout without the signal arriving."""

    def __init__(self, signal: str, timeout: float, *, session_id: str = "", task_id: str = "") -> None:
        self.signal = signal
        self.timeout = timeout
        self.session_id = session_id
        self.task_id = task_id
        where = f" (session {session_id}, task {task_id})" if session_id else ""
        super().__init__(
            f"signal {signal!r} did not arrive within {timeout:g}s{where}; catch "
            f"SignalTimeoutError to take another path, or deliver it with "
            f"`orchestrator signal {session_id or 'SESSION'} {task_id or 'TASK'} {signal}`"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_signal_timeout, (self.signal, self.timeout, self.session_id, self.task_id))


def _rebuild_signal_timeout(signal: str, timeout: float, session_id: str, task_id: str) -> SignalTimeoutError:
    return SignalTimeoutError(signal, timeout, session_id=session_id, task_id=task_id)


class AgentTimeoutError(AgentError, TimeoutError):
    """An attempt ran longer than the agent's timeout; retried like any other failure."""

    def __init__(self, agent: str, timeout: float) -> None:
        self.agent = agent
        self.timeout = timeout
        super().__init__(
            f"agent {agent!r} ran past its timeout of {timeout:g}s; raise the timeout "
            f"with @agent(timeout=...) or make the agent report progress and finish sooner"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (AgentTimeoutError, (self.agent, self.timeout))


class CommandFailedError(AgentError):
    """A command run by `CommandAgent` exited with a non-zero status."""

    def __init__(self, argv: list[str], returncode: int, stderr_tail: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        tail = f"; last stderr lines:\n{stderr_tail}" if stderr_tail else ""
        super().__init__(f"command {' '.join(argv)!r} exited with status {returncode}{tail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (CommandFailedError, (self.argv, self.returncode, self.stderr_tail))
