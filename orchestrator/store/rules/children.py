"""Child sessions of a map: their ids, the parent's progress through them, and their results.

Pure decisions the engine (`orchestrator.scheduler.children`) follows, whichever backend
stores the children: a child's id is derived from (parent session, task, call, index),
so creating it again is a no-op; the parent's `MapProgress` says which children to
create next (never more than `concurrency` in flight) and which to look at; a finished
child's result is its pipeline's sink output; results come back in item order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.errors import ValidationError
from orchestrator.store.records import Edge, SessionStatus, TaskStatus

__all__ = [
    "CHILD_ENDED",
    "LINK_KEY",
    "ChildLink",
    "MapProgress",
    "MapResult",
    "Policy",
    "child_output",
    "child_session_id",
    "check_map_args",
    "map_results",
]

Policy = Literal["fail_fast", "collect"]
CHILD_ENDED = frozenset({SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED})
LINK_KEY = "orchestrator.parent"  # the child's metadata key naming its parent
_MAX_ID = 128


def child_session_id(parent: str, task: str, call: int, index: int) -> str:
    """`<parent>.<task>.<call>.<index>`, or a digest of the prefix when that would pass 128 chars.

    Deterministic: the same map of the same task creates the same ids on every attempt.
    """
    prefix = f"{parent}.{task}" if call == 0 else f"{parent}.{task}.m{call}"
    sid = f"{prefix}.{index}"
    if len(sid) <= _MAX_ID:
        return sid
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:32]
    return f"c-{digest}.{index}"


@dataclass(frozen=True, slots=True)
class ChildLink:
    """What a child session stores about its parent (in its metadata under `LINK_KEY`)."""

    session_id: str
    task_id: str
    index: int

    def to_json(self) -> dict[str, Any]:
        return {"session": self.session_id, "task": self.task_id, "index": self.index}

    @staticmethod
    def of(metadata: Mapping[str, Any]) -> ChildLink | None:
        raw = metadata.get(LINK_KEY)
        if not isinstance(raw, Mapping):
            return None
        return ChildLink(str(raw.get("session")), str(raw.get("task")), int(raw.get("index", 0)))


def check_map_args(items: Sequence[Any], concurrency: int | None, policy: str, *, where: str) -> None:
    """Bad arguments to `ctx.map` fail before any child is created."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ValidationError(f"{where}: items must be a list, got {type(items).__name__}; pass a list of inputs")
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency < 1):
        raise ValidationError.bad_value("concurrency", concurrency, "an int of 1 or more, or None", where)
    if policy not in ("fail_fast", "collect"):
        raise ValidationError.bad_value("policy", policy, "'fail_fast' or 'collect'", where)


@dataclass(slots=True)
class MapProgress:
    """The parent's durable view of one map: how many children exist, which have ended.

    Kept compact (a watermark below which every child ended, plus the ended ones above
    it), so a map of 10,000 items checkpoints a few numbers, not 10,000 entries.
    `redriven` is the parent attempt whose wake already redrove failed children.
    """

    total: int
    created: int = 0
    watermark: int = 0
    ended: set[int] = field(default_factory=set)
    redriven: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"n": self.total, "c": self.created, "w": self.watermark, "e": sorted(self.ended),
                "r": self.redriven}

    @staticmethod
    def from_json(raw: Any, total: int, *, where: str) -> MapProgress:
        if raw is None:
            return MapProgress(total)
        progress = MapProgress(int(raw["n"]), int(raw["c"]), int(raw["w"]), {int(i) for i in raw["e"]},
                               int(raw.get("r", 0)))
        if progress.total != total:
            raise ValidationError(
                f"{where}: the map was started with {progress.total} items and is now called with {total}; "
                f"derive the items deterministically from the task's input"
            )
        return progress

    @property
    def done(self) -> bool:
        return self.watermark >= self.total

    def in_flight(self, limit: int | None = None) -> list[int]:
        """Created children not known to have ended, lowest index first (at most `limit`)."""
        out: list[int] = []
        for i in range(self.watermark, self.created):
            if i not in self.ended:
                out.append(i)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def to_create(self, concurrency: int | None) -> range:
        """The next children to create: as many as keep `concurrency` in flight fleet-wide."""
        room = self.total - self.created
        if concurrency is not None:
            room = min(room, concurrency - (self.created - self.watermark - len(self.ended)))
        return range(self.created, self.created + max(0, room))

    def mark_created(self, upto: int) -> None:
        self.created = max(self.created, upto)

    def mark_ended(self, indices: Iterable[int]) -> None:
        self.ended.update(i for i in indices if i >= self.watermark)
        while self.watermark in self.ended:
            self.ended.discard(self.watermark)
            self.watermark += 1



def child_output(tasks: Mapping[str, Any], statuses: Mapping[str, TaskStatus], edges: Sequence[Edge]) -> Any:
    """A finished child's result: its only sink task's output, or `{sink: output}` for several."""
    has_dependents = {e.depends_on for e in edges}
    sinks = sorted(t for t in statuses if t not in has_dependents)
    if len(sinks) == 1:
        return tasks.get(sinks[0])
    return {t: tasks.get(t) for t in sinks}


@dataclass(frozen=True, slots=True)
class MapResult:
    """One child's fate, in item order: its status, output, and the reason it did not complete."""

    index: int
    session_id: str
    status: SessionStatus
    output: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is SessionStatus.COMPLETED


def map_results(results: Sequence[MapResult], policy: Policy) -> list[Any]:
    """What `ctx.map` returns: outputs in item order, or (collect) `{ok, output|error, session}` per item."""
    ordered = sorted(results, key=lambda r: r.index)
    if policy == "fail_fast":
        return [r.output for r in ordered]
    return [{"ok": True, "output": r.output, "session": r.session_id} if r.ok
            else {"ok": False, "error": r.error or r.status.value, "status": r.status.value,
                  "session": r.session_id} for r in ordered]
