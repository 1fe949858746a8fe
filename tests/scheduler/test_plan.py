"""The scheduler's pure core, without a store or an event loop: outcomes in, writes and launches out."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from orchestrator.agents import AgentContext, AgentTimeoutError, NonRetryableError, RetryPolicy, agent
from orchestrator.graph import Pipeline
from orchestrator.scheduler.messages import Cancelled, Failed, Finished, Launch, TimedOut, Waiting
from orchestrator.scheduler.plan import SessionPlan
from orchestrator.scheduler.step import Finish, Step, Suspend
from orchestrator.store import (
    ErrorInfo,
    NewTask,
    Progress,
    SessionRecord,
    SessionSnapshot,
    SessionStatus,
    SignalRecord,
    TaskRecord,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
    WriteOutcome,
    WriteResult,
)

NOW = 1_000.0
POLICY = RetryPolicy(max_attempts=3, initial_backoff=1.0, backoff_factor=2.0, jitter=0.0)


@agent(name="work", retry=POLICY)
async def work(ctx: AgentContext) -> None:
    """Never run here: the plan only needs the agent's name and retry policy."""


@agent(name="review", retry=POLICY)
async def review(ctx: AgentContext) -> None:
    """A second agent, for per-agent limits."""


def _pipeline(*tasks: tuple[str, str, tuple[str, ...], int]) -> Pipeline:
    pipe = Pipeline("plan-test", agents=[work, review])
    for tid, agent_name, deps, priority in tasks:
        pipe.task(tid, agent_name, depends_on=deps, priority=priority)
    return pipe


def _plan(
    pipe: Pipeline,
    *,
    stored: Mapping[str, Mapping[str, Any]] | None = None,
    session: Mapping[str, Any] | None = None,
    signals: Mapping[tuple[str, str], SignalRecord] | None = None,
    signal_seq: int = 0,
    **options: Any,
) -> SessionPlan:
    """A plan over `pipe` as freshly created, with `stored` fields overriding task records."""
    records = {
        t.task_id: TaskRecord(
            task_id=t.task_id, agent=t.agent, status=TaskStatus.PENDING, input=t.input, priority=t.priority,
            max_attempts=t.max_attempts, depends_on=t.depends_on,
        )
        for t in pipe.new_tasks()
    }
    for tid, fields in (stored or {}).items():
        records[tid] = replace(records[tid], **fields)
    record = SessionRecord("s-1", pipe.name, pipe.version, SessionStatus.RUNNING, input={"goal": "x"}, fence=1,
                           **(session or {}))
    snapshot = SessionSnapshot(record, records, (), dict(signals or {}))
    plan = SessionPlan(snapshot, pipe, fence=1, signal_seq=signal_seq, rng=random.Random(0), **options)
    return plan


def _kinds(step: Step) -> list[tuple[str, str]]:
    return [(w.kind.value, w.task_id) for w in step.writes]


def _commit(plan: SessionPlan, step: Step, outcome: WriteOutcome = WriteOutcome.APPLIED) -> Step:
    """Every write of `step` lands as `outcome`."""
    return plan.committed(step.writes, [WriteResult(w.task_id, outcome) for w in step.writes])


def _run_ready(plan: SessionPlan, now: float = NOW) -> tuple[Launch, ...]:
    """Commit the next batch; the launches that follow it."""
    step = plan.next_step(now)
    assert step.writes, "nothing to commit"
    return _commit(plan, step).launches


def _opened(plan: SessionPlan, now: float = NOW) -> SessionPlan:
    step = plan.open(now)
    if step.writes:
        _commit(plan, step)
    return plan


def test_ready_tasks_start_in_priority_order_up_to_the_concurrency_limit() -> None:
    pipe = _pipeline(("low", "work", (), 3), ("urgent", "work", (), 0), ("normal", "work", (), 2),
                     ("high", "work", (), 1))
    plan = _opened(_plan(pipe, concurrency=2))

    step = plan.next_step(NOW)

    assert _kinds(step) == [("start", "urgent"), ("start", "high")]
    assert [w.attempt for w in step.writes] == [1, 1]


def test_a_per_agent_limit_holds_back_that_agent_but_not_the_others() -> None:
    pipe = _pipeline(("w1", "work", (), 0), ("w2", "work", (), 0), ("r1", "review", (), 1))
    plan = _opened(_plan(pipe, agent_concurrency={"work": 1}))

    assert _kinds(plan.next_step(NOW)) == [("start", "w1"), ("start", "r1")]


def test_agents_launch_only_once_their_start_is_committed_with_the_outputs_of_their_deps() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2), ("b", "work", ("a",), 2))))
    step = plan.next_step(NOW)
    assert step.launches == ()

    [launch] = _commit(plan, step).launches
    plan.attempt_ended(Finished("a", 1, {"n": 1}), NOW)
    [then] = _run_ready(plan)

    assert (launch.task_id, launch.attempt, launch.input) == ("a", 1, {"goal": "x"})
    assert (then.task_id, then.deps) == ("b", {"a": {"n": 1}})


def test_a_completion_is_committed_together_with_the_starts_it_unlocks() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2), ("b", "work", ("a",), 2), ("c", "work", ("a",), 2))))
    _run_ready(plan)

    plan.attempt_ended(Finished("a", 1, {"n": 1}), NOW)
    step = plan.next_step(NOW)

    assert _kinds(step) == [("complete", "a"), ("start", "b"), ("start", "c")]
    assert step.writes[0].output == {"n": 1}


def test_a_failure_with_attempts_left_is_a_retry_not_before_its_backoff() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2))))
    _run_ready(plan)

    ended = plan.attempt_ended(Failed("a", 1, RuntimeError("flaky")), NOW)
    step = plan.next_step(NOW)

    [retry] = step.writes
    assert (retry.kind, retry.attempt, retry.not_before) == (TaskWriteKind.RETRY, 1, NOW + POLICY.delay(1))
    assert retry.error is not None and retry.error.message == "flaky"
    assert [(n.kind, n.level) for n in ended.notes] == [("retry", "WARNING")]
    assert _commit(plan, step).timers == (NOW + 1.0,)


def test_a_retry_starts_as_the_next_attempt_once_its_backoff_passed() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2))))
    _run_ready(plan)
    plan.attempt_ended(Failed("a", 1, RuntimeError("flaky")), NOW)
    _commit(plan, plan.next_step(NOW))

    assert plan.next_step(NOW + 0.5).idle
    plan.timer_fired(NOW + 1.0)
    step = plan.next_step(NOW + 1.0)

    assert [(w.kind, w.attempt) for w in step.writes] == [(TaskWriteKind.START, 2)]


def test_a_non_retryable_error_fails_the_task_at_once() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2))))
    _run_ready(plan)

    plan.attempt_ended(Failed("a", 1, NonRetryableError("bad input")), NOW)

    assert _kinds(plan.next_step(NOW)) == [("fail", "a")]


def test_a_timed_out_attempt_is_retried_like_a_failure() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2))))
    _run_ready(plan)

    ended = plan.attempt_ended(TimedOut("a", 1, AgentTimeoutError("work", 5.0), duration=5.0), NOW)
    [retry] = plan.next_step(NOW).writes

    assert retry.kind is TaskWriteKind.RETRY
    assert retry.error is not None and retry.error.type.endswith("AgentTimeoutError")
    assert [(m.agent, m.duration_ms, m.error) for m in ended.metrics] == [("work", 5000.0, True)]


def test_a_final_failure_skips_its_dependents_and_the_independent_branch_continues() -> None:
    pipe = _pipeline(("bad", "work", (), 2), ("after-bad", "work", ("bad",), 2), ("last", "work", ("after-bad",), 2),
                     ("good", "work", (), 2), ("after-good", "work", ("good",), 2))
    plan = _opened(_plan(pipe, stored={"bad": {"attempt": 2}}))
    _run_ready(plan)

    plan.attempt_ended(Failed("bad", 3, ValueError("the widget is broken")), NOW)
    plan.attempt_ended(Finished("good", 1, "ok"), NOW)
    step = plan.next_step(NOW)

    assert _kinds(step) == [("fail", "bad"), ("skip", "after-bad"), ("skip", "last"), ("complete", "good"),
                            ("start", "after-good")]
    _commit(plan, step)
    plan.attempt_ended(Finished("after-good", 1, "ok"), NOW)
    _commit(plan, plan.next_step(NOW))
    end = plan.next_step(NOW).end
    assert isinstance(end, Finish) and end.status is SessionStatus.FAILED
    assert end.reason == ("task bad failed after 3 attempt(s): ValueError: the widget is broken; "
                          "2 dependent task(s) skipped")


def test_fail_fast_cancels_the_running_and_the_unstarted_tasks_on_a_final_failure() -> None:
    pipe = _pipeline(("bad", "work", (), 0), ("busy", "work", (), 1), ("later", "work", (), 2))
    plan = _opened(_plan(pipe, stored={"bad": {"max_attempts": 1}}, concurrency=2, fail_fast=True))
    _run_ready(plan)

    ended = plan.attempt_ended(Failed("bad", 1, RuntimeError("boom")), NOW)

    assert ended.cancel == ("busy",)
    assert _kinds(plan.next_step(NOW)) == [("fail", "bad"), ("cancel", "later")]


def test_when_all_tasks_complete_the_session_finishes_completed() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2))))
    _run_ready(plan)
    plan.attempt_ended(Finished("a", 1, {"n": 1}), NOW)
    _commit(plan, plan.next_step(NOW))

    assert plan.next_step(NOW).end == Finish(SessionStatus.COMPLETED, None)
    assert (plan.outputs(), plan.statuses()) == ({"a": {"n": 1}}, {"a": TaskStatus.COMPLETED})


def test_a_session_failing_at_its_redrive_limit_is_flagged_for_a_person() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2)), stored={"a": {"max_attempts": 1}},
                         session={"redrive_count": 2, "max_redrives": 2}))
    _run_ready(plan)
    plan.attempt_ended(Failed("a", 1, RuntimeError("still broken")), NOW)
    _commit(plan, plan.next_step(NOW))

    end = plan.next_step(NOW).end

    assert isinstance(end, Finish) and end.needs_human_reason is not None
    assert end.needs_human_reason.startswith("failed again after 2 redrive(s): task a failed")


def test_a_waiting_task_with_nothing_running_suspends_the_session_until_the_earliest_deadline() -> None:
    plan = _opened(_plan(_pipeline(("ask", "work", (), 2), ("ask2", "work", (), 2), ("then", "work", ("ask",), 2))))
    _run_ready(plan)

    plan.attempt_ended(Waiting("ask", 1, "approve", deadline=NOW + 60), NOW)
    plan.attempt_ended(Waiting("ask2", 1, "approve", deadline=NOW + 30), NOW)
    step = plan.next_step(NOW)
    assert _kinds(step) == [("wait", "ask"), ("wait", "ask2")]
    assert _commit(plan, step).timers == (NOW + 60, NOW + 30)

    assert plan.next_step(NOW).end == Suspend(wake_at=NOW + 30)


def test_a_signal_newer_than_the_wait_wakes_the_task_in_the_same_attempt() -> None:
    plan = _opened(_plan(_pipeline(("ask", "work", (), 2))))
    _run_ready(plan)
    plan.attempt_ended(Waiting("ask", 1, "approve", deadline=NOW + 60), NOW)
    _commit(plan, plan.next_step(NOW))

    step = plan.signals_arrived(1, {("ask", "approve"): SignalRecord("ask", "approve", {"ok": True}, 1, NOW)}, NOW)
    wake = plan.next_step(NOW)
    [launch] = _commit(plan, wake).launches

    assert [(n.kind, n.task_id, n.data["signal"]) for n in step.notes] == [("wake", "ask", "approve")]
    assert [(w.kind, w.attempt) for w in wake.writes] == [(TaskWriteKind.WAKE, 1)]
    assert (launch.attempt, launch.wait_deadline) == (1, NOW + 60)
    assert plan.signal("ask", "approve") is not None


def test_a_signal_already_seen_when_the_wait_began_does_not_wake_it() -> None:
    old = {("ask", "other"): SignalRecord("ask", "other", None, 1, NOW - 5)}
    plan = _opened(_plan(_pipeline(("ask", "work", (), 2)), signals=old, signal_seq=1))
    _run_ready(plan)
    plan.attempt_ended(Waiting("ask", 1, "approve"), NOW)
    _commit(plan, plan.next_step(NOW))

    plan.signals_arrived(1, old, NOW)

    assert plan.next_step(NOW).end == Suspend(wake_at=None)


def test_a_wait_past_its_deadline_wakes_on_its_timer() -> None:
    plan = _opened(_plan(_pipeline(("ask", "work", (), 2)), stored={"ask": {
        "status": TaskStatus.WAITING, "attempt": 1, "not_before": NOW + 10}}))
    assert plan.next_step(NOW).end == Suspend(wake_at=NOW + 10)

    plan.timer_fired(NOW + 10)

    assert [(w.kind, w.attempt) for w in plan.next_step(NOW + 10).writes] == [(TaskWriteKind.WAKE, 1)]


def test_a_wake_by_its_deadline_is_noted_without_a_signal() -> None:
    plan = _opened(_plan(_pipeline(("ask", "work", (), 2)), stored={"ask": {
        "status": TaskStatus.WAITING, "attempt": 1, "not_before": NOW + 10}}))

    step = plan.timer_fired(NOW + 10)

    assert [(n.kind, n.task_id, n.data["signal"], n.data["deadline"]) for n in step.notes] == [
        ("wake", "ask", None, NOW + 10)]


def test_a_cancel_request_cancels_running_agents_and_writes_cancel_for_the_rest() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2), ("b", "work", ("a",), 2)), concurrency=1))
    _run_ready(plan)

    step = plan.cancel_requested("stop it")
    assert step.cancel == ("a",)
    assert [(w.kind, w.task_id, w.reason) for w in plan.next_step(NOW).writes] == [
        (TaskWriteKind.CANCEL, "b", "stop it")]
    plan.attempt_ended(Cancelled("a", 1), NOW)
    assert _kinds(plan.next_step(NOW)) == [("cancel", "a")]

    assert plan.next_step(NOW).end == Finish(SessionStatus.CANCELLED, "stop it")


def test_tasks_added_by_an_agent_become_ready_once_its_completion_lands() -> None:
    plan = _opened(_plan(_pipeline(("plan", "work", (), 2))))
    _run_ready(plan)
    sub = NewTask("sub", "work", {"part": 1}, depends_on=("plan",), added_by="plan")

    ended = plan.attempt_ended(Finished("plan", 1, {"parts": 1}, added=(sub,)), NOW)
    step = plan.next_step(NOW)
    assert [(a.parent, a.attempt, a.tasks) for a in ended.stage] == [("plan", 1, (sub,))]
    assert _kinds(step) == [("complete", "plan")]
    _commit(plan, step)

    [launch] = _run_ready(plan)
    assert (launch.task_id, launch.input, launch.deps) == ("sub", {"part": 1}, {"plan": {"parts": 1}})


def test_a_retry_in_the_same_run_starts_from_the_checkpoint_its_failed_attempt_saved() -> None:
    plan = _opened(_plan(_pipeline(("t", "work", (), 2)), stored={"t": {"checkpoint": {"step": 0}}}))
    [first] = _run_ready(plan)

    plan.checkpointed("t", {"step": 3})
    plan.attempt_ended(Failed("t", 1, RuntimeError("lost the connection at step 3")), NOW)
    _commit(plan, plan.next_step(NOW))
    plan.timer_fired(NOW + 1.0)
    [second] = _run_ready(plan, NOW + 1.0)

    assert (first.state, second.state) == ({"step": 0}, {"step": 3})


def test_a_task_completed_by_another_owner_is_adopted_instead_of_launched() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2), ("b", "work", ("a",), 2))))
    step = plan.next_step(NOW)
    done = TaskRecord("a", "work", TaskStatus.COMPLETED, output={"by": "other"}, attempt=1)

    adopted = plan.committed(step.writes, [WriteResult("a", WriteOutcome.COMPLETED_ELSEWHERE, done)])

    assert adopted.launches == () and adopted.adopt == ("a",)
    [launch] = _run_ready(plan)
    assert (launch.task_id, launch.deps) == ("b", {"a": {"by": "other"}})


def test_a_task_interrupted_by_a_crash_runs_again_as_the_next_attempt() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2)), stored={"a": {"status": TaskStatus.RUNNING, "attempt": 1}}))

    assert [(w.kind, w.attempt) for w in plan.next_step(NOW).writes] == [(TaskWriteKind.START, 2)]


def test_a_redrive_resets_failed_and_skipped_tasks_with_a_fresh_retry_budget() -> None:
    error = ErrorInfo("builtins.RuntimeError", "boom")
    stored: dict[str, Mapping[str, Any]] = {
        "a": {"status": TaskStatus.FAILED, "attempt": 3, "last_error": error},
        "b": {"status": TaskStatus.SKIPPED},
    }
    plan = _plan(_pipeline(("a", "work", (), 2), ("b", "work", ("a",), 2)), stored=stored,
                 session={"redrive_count": 1}, redrive=True)

    opened = plan.open(NOW)
    assert [(w.kind, w.task_id, w.attempt) for w in opened.writes] == [
        (TaskWriteKind.RESET, "a", 3), (TaskWriteKind.RESET, "b", 0)]
    assert [n.message for n in _commit(plan, opened).notes] == ["redrive 1: reset 2 task(s)"]
    _run_ready(plan)
    plan.attempt_ended(Failed("a", 4, RuntimeError("again")), NOW)

    assert _kinds(plan.next_step(NOW)) == [("retry", "a")]  # attempt 4 is the first of the redrive


def test_failures_decided_by_an_earlier_owner_skip_their_dependents_without_a_rerun() -> None:
    stored = {"a": {"status": TaskStatus.FAILED, "attempt": 3, "last_error": ErrorInfo("E", "boom")}}
    plan = _opened(_plan(_pipeline(("a", "work", (), 2), ("b", "work", ("a",), 2)), stored=stored))

    assert _kinds(plan.next_step(NOW)) == [("skip", "b")]
    end = plan.next_step(NOW).end
    assert isinstance(end, Finish) and end.reason == "task a failed: boom; 1 dependent task(s) skipped"


def test_tasks_blocked_by_a_dependency_that_can_never_complete_are_skipped() -> None:
    stored = {"a": {"status": TaskStatus.CANCELLED, "attempt": 1}}
    plan = _opened(_plan(_pipeline(("a", "work", (), 2), ("b", "work", ("a",), 2)), stored=stored))

    step = plan.next_step(NOW)

    assert [(w.kind, w.task_id, w.reason) for w in step.writes] == [
        (TaskWriteKind.SKIP, "b", "blocked by an unfinished dependency")]


def test_a_completion_carries_the_last_progress_of_its_own_attempt() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2))))
    _run_ready(plan)
    plan.report_progress("a", 1, Progress(2, 5, "copy"))

    plan.attempt_ended(Finished("a", 1, None), NOW)

    assert plan.next_step(NOW).writes[0].progress == Progress(2, 5, "copy")
    assert plan.progress_writes() == []


def test_progress_is_written_for_the_running_attempt_only() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2))))
    _run_ready(plan)
    plan.report_progress("a", 1, Progress(1, 3))
    plan.report_progress("a", 1, Progress(2, 3))

    assert plan.progress_writes() == [TaskWrite(TaskWriteKind.PROGRESS, "a", 1, progress=Progress(2, 3))]
    plan.report_progress("a", 0, Progress(3, 3))  # a late report of an older attempt
    assert plan.progress_writes() == []


def test_session_progress_is_reported_only_when_it_changed() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2), ("b", "review", (), 2))))
    assert plan.session_progress() == (Progress(0, 2), [])
    assert plan.session_progress() is None
    _run_ready(plan)

    assert plan.session_progress() == (Progress(0, 2), ["review", "work"])
    assert plan.session_progress(final=True) == (Progress(0, 2), [])


def test_session_progress_counts_completed_tasks_only_so_a_failed_session_never_reads_all_done() -> None:
    stored = {"a": {"status": TaskStatus.COMPLETED, "attempt": 1},
              "b": {"status": TaskStatus.FAILED, "attempt": 3, "last_error": ErrorInfo("E", "boom")}}
    plan = _opened(_plan(_pipeline(("a", "work", (), 2), ("b", "work", ("a",), 2), ("c", "work", ("b",), 2)),
                         stored=stored))
    assert _kinds(plan.next_step(NOW)) == [("skip", "c")]
    assert isinstance(plan.next_step(NOW).end, Finish)

    assert plan.session_progress(final=True) == (Progress(1, 3), [])


def test_after_the_lease_is_lost_outcomes_free_their_slot_but_decide_nothing() -> None:
    plan = _opened(_plan(_pipeline(("a", "work", (), 2))))
    _run_ready(plan)
    plan.halt()

    ended = plan.attempt_ended(Finished("a", 1, "late", duration=0.5), NOW)

    assert len(ended.metrics) == 1 and ended.writes == ()
    assert plan.next_step(NOW).idle and plan.statuses() == {"a": TaskStatus.RUNNING}
