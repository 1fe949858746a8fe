"""Ids, schema version and the small values every record module shares."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from orchestrator.errors import ValidationError

__all__ = ["ATTEMPT_HISTORY_LIMIT", "LATENCY_BUCKETS_MS", "SCHEMA_VERSION", "Page", "PurgeReport",
           "StoreDescription", "check_id"]

#: Version written on every item/row; a newer one is refused by older code.
SCHEMA_VERSION = 1
#: Attempt history kept per task (oldest dropped).
ATTEMPT_HISTORY_LIMIT = 10
#: Upper bounds (ms) of the fixed log-scale latency buckets; a last bucket catches the rest.
LATENCY_BUCKETS_MS: tuple[float, ...] = tuple(float(2**i) for i in range(0, 25))  # 1 ms .. ~4.7 h

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")


def check_id(kind: str, value: str, where: str = "") -> str:
    """Ids go into keys: letters, digits and `_ . : @ -`, at most 128, no '#'."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        at = f" in {where}" if where else ""
        raise ValidationError(
            f"{kind} id {value!r}{at} is not valid: use 1-128 letters, digits or _ . : @ -, "
            f"starting with a letter or digit (no '#', '/', or spaces)",
            field=kind,
        )
    return value


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    cursor: str | None  # pass back for the next page; None when exhausted


@dataclass(frozen=True, slots=True)
class PurgeReport:
    sessions: int
    items: int


@dataclass(frozen=True, slots=True)
class StoreDescription:
    """Where a store keeps its data, for messages and `orchestrator doctor`."""

    backend: str  # "sqlite" | "dynamodb"
    location: str  # file path, or table name
    region: str | None = None
    endpoint: str | None = None

    def __str__(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in (("region", self.region), ("endpoint", self.endpoint)) if v)
        return f"{self.backend}:{self.location}{extra}"
