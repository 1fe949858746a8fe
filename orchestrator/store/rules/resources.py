"""Fleet-wide resource limits: may this holder take these units now, and what is stale.

Both backends read a resource's holders, recent starts and waiters (SQLite: rows of
one resource; DynamoDB: one shard item holding its share of the limit), call
`decide_acquire`, and write the grant with the entries it names as stale removed.
Concurrency counts holders whose lease has not lapsed; a rate counts starts inside
the last `period` seconds (a sliding window: never more than the rate in any window,
with a margin for clock skew: `rate_window`);
a live waiter of a higher priority (P0 first) keeps lower ones out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.errors import ValidationError
from orchestrator.store.records.flow import Holder, ResourceLimit, ResourceState, Start, Waiter

__all__ = [
    "SHARD_UNITS",
    "Decision",
    "Share",
    "backoff",
    "check_fits",
    "decide_acquire",
    "live_state",
    "rate_window",
    "shard_count",
    "shares",
    "waiter_until",
]

SHARD_UNITS = 25  # units of concurrency or rate one DynamoDB shard item carries at most
MAX_SHARDS = 100  # one BatchGetItem reads every shard
BACKOFF_START = 0.05
RATE_MARGIN = 0.01  # a start counts for its period plus 1% (at most 1 s): see `rate_window`
BACKOFF_CAP = 2.0


@dataclass(frozen=True, slots=True)
class Share:
    """The part of a resource's limits one shard enforces (the whole limit on SQLite)."""

    concurrency: int | None
    rate: int | None
    period: float | None


@dataclass(frozen=True, slots=True)
class Decision:
    """Granted, or when to look again; and the stale entries to remove with the write."""

    granted: bool
    retry_at: float | None = None
    reason: str = ""
    stale_holders: tuple[str, ...] = ()
    stale_starts: tuple[str, ...] = ()
    stale_waiters: tuple[str, ...] = ()


def shard_count(limit: ResourceLimit) -> int:
    """Shards of a resource: enough that none carries more than SHARD_UNITS units."""
    units = max(limit.concurrency or 0, limit.rate.count if limit.rate else 0)
    return max(1, min(MAX_SHARDS, math.ceil(units / SHARD_UNITS)))


def _split(total: int | None, n: int, i: int) -> int | None:
    return None if total is None else total // n + (1 if i < total % n else 0)


def shares(limit: ResourceLimit, n: int | None = None) -> list[Share]:
    """The limit split over `n` shards (default `shard_count`); the shares sum to the limit."""
    n = n or shard_count(limit)
    rate, period = (limit.rate.count, limit.rate.period) if limit.rate else (None, None)
    return [Share(_split(limit.concurrency, n, i), _split(rate, n, i), period) for i in range(n)]


def check_fits(limit: ResourceLimit, amount: int, *, where: str) -> None:
    """Refuse a request no shard could ever grant (it would wait forever)."""
    if any((s.concurrency is None or s.concurrency >= amount) and (s.rate is None or s.rate >= amount)
           for s in shares(limit)):
        return
    raise ValidationError(
        f"{where} asks for {amount} units of resource {limit.name!r}, more than its limits ever grant at once "
        f"(concurrency {limit.concurrency}, rate {limit.rate}, at most {SHARD_UNITS} units per grant); raise "
        f"the limit with `orchestrator limits set {limit.name} ...`, or use fewer units",
        field="uses", resource=limit.name,
    )


def decide_acquire(
    share: Share,
    holders: Sequence[Holder],
    starts: Sequence[Start],
    waiters: Sequence[Waiter],
    *,
    holder: str,
    amount: int,
    priority: int,
    now: float,
) -> Decision:
    """May `holder` take `amount` units of this share now? (Already holding it: granted.)"""
    stale_h = tuple(h.holder for h in holders if h.lease_until <= now)
    live = [h for h in holders if h.lease_until > now]
    window = rate_window(share.period) if share.period else 0.0
    stale_s = tuple(s.key for s in starts if s.at <= now - window)
    recent = [s for s in starts if s.at > now - window]
    stale_w = tuple(w.holder for w in waiters if w.until <= now)

    def done(granted: bool, retry_at: float | None = None, reason: str = "") -> Decision:
        return Decision(granted, retry_at, reason, stale_h, stale_s, stale_w)

    if any(h.holder == holder for h in live):
        return done(True)
    ahead = [w for w in waiters if w.until > now and w.priority < priority and w.holder != holder]
    if ahead:
        first = min(ahead, key=lambda w: w.priority)
        return done(False, now, f"a P{first.priority} task waits for it first")
    if share.concurrency is not None and sum(h.amount for h in live) + amount > share.concurrency:
        soonest = min((h.lease_until for h in live), default=now)
        return done(False, soonest, f"{share.concurrency} units held")
    if share.rate is not None and sum(s.amount for s in recent) + amount > share.rate:
        # the window frees the oldest start first
        oldest = min((s.at for s in recent), default=now)
        return done(False, oldest + window, f"rate {share.rate}/{share.period:g}s reached")
    return done(True)


def rate_window(period: float) -> float:
    """How long a start counts against a rate: its period and a margin (1%, at most 1 s).

    The margin absorbs the clock skew between the machines of a fleet and the moment
    between a grant and the agent's start, so starts the agents measure never exceed the
    rate in any window of `period`."""
    return period + min(1.0, period * RATE_MARGIN)


def backoff(attempt: int, priority: int, retry_at: float | None, now: float, rng: random.Random) -> float:
    """Seconds until a waiter looks again: exponential with full jitter, capped, sooner for P0.

    Never past the moment the decision said room appears (`retry_at`), but at least a
    tenth of the step, so a crowd does not wake at the same instant.
    """
    step = min(BACKOFF_CAP * (1 + priority) / 4, BACKOFF_START * (2 ** min(attempt, 10)))
    delay = rng.uniform(step / 10, step)
    if retry_at is not None and retry_at > now:
        delay = min(delay, max(retry_at - now, step / 10))
    return delay


def waiter_until(now: float, priority: int) -> float:
    """How long a waiter's registration lasts without being refreshed (a crashed waiter lapses)."""
    return now + 4 * BACKOFF_CAP * (1 + priority) / 4 + 1.0


def live_state(limit: ResourceLimit, holders: Sequence[Holder], starts: Sequence[Start],
               waiters: Sequence[Waiter], now: float) -> ResourceState:
    """What `limits show` reports: holders whose lease has not lapsed, the units started in
    the rate's last period, and live waiters in priority order."""
    window = limit.rate.period if limit.rate else 0.0
    return ResourceState(
        limit,
        tuple(sorted((h for h in holders if h.lease_until > now), key=lambda h: h.holder)),
        sum(s.amount for s in starts if s.at > now - window) if limit.rate else 0,
        tuple(sorted((w for w in waiters if w.until > now), key=lambda w: (w.priority, w.holder))),
    )
