"""Typed values passed between the scheduler's parts: what to launch, and how an attempt ended.

The plan decides a `Launch`; the runner hands it to `attempt.run_attempt`, which
reports one `AttemptOutcome` back; the runner feeds it to the plan. Nothing here does
I/O, so the plan can be tested with hand-made outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from orchestrator.agents.errors import AgentTimeoutError
from orchestrator.store.records import NewTask

__all__ = ["AttemptOutcome", "Cancelled", "Failed", "Finished", "Launch", "TimedOut", "Waiting"]


@dataclass(frozen=True, slots=True)
class Launch:
    """One attempt to start, decided once its START (or WAKE) is durable."""

    task_id: str
    agent: str
    attempt: int
    input: Any  # the task's input, or the session input when the task has none
    deps: Mapping[str, Any] = field(default_factory=dict)  # dependency outputs, by task id
    state: Any = None  # the task's last checkpoint
    wait_deadline: float | None = None  # a woken wait keeps the deadline it had...
    wait_signal: str | None = None  # ...for the signal it waited for (None: for the attempt's first wait)


@dataclass(frozen=True, slots=True)
class Finished:
    """The agent returned `output` (JSON-checked), adding `added` tasks on the way."""

    task_id: str
    attempt: int
    output: Any = None
    added: tuple[NewTask, ...] = ()
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The agent raised; the plan judges with the agent's retry policy whether to retry."""

    task_id: str
    attempt: int
    error: BaseException
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The agent ran past its timeout; judged like a failure raising `error`."""

    task_id: str
    attempt: int
    error: AgentTimeoutError
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class Waiting:
    """The agent waits for signal `signal` (until `deadline`, if any) and gave up its slot."""

    task_id: str
    attempt: int
    signal: str
    deadline: float | None = None
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The agent was cancelled (a cancel request, fail-fast, or a lost lease)."""

    task_id: str
    attempt: int
    duration: float | None = None


AttemptOutcome: TypeAlias = Finished | Failed | TimedOut | Waiting | Cancelled
