"""Values of a run: its options and limits, and its result."""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from orchestrator.errors import ValidationError
from orchestrator.store.records import SessionStatus, TaskStatus

__all__ = ["RunOptions", "RunResult", "WorkerLimits", "default_worker_id"]


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Limits and timings of a run. The lease must exceed 3 heartbeats plus the skew margin."""

    concurrency: int = 16  # agents running at once in this session
    agent_concurrency: Mapping[str, int] = field(default_factory=dict)  # per agent name
    fail_fast: bool = False  # on a task's final failure, cancel the rest
    lease_seconds: float = 30.0
    heartbeat_interval: float = 8.0
    clock_skew_margin: float = 2.0
    progress_interval: float = 1.0  # session/task progress written at most this often
    flush_interval: float = 5.0  # events and metrics flushed at least this often
    worker_id: str | None = None
    seed: int | None = None  # seeds the backoff jitter
    max_redrives: int = 3
    ttl_seconds: float | None = None
    cache: bool = True  # False (--no-cache): cached outputs are neither read nor written

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValidationError(f"RunOptions.concurrency={self.concurrency}; use 1 or more")
        for name, limit in self.agent_concurrency.items():
            if limit < 1:
                raise ValidationError(f"RunOptions.agent_concurrency[{name!r}]={limit}; use 1 or more")
        if self.heartbeat_interval <= 0 or self.progress_interval <= 0 or self.flush_interval <= 0:
            raise ValidationError("RunOptions intervals must be > 0 seconds")
        need = 3 * self.heartbeat_interval + self.clock_skew_margin
        if self.lease_seconds < need:
            raise ValidationError(
                f"RunOptions.lease_seconds={self.lease_seconds:g} is too short for heartbeat_interval="
                f"{self.heartbeat_interval:g} and clock_skew_margin={self.clock_skew_margin:g}; it must "
                f"be at least 3 x heartbeat + margin = {need:g}"
            )


    def with_lease(self, lease_seconds: float, *, where: str = "RunOptions.with_lease") -> RunOptions:
        """These options with another lease length. The heartbeat (a fifth of the lease, at most
        8 s) and the clock-skew margin (a tenth, at most 2 s) follow, so any lease > 0 is valid."""
        if (isinstance(lease_seconds, bool) or not isinstance(lease_seconds, (int, float))
                or not math.isfinite(lease_seconds) or lease_seconds <= 0):
            raise ValidationError.bad_value("lease", lease_seconds, "a duration > 0, e.g. 30s or 2m", where)
        lease = float(lease_seconds)
        return replace(self, lease_seconds=lease, heartbeat_interval=min(8.0, lease / 5),
                       clock_skew_margin=min(2.0, lease / 10))


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended: COMPLETED, FAILED, CANCELLED, or WAITING for a signal."""

    session_id: str
    status: SessionStatus
    outputs: Mapping[str, Any]
    tasks: Mapping[str, TaskStatus]
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is SessionStatus.COMPLETED


class WorkerLimits:
    """Limits shared by every session a worker runs: total agents, and per agent name."""

    def __init__(self, concurrency: int = 64, per_agent: Mapping[str, int] | None = None) -> None:
        # A limit under 1 is refused at once: no agent could ever start, and the sessions a
        # worker claimed would keep their leases renewed while nothing runs.
        limits = {"WorkerLimits.concurrency": concurrency}
        limits.update({f"WorkerLimits.per_agent[{name!r}]": n for name, n in (per_agent or {}).items()})
        for name, n in limits.items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ValidationError.bad_value(name, n, "an int of 1 or more (with 0 no agent could ever start)",
                                                "WorkerLimits")
        self.total = anyio.CapacityLimiter(concurrency)
        self.per_agent = {name: anyio.CapacityLimiter(n) for name, n in (per_agent or {}).items()}


