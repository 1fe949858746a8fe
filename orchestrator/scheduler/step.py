"""What the plan decides, as values: a `Step` for the runner to perform, and its parts.

A step is performed in field order: stage the added tasks, commit the writes as one
batch (then feed the results back to the plan), launch the agents, cancel the
running ones named, start the timers, record notes and metrics, and end the session
if `end` says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from orchestrator.scheduler.messages import Launch
from orchestrator.store.records import MetricSample, NewTask, SessionStatus, TaskWrite

__all__ = ["Addition", "Draft", "End", "Finish", "Note", "Retry", "Step", "Suspend"]


@dataclass(frozen=True, slots=True)
class Note:
    """An event for the session's history (retries, failures, waits, signals, cancels...)."""

    kind: str
    message: str
    task_id: str | None = None
    level: str = "INFO"
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Retry:
    """A retry decided, for the session span (the matching `Note` goes to the events)."""

    task_id: str
    attempt: int
    error_type: str
    delay: float


@dataclass(frozen=True, slots=True)
class Addition:
    """Tasks an attempt added: staged in the store before its COMPLETE, which adopts them."""

    parent: str
    attempt: int
    tasks: tuple[NewTask, ...]


@dataclass(frozen=True, slots=True)
class Finish:
    """Every task is final: record the session's outcome (and flag it for a person)."""

    status: SessionStatus
    reason: str | None
    needs_human_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Suspend:
    """Only waits are left: put the session WAITING, claimable again at `wake_at` or on a signal."""

    wake_at: float | None


End: TypeAlias = Finish | Suspend


@dataclass(frozen=True, slots=True)
class Step:
    """One decision of the plan; empty fields mean nothing to do."""

    writes: tuple[TaskWrite, ...] = ()  # one batch; feed the results to `SessionPlan.committed`
    launches: tuple[Launch, ...] = ()  # agents whose START/WAKE is durable
    stage: tuple[Addition, ...] = ()  # add these tasks before the next batch commits
    cancel: tuple[str, ...] = ()  # running tasks whose agents to cancel
    timers: tuple[float, ...] = ()  # call `SessionPlan.timer_fired` at these times
    adopt: tuple[str, ...] = ()  # completed by another owner: load the tasks it added
    notes: tuple[Note, ...] = ()
    retries: tuple[Retry, ...] = ()
    metrics: tuple[MetricSample, ...] = ()
    end: End | None = None

    @property
    def idle(self) -> bool:
        """Nothing to write or end: wait for the next outcome, timer or news."""
        return not self.writes and self.end is None


@dataclass(slots=True)
class Draft:
    """A step being assembled by one plan method (mutable; `step()` freezes it)."""

    writes: list[TaskWrite] = field(default_factory=list)
    launches: list[Launch] = field(default_factory=list)
    stage: list[Addition] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    timers: list[float] = field(default_factory=list)
    adopt: list[str] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    retries: list[Retry] = field(default_factory=list)
    metrics: list[MetricSample] = field(default_factory=list)
    end: End | None = None

    def note(self, kind: str, message: str, *, task_id: str | None = None, level: str = "INFO",
             data: Mapping[str, Any] | None = None) -> None:
        self.notes.append(Note(kind, message, task_id, level, dict(data or {})))

    def step(self) -> Step:
        return Step(
            writes=tuple(self.writes), launches=tuple(self.launches), stage=tuple(self.stage),
            cancel=tuple(self.cancel), timers=tuple(self.timers), adopt=tuple(self.adopt),
            notes=tuple(self.notes), retries=tuple(self.retries), metrics=tuple(self.metrics), end=self.end,
        )
