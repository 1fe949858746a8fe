"""The rulebook: every decision about a session or task, as pure functions both backends call.

    graph      check_graph: unique ids, known dependencies, no cycle (named)
    history    checks of events and metrics (key parts, sizes); the events operations record
    limits     the size of every stored value, and the one encoder that enforces it
    change     SessionChange: a session transition as a value (what must hold, what changes)
    claims     claimability, what a claim writes, lease loss, a new session's record
    sessions   every other session transition (renew ... signal), each a `SessionOp`
    tasks      the task-transition table, fencing, and the classification of a rejection
    listing    sessions by user or pipeline type: index, matching, order, cursor
    resources  fleet-wide resource limits: grant or wait, stale entries, shards, backoff
    schedules  which cron slots start (catch-up, overlap), a slot's session id
    children   child sessions of a map: ids, the parent's progress, results in item order
    cache      cached outputs: the key of a task's output, when an entry may be read

Backends keep only encoding and I/O; `tests/store/test_differential.py` runs the same
operations against every backend and compares the outcomes.
"""

from orchestrator.store.rules.graph import check_graph, close_matches, find_cycle
from orchestrator.store.rules.history import (
    StoreEventKeys,
    cancel_event,
    check_metric_keys,
    created_event,
    event_data,
    forked_event,
    needs_human_event,
    signal_event,
)
from orchestrator.store.rules.limits import (
    INLINE_OUTPUT_BYTES,
    MAX_PAGE,
    Payload,
    check_definition,
    check_page_limit,
    encode,
)
from orchestrator.store.rules.listing import Position, SessionFilter, SessionIndex, position_of
from orchestrator.store.rules.change import Retained, SessionChange, SessionOp, expired
from orchestrator.store.rules.claims import (
    Claim,
    check_lease_seconds,
    claim_basis,
    claim_refusal,
    claimed,
    claimed_seen,
    lease_lost,
    new_session_record,
    status_time,
    wake_due,
)
from orchestrator.store.rules.sessions import (
    Cancel,
    Finish,
    FlagNeedsHuman,
    Release,
    Renew,
    Signal,
    Update,
    Wait,
)
from orchestrator.store.rules.tasks import (
    TRANSITIONS,
    Definition,
    History,
    TaskTransition,
    apply_task_write,
    check_added,
    classify_rejection,
    expected_attempt,
    same_definition,
    task_write_allowed,
    with_entry,
    write_error,
)

__all__ = [
    "INLINE_OUTPUT_BYTES",
    "MAX_PAGE",
    "TRANSITIONS",
    "Cancel",
    "Claim",
    "Definition",
    "Finish",
    "FlagNeedsHuman",
    "History",
    "Payload",
    "Position",
    "Release",
    "Renew",
    "Retained",
    "SessionChange",
    "SessionFilter",
    "SessionIndex",
    "SessionOp",
    "Signal",
    "StoreEventKeys",
    "TaskTransition",
    "Update",
    "Wait",
    "apply_task_write",
    "cancel_event",
    "check_added",
    "check_definition",
    "check_graph",
    "check_lease_seconds",
    "check_metric_keys",
    "check_page_limit",
    "claim_basis",
    "claim_refusal",
    "claimed",
    "claimed_seen",
    "classify_rejection",
    "close_matches",
    "created_event",
    "encode",
    "event_data",
    "expected_attempt",
    "expired",
    "find_cycle",
    "forked_event",
    "lease_lost",
    "needs_human_event",
    "new_session_record",
    "position_of",
    "same_definition",
    "signal_event",
    "status_time",
    "task_write_allowed",
    "wake_due",
    "with_entry",
    "write_error",
]
