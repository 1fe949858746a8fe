"""Ids, schema version and the small values every record module shares."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from orchestrator.errors import ValidationError

__all__ = ["ATTEMPT_HISTORY_LIMIT", "LABEL_CHARS", "LATENCY_BUCKETS_MS", "SCHEMA_VERSION", "Page", "PurgeReport",
           "StoreDescription", "check_id", "check_label"]

#: Version written on every item/row; a newer one is refused by older code.
SCHEMA_VERSION = 1
#: Attempt history kept per task (oldest dropped).
ATTEMPT_HISTORY_LIMIT = 10
#: Upper bounds (ms) of the fixed log-scale latency buckets; a last bucket catches the rest.
LATENCY_BUCKETS_MS: tuple[float, ...] = tuple(float(2**i) for i in range(0, 25))  # 1 ms .. ~4.7 h

#: The longest user id or pipeline type a session may carry: both go into index keys
#: (DynamoDB allows 2,048 bytes in a partition key; 256 characters are at most 1,024).
LABEL_CHARS = 256

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


def check_label(kind: str, value: str | None, where: str) -> None:
    """A user id or pipeline type: free text (they are not ids), but a str of at most LABEL_CHARS."""
    if value is not None and (not isinstance(value, str) or len(value) > LABEL_CHARS):
        shown = value[:40] + "..." if isinstance(value, str) else value
        raise ValidationError(
            f"{kind} {shown!r} of {where} is not valid: pass a string of at most {LABEL_CHARS} characters "
            f"(it is a key of the {kind} index)",
            field=kind.replace(" ", "_"),
        )


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
