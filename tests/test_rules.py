"""The fencing and transition rules of DESIGN.md §6 as pure functions (orchestrator/store/rules/)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.codec import default_codec
from orchestrator.errors import CycleError, LeaseLostError, PayloadTooLargeError, PipelineDefinitionError
from orchestrator.store import rules as rb
from orchestrator.store.rules.change import NEVER
from orchestrator.store.records import (
    ATTEMPT_HISTORY_LIMIT,
    ClaimPolicy,
    ErrorInfo,
    Lease,
    OwnerKind,
    PreviousHolder,
    Progress,
    SessionRecord,
    SessionStatus,
    TaskRecord,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    WriteOutcome,
)
from orchestrator.store.rules import (
    apply_task_write,
    claim_basis,
    claim_refusal,
    claimed,
    claimed_seen,
    classify_rejection,
    expected_attempt,
    lease_lost,
    status_time,
    task_write_allowed,
    wake_due,
)

NOW = 1_750_000_000.0


def session(**kw: object) -> SessionRecord:
    base = SessionRecord("s1", "p", "1", SessionStatus.PENDING, updated_at=NOW - 100)
    return replace(base, **kw)  # type: ignore[arg-type]


def running(owner: str = "w1", fence: int = 1, expires: float = NOW + 10) -> SessionRecord:
    return session(status=SessionStatus.RUNNING, lease_owner=owner, fence=fence, lease_expires_at=expires)


def task(**kw: object) -> TaskRecord:
    return replace(TaskRecord("t1", "agent", TaskStatus.PENDING), **kw)  # type: ignore[arg-type]


LEASE1 = Lease("s1", "w1", 1, NOW + 10)
LEASE2 = Lease("s1", "w2", 2, NOW + 10)


# -- claims -------------------------------------------------------------------------------


def test_pending_session_is_claimable() -> None:
    assert claim_refusal(session(), NOW) is None


def test_running_session_with_live_lease_names_owner_and_fence() -> None:
    msg = claim_refusal(running(owner="worker-7", fence=5), NOW)
    assert msg is not None and "worker-7" in msg and "fence 5" in msg and "s1" in msg


def test_running_session_with_expired_lease_is_claimable() -> None:
    assert claim_refusal(running(expires=NOW - 0.001), NOW) is None


def test_lease_expiring_exactly_now_is_still_held() -> None:
    assert claim_refusal(running(expires=NOW), NOW) is not None


def test_a_claim_may_decide_on_a_listed_record_the_rulebook_would_claim() -> None:
    seen = running(expires=NOW - 1)
    assert claim_basis(seen, "s1", NOW, ClaimPolicy()) is seen


def test_a_claim_reads_first_when_the_listed_record_would_be_refused() -> None:
    assert claim_basis(running(), "s1", NOW, ClaimPolicy()) is None


def test_a_claim_reads_first_when_the_record_is_of_another_session_or_expired() -> None:
    assert claim_basis(session(), "s2", NOW, ClaimPolicy()) is None
    assert claim_basis(session(expires_at=NOW - 1), "s1", NOW, ClaimPolicy()) is None
    assert claim_basis(None, "s1", NOW, ClaimPolicy()) is None


def _taken(seen: SessionRecord, *, fence: int | None = None, signal_seq: int | None = None) -> Lease:
    """The lease a claim of `seen` returns (at another fence or signal sequence when given)."""
    held = PreviousHolder(seen.lease_owner, seen.fence if fence is None else fence, seen.status, seen.lease_expires_at)
    return Lease("s1", "w2", held.fence + 1, NOW + 30,
                 seen.signal_seq if signal_seq is None else signal_seq, previous=held)


def test_a_resume_runs_on_what_it_read_as_its_claim_wrote_it() -> None:
    seen = session(status=SessionStatus.FAILED, fence=3, redrive_count=1, reason="boom", expires_at=NOW + 9)
    after = claimed_seen(seen, _taken(seen), 30, ClaimPolicy(redrive_failed=True))
    assert after is not None
    assert (after.status, after.fence, after.lease_owner, after.lease_expires_at) == (
        SessionStatus.RUNNING, 4, "w2", NOW + 30)
    assert (after.redrive_count, after.reason, after.expires_at) == (2, None, None)


def test_a_resume_reads_again_when_its_claim_took_another_record() -> None:
    seen = running(expires=NOW - 1)
    assert claimed_seen(seen, _taken(seen, fence=2), 30, ClaimPolicy()) is None  # another run in between
    assert claimed_seen(seen, replace(_taken(seen), previous=None), 30, ClaimPolicy()) is None
    ended = replace(_taken(seen), previous=PreviousHolder("w1", 1, SessionStatus.FAILED, NOW - 1))
    assert claimed_seen(seen, ended, 30, ClaimPolicy()) is None  # its owner failed it in between


def test_a_resume_reads_again_when_a_signal_came_between_its_read_and_its_claim() -> None:
    seen = running(expires=NOW - 1)
    assert claimed_seen(seen, _taken(seen, signal_seq=1), 30, ClaimPolicy()) is None


def test_external_session_is_never_claimable() -> None:
    msg = claim_refusal(session(owner_kind=OwnerKind.EXTERNAL), NOW, ClaimPolicy(force=True))
    assert msg is not None and "external" in msg


@pytest.mark.parametrize("status", [SessionStatus.COMPLETED, SessionStatus.CANCELLED])
def test_finished_session_is_not_claimable_even_forced(status: SessionStatus) -> None:
    msg = claim_refusal(session(status=status), NOW, ClaimPolicy(force=True))
    assert msg is not None and status.value in msg


def test_waiting_session_is_due_after_wake_at() -> None:
    waiting = session(status=SessionStatus.WAITING, wake_at=NOW + 5)
    assert claim_refusal(waiting, NOW) is not None
    assert claim_refusal(waiting, NOW + 5) is None


def test_waiting_session_is_due_when_a_signal_arrived_after_the_wait() -> None:
    waiting = session(status=SessionStatus.WAITING, wake_at=None, signal_seq=3, wait_seq=3)
    assert not wake_due(waiting, NOW) and claim_refusal(waiting, NOW) is not None
    signalled = replace(waiting, signal_seq=4)
    assert wake_due(signalled, NOW) and claim_refusal(signalled, NOW) is None


def test_failed_session_needs_a_redrive_policy() -> None:
    failed = session(status=SessionStatus.FAILED, reason="boom")
    msg = claim_refusal(failed, NOW)
    assert msg is not None and "FAILED" in msg and "boom" in msg
    assert claim_refusal(failed, NOW, ClaimPolicy(redrive_failed=True)) is None


def test_failed_session_updated_after_the_bound_is_not_redriven() -> None:
    failed = session(status=SessionStatus.FAILED, updated_at=NOW - 10)
    assert claim_refusal(failed, NOW, ClaimPolicy(redrive_failed=True, failed_updated_before=NOW - 11)) is not None
    assert claim_refusal(failed, NOW, ClaimPolicy(redrive_failed=True, failed_updated_before=NOW - 10)) is None


def test_needs_human_blocks_redrive_but_not_force() -> None:
    failed = session(status=SessionStatus.FAILED, needs_human=True, needs_human_reason="bad key")
    msg = claim_refusal(failed, NOW, ClaimPolicy(redrive_failed=True))
    assert msg is not None and "bad key" in msg and "--force" in msg
    assert claim_refusal(failed, NOW, ClaimPolicy(force=True)) is None


def test_redrive_limit_blocks_redrive_but_not_force() -> None:
    failed = session(status=SessionStatus.FAILED, redrive_count=3, max_redrives=3)
    msg = claim_refusal(failed, NOW, ClaimPolicy(redrive_failed=True))
    assert msg is not None and "3 of 3" in msg
    assert claim_refusal(failed, NOW, ClaimPolicy(force=True)) is None


def test_claimed_bumps_fence_and_sets_lease() -> None:
    out = claimed(running(fence=4, expires=NOW - 1), "w9", 30.0, NOW, ClaimPolicy())
    assert (out.status, out.fence, out.lease_owner, out.lease_expires_at, out.updated_at) == (
        SessionStatus.RUNNING, 5, "w9", NOW + 30.0, NOW)
    assert out.redrive_count == 0


def test_claimed_redrive_counts_and_force_clears_needs_human() -> None:
    failed = session(status=SessionStatus.FAILED, needs_human=True, needs_human_reason="x", reason="boom",
                     completed_at=NOW - 50, expires_at=NOW + 999)
    out = claimed(failed, "w1", 30.0, NOW, ClaimPolicy(force=True))
    assert (out.redrive_count, out.needs_human, out.needs_human_reason, out.reason) == (1, False, None, None)
    assert (out.completed_at, out.expires_at) == (None, None)
    kept = claimed(failed, "w1", 30.0, NOW, ClaimPolicy(redrive_failed=True))
    assert kept.needs_human is True


def test_claimed_clears_wake_at() -> None:
    waiting = session(status=SessionStatus.WAITING, wake_at=NOW - 1)
    assert claimed(waiting, "w1", 30.0, NOW, ClaimPolicy()).wake_at is None


def test_status_time_is_wake_at_for_waiting_and_updated_at_otherwise() -> None:
    assert status_time(session()) == NOW - 100
    assert status_time(session(status=SessionStatus.WAITING, wake_at=NOW + 7)) == NOW + 7
    assert status_time(session(status=SessionStatus.WAITING, wake_at=None)) > NOW + 100 * 365 * 86400


# -- leases -------------------------------------------------------------------------------


def test_lease_lost_is_none_for_the_holder() -> None:
    assert lease_lost(running(), LEASE1) is None


def test_lease_lost_after_a_newer_claim_names_both_fences() -> None:
    err = lease_lost(running(owner="w2", fence=2), LEASE1)
    assert isinstance(err, LeaseLostError)
    assert (err.session_id, err.context["fence"], err.context["our_fence"]) == ("s1", 2, 1)
    assert "w2" in str(err) and "fence 2" in str(err)


def test_lease_lost_when_the_session_left_running_at_the_same_fence() -> None:
    err = lease_lost(session(status=SessionStatus.PENDING, fence=1), LEASE1)
    assert err is not None and "PENDING" in str(err)


# -- task writes ----------------------------------------------------------------------------


def test_expected_attempt_is_previous_for_start_and_same_otherwise() -> None:
    assert expected_attempt(TaskWrite(TaskWriteKind.START, "t1", 3)) == 2
    assert expected_attempt(TaskWrite(TaskWriteKind.COMPLETE, "t1", 3)) == 3


def test_newer_fence_may_overwrite_any_unfinished_state() -> None:
    for status in (TaskStatus.RUNNING, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.WAITING):
        t = task(status=status, fence=1, attempt=7)
        assert task_write_allowed(t, LEASE2, TaskWrite(TaskWriteKind.START, "t1", 8))


def test_completed_task_refuses_every_write() -> None:
    t = task(status=TaskStatus.COMPLETED, fence=1, attempt=1)
    for lease in (LEASE1, LEASE2):
        assert not task_write_allowed(t, lease, TaskWrite(TaskWriteKind.COMPLETE, "t1", 1))


def test_same_fence_requires_the_expected_attempt() -> None:
    t = task(status=TaskStatus.RUNNING, fence=1, attempt=1)
    assert task_write_allowed(t, LEASE1, TaskWrite(TaskWriteKind.COMPLETE, "t1", 1))
    assert not task_write_allowed(t, LEASE1, TaskWrite(TaskWriteKind.COMPLETE, "t1", 2))
    assert task_write_allowed(t, LEASE1, TaskWrite(TaskWriteKind.START, "t1", 2))
    assert not task_write_allowed(t, LEASE1, TaskWrite(TaskWriteKind.START, "t1", 1))


def test_older_lease_is_refused_by_a_newer_task_fence() -> None:
    t = task(status=TaskStatus.RUNNING, fence=2, attempt=1)
    assert not task_write_allowed(t, LEASE1, TaskWrite(TaskWriteKind.FAIL, "t1", 1))


def test_rejection_already_present_is_already_applied() -> None:
    t = task(status=TaskStatus.RUNNING, fence=1, attempt=1)
    w = TaskWrite(TaskWriteKind.START, "t1", 1)
    assert classify_rejection(t, running(), LEASE1, w) is WriteOutcome.ALREADY_APPLIED


def test_rejection_of_a_progress_retry_is_already_applied() -> None:
    t = task(status=TaskStatus.RUNNING, fence=1, attempt=1)
    w = TaskWrite(TaskWriteKind.PROGRESS, "t1", 1, progress=Progress(1, 2))
    assert classify_rejection(t, running(), LEASE1, w) is WriteOutcome.ALREADY_APPLIED


def test_rejection_by_another_completion_is_completed_elsewhere() -> None:
    t = task(status=TaskStatus.COMPLETED, fence=1, attempt=1, output="theirs")
    w = TaskWrite(TaskWriteKind.COMPLETE, "t1", 2, output="ours")
    assert classify_rejection(t, running(owner="w2", fence=2), LEASE2, w) is WriteOutcome.COMPLETED_ELSEWHERE


def test_completed_elsewhere_wins_over_a_lost_lease() -> None:
    t = task(status=TaskStatus.COMPLETED, fence=2, attempt=2)
    w = TaskWrite(TaskWriteKind.COMPLETE, "t1", 1)
    assert classify_rejection(t, running(owner="w2", fence=2), LEASE1, w) is WriteOutcome.COMPLETED_ELSEWHERE


def test_rejection_by_a_newer_session_fence_raises_lease_lost() -> None:
    t = task(status=TaskStatus.RUNNING, fence=2, attempt=2)
    with pytest.raises(LeaseLostError, match="fence 2, ours 1"):
        classify_rejection(t, running(owner="w2", fence=2), LEASE1, TaskWrite(TaskWriteKind.FAIL, "t1", 1))


def test_rejection_at_the_same_fence_with_another_attempt_is_stale() -> None:
    t = task(status=TaskStatus.RUNNING, fence=1, attempt=2)
    w = TaskWrite(TaskWriteKind.COMPLETE, "t1", 1)
    assert classify_rejection(t, running(), LEASE1, w) is WriteOutcome.STALE


# -- transitions ----------------------------------------------------------------------------


def test_start_sets_running_fence_attempt_and_clears_the_previous_output() -> None:
    t = task(status=TaskStatus.PENDING, output="old", not_before=NOW - 1, progress=Progress(1, 2))
    out = apply_task_write(t, LEASE2, TaskWrite(TaskWriteKind.START, "t1", 1), NOW)
    assert (out.status, out.fence, out.attempt, out.started_at, out.ended_at) == (
        TaskStatus.RUNNING, 2, 1, NOW, None)
    assert (out.output, out.not_before, out.progress, out.updated_at) == (None, None, Progress(), NOW)


def test_complete_records_output_and_history() -> None:
    t = task(status=TaskStatus.RUNNING, fence=1, attempt=1, started_at=NOW - 3)
    out = apply_task_write(t, LEASE1, TaskWrite(TaskWriteKind.COMPLETE, "t1", 1, output={"a": 1}), NOW)
    assert (out.status, out.output, out.ended_at, out.duration) == (TaskStatus.COMPLETED, {"a": 1}, NOW, 3.0)
    [h] = out.history
    assert (h.attempt, h.fence, h.status, h.started_at, h.ended_at) == (1, 1, TaskStatus.COMPLETED, NOW - 3, NOW)


def test_retry_goes_back_to_pending_with_error_and_backoff() -> None:
    err = ErrorInfo("E", "flaky")
    t = task(status=TaskStatus.RUNNING, fence=1, attempt=1)
    out = apply_task_write(t, LEASE1, TaskWrite(TaskWriteKind.RETRY, "t1", 1, error=err, not_before=NOW + 9), NOW)
    assert (out.status, out.last_error, out.not_before) == (TaskStatus.PENDING, err, NOW + 9)
    assert [(h.status, h.error) for h in out.history] == [(TaskStatus.FAILED, err)]


def test_skip_with_a_reason_records_it_as_the_error() -> None:
    out = apply_task_write(task(), LEASE1, TaskWrite(TaskWriteKind.SKIP, "t1", 0, reason="upstream failed"), NOW)
    assert out.status is TaskStatus.SKIPPED
    assert out.last_error is not None and out.last_error.message == "upstream failed"
    assert not out.last_error.retryable and out.history == ()


def test_history_is_bounded() -> None:
    t = task(status=TaskStatus.RUNNING, fence=1)
    for attempt in range(1, ATTEMPT_HISTORY_LIMIT + 5):
        t = replace(t, attempt=attempt, status=TaskStatus.RUNNING)
        t = apply_task_write(t, LEASE1, TaskWrite(TaskWriteKind.RETRY, "t1", attempt), NOW)
    assert len(t.history) == ATTEMPT_HISTORY_LIMIT
    assert t.history[-1].attempt == ATTEMPT_HISTORY_LIMIT + 4


def test_reset_gives_a_fresh_attempt_budget() -> None:
    t = task(status=TaskStatus.FAILED, fence=1, attempt=3, max_attempts=3, last_error=ErrorInfo("E", "x"))
    assert t.attempts_left == 0
    out = apply_task_write(t, LEASE2, TaskWrite(TaskWriteKind.RESET, "t1", 3), NOW)
    assert (out.status, out.attempt_base, out.attempts_left, out.last_error) == (TaskStatus.PENDING, 3, 3, None)


def test_wait_progress_and_checkpoint_keep_the_status_where_expected() -> None:
    t = task(status=TaskStatus.RUNNING, fence=1, attempt=1)
    waited = apply_task_write(t, LEASE1, TaskWrite(TaskWriteKind.WAIT, "t1", 1, not_before=NOW + 60), NOW)
    assert (waited.status, waited.not_before) == (TaskStatus.WAITING, NOW + 60)
    progressed = apply_task_write(t, LEASE1, TaskWrite(TaskWriteKind.PROGRESS, "t1", 1, progress=Progress(2, 5)), NOW)
    assert (progressed.status, progressed.progress) == (TaskStatus.RUNNING, Progress(2, 5))
    saved = apply_task_write(t, LEASE1, TaskWrite(TaskWriteKind.CHECKPOINT, "t1", 1, checkpoint={"k": 1}), NOW)
    assert (saved.status, saved.checkpoint) == (TaskStatus.RUNNING, {"k": 1})


def test_a_wait_records_the_signal_the_task_waits_for() -> None:
    t = task(status=TaskStatus.RUNNING, fence=1, attempt=1)
    waited = apply_task_write(t, LEASE1, TaskWrite(TaskWriteKind.WAIT, "t1", 1, waiting_for="approval"), NOW)
    assert (waited.status, waited.waiting_for) == (TaskStatus.WAITING, "approval")


def test_a_timer_wait_records_no_signal() -> None:
    t = task(status=TaskStatus.RUNNING, fence=1, attempt=1)
    waited = apply_task_write(t, LEASE1, TaskWrite(TaskWriteKind.WAIT, "t1", 1, not_before=NOW + 60), NOW)
    assert (waited.status, waited.waiting_for) == (TaskStatus.WAITING, None)


@pytest.mark.parametrize("kind", [k for k in TaskWriteKind if rb.TRANSITIONS[k].status not in (None, TaskStatus.WAITING)])
def test_every_write_that_leaves_waiting_forgets_the_signal(kind: TaskWriteKind) -> None:
    t = task(status=TaskStatus.WAITING, fence=1, attempt=1, waiting_for="approval")
    attempt = 2 if kind is TaskWriteKind.START else 1
    assert apply_task_write(t, LEASE1, TaskWrite(kind, "t1", attempt), NOW).waiting_for is None


@pytest.mark.parametrize("kind", [TaskWriteKind.PROGRESS, TaskWriteKind.CHECKPOINT])
def test_a_write_that_keeps_the_status_keeps_the_signal_awaited(kind: TaskWriteKind) -> None:
    t = task(status=TaskStatus.WAITING, fence=1, attempt=1, waiting_for="approval")
    assert apply_task_write(t, LEASE1, TaskWrite(kind, "t1", 1), NOW).waiting_for == "approval"


# -- the rulebook's values ------------------------------------------------------------------


def test_check_graph_names_the_cycle_from_its_smallest_id() -> None:
    with pytest.raises(CycleError) as info:
        rb.check_graph([("b", ("c",)), ("c", ("a",)), ("a", ("b",))], where="pipeline p")
    assert info.value.cycle == ["a", "b", "c"]
    assert "pipeline p has a cycle: a -> b -> c -> a" in str(info.value)


def test_check_graph_reports_a_duplicate_id_before_an_unknown_dependency() -> None:
    with pytest.raises(PipelineDefinitionError, match="two tasks with id 'a'"):
        rb.check_graph([("a", ("zz",)), ("a", ())], where="session s")


def test_check_graph_accepts_dependencies_on_known_tasks_and_suggests_close_ids() -> None:
    rb.check_graph([("new", ("old",))], where="added", known={"old"})
    with pytest.raises(PipelineDefinitionError, match="did you mean 'old'"):
        rb.check_graph([("new", ("odl",))], where="added", known={"old"})


def test_every_task_write_kind_has_a_transition() -> None:
    assert set(rb.TRANSITIONS) == set(TaskWriteKind)


def test_a_fenced_change_expects_the_fence_owner_and_running_status() -> None:
    change = rb.Renew("s1", LEASE1, 30).decide(None, NOW)
    assert change is not None
    assert change.expect == {"fence": 1, "lease_owner": "w1", "status": SessionStatus.RUNNING}
    assert change.changes == {"lease_expires_at": NOW + 30}


def test_a_newer_owners_equal_values_do_not_look_like_our_lost_write() -> None:
    change = rb.Renew("s1", LEASE1, 30).decide(None, NOW)
    assert change is not None
    theirs = running(owner="w2", fence=2, expires=NOW + 30)
    assert not change.shown_by(theirs)
    assert change.shown_by(running(expires=NOW + 30))


def test_deciding_a_fenced_write_on_a_newer_claim_raises_lease_lost() -> None:
    with pytest.raises(LeaseLostError):
        rb.Finish("s1", LEASE1, SessionStatus.COMPLETED).decide(running(owner="w2", fence=2), NOW)


def test_a_wait_without_wake_at_sorts_at_the_far_future_of_the_index() -> None:
    change = rb.Wait("s1", LEASE1, None).decide(None, NOW)
    assert change is not None and change.index_time() == (SessionStatus.WAITING, NEVER)


def test_retention_is_counted_in_whole_seconds_on_every_backend() -> None:
    assert rb.Retained(NOW + 0.75).resolve(86400.9) == float(int(NOW) + 86400)


def test_payload_size_is_measured_in_utf8_bytes_of_the_stored_json() -> None:
    limit = rb.Payload.TASK_INPUT.limit
    assert limit is not None
    fits = "é" * ((limit - 2) // 2)  # two bytes each, plus the two quotes of the JSON string
    assert rb.encode(default_codec, rb.Payload.TASK_INPUT, fits, session_id="s", task_id="t")
    with pytest.raises(PayloadTooLargeError) as info:
        rb.encode(default_codec, rb.Payload.TASK_INPUT, fits + "é", session_id="s", task_id="t")
    assert (info.value.session_id, info.value.task_id, info.value.limit) == ("s", "t", limit)
