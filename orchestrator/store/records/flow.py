"""Flow-control values: a named resource's limits and holders, and a schedule.

A resource (`openai`, `github`) has a fleet-wide concurrency (holders at once) and a
rate (starts per period); a schedule starts a pipeline at the slots of a cron
expression. Checked in `__post_init__`, so bad input fails before anything is written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.errors import ValidationError

__all__ = [
    "CatchUp",
    "Grant",
    "Holder",
    "Overlap",
    "Rate",
    "ResourceLimit",
    "ResourceState",
    "ScheduleRecord",
    "Start",
    "Waiter",
    "check_resource_name",
]

CatchUp = Literal["skip", "latest", "all"]
Overlap = Literal["allow", "skip"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
            "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]+)\s*$")


def check_resource_name(name: object, where: str) -> str:
    """A resource or schedule name: letters, digits and `_.:-`, at most 64 characters."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError.bad_value("name", name, "1-64 letters, digits or '_.:-' (e.g. 'openai')", where)
    return name


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `count` starts in any window of `period` seconds."""

    count: int
    period: float

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValidationError.bad_value("rate count", self.count, "an int of 1 or more", "Rate")
        if not math.isfinite(self.period) or self.period <= 0:
            raise ValidationError.bad_value("rate period", self.period, "seconds > 0", "Rate")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`500/min`, `10/s`, `100/h`, `5/30s`, `1000/day`."""
        m = _RATE.match(text.lower())
        if m is None or m.group(3) not in _PERIODS:
            raise ValidationError.bad_value("rate", text, "COUNT/PERIOD such as 500/min, 10/s, 5/30s, 100/h",
                                            "limits")
        scale = float(m.group(2)) if m.group(2) else 1.0
        return cls(int(m.group(1)), scale * _PERIODS[m.group(3)])

    def __str__(self) -> str:
        for unit, secs in (("day", 86400.0), ("h", 3600.0), ("min", 60.0)):
            if self.period == secs:
                return f"{self.count}/{unit}"
        return f"{self.count}/{self.period:g}s"


@dataclass(frozen=True, slots=True)
class ResourceLimit:
    """The fleet-wide limits of one resource; None means unlimited on that axis."""

    name: str
    concurrency: int | None = None
    rate: Rate | None = None

    def __post_init__(self) -> None:
        check_resource_name(self.name, "ResourceLimit")
        if self.concurrency is not None and (isinstance(self.concurrency, bool)
                                             or not isinstance(self.concurrency, int) or self.concurrency < 1):
            raise ValidationError.bad_value("concurrency", self.concurrency, "an int of 1 or more",
                                            f"resource {self.name!r}")

    @property
    def unlimited(self) -> bool:
        return self.concurrency is None and self.rate is None


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds units of a resource, until when (renewed while the agent runs)."""

    holder: str
    amount: int
    lease_until: float


@dataclass(frozen=True, slots=True)
class Start:
    """One start counted against a rate: its key, time and units."""

    key: str
    at: float
    amount: int = 1


@dataclass(frozen=True, slots=True)
class Waiter:
    """A task waiting for a resource, at its priority (0 first), registered until `until`."""

    holder: str
    priority: int
    until: float


@dataclass(frozen=True, slots=True)
class Grant:
    """Units of a resource held by `holder`; `shard` says where (DynamoDB), 0 elsewhere."""

    resource: str
    holder: str
    amount: int
    shard: int = 0


@dataclass(frozen=True, slots=True)
class ResourceState:
    """A resource's limits and what holds it now (for `limits list/show`)."""

    limit: ResourceLimit
    holders: tuple[Holder, ...] = ()
    recent_starts: int = 0  # starts inside the current rate window
    waiters: tuple[Waiter, ...] = ()


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A pipeline started at each slot of `cron` in `timezone`.

    `last_slot` is the latest slot already handled (started or skipped); `last_session`
    the session of the latest start (for `overlap="skip"`).
    """

    name: str
    cron: str
    pipeline: str
    app: str = ""
    timezone: str = "UTC"
    input: Any = None
    catch_up: CatchUp = "skip"
    max_catch_up: int = 10
    overlap: Overlap = "allow"
    paused: bool = False
    created_at: float = 0.0
    last_slot: float | None = None
    last_session: str | None = None
    version: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"schedule {self.name!r}"
        check_resource_name(self.name, "schedule")
        if self.catch_up not in ("skip", "latest", "all"):
            raise ValidationError.bad_value("catch_up", self.catch_up, "'skip', 'latest' or 'all'", where)
        if self.overlap not in ("allow", "skip"):
            raise ValidationError.bad_value("overlap", self.overlap, "'allow' or 'skip'", where)
        if isinstance(self.max_catch_up, bool) or not isinstance(self.max_catch_up, int) or self.max_catch_up < 1:
            raise ValidationError.bad_value("max_catch_up", self.max_catch_up, "an int of 1 or more", where)
        if not self.pipeline:
            raise ValidationError.bad_value("pipeline", self.pipeline, "the name of a pipeline", where)

    def to_json(self) -> dict[str, Any]:
        """The stored form (both backends keep it as one JSON document)."""
        return {"name": self.name, "cron": self.cron, "pipeline": self.pipeline, "app": self.app,
                "timezone": self.timezone, "input": self.input, "catch_up": self.catch_up,
                "max_catch_up": self.max_catch_up, "overlap": self.overlap, "paused": self.paused,
                "created_at": self.created_at, "last_slot": self.last_slot, "last_session": self.last_session,
                "version": self.version, "extra": dict(self.extra)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScheduleRecord:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
