"""Lifecycle log records: `orchestrator.lifecycle` says what happened to a session, with its ids as fields."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.agents import AgentContext, RetryPolicy, agent
from orchestrator.errors import LeaseLostError
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, run
from orchestrator.store import SessionStatus, open_store
from orchestrator.testing import FakeClock

from .apps import SIGNAL

pytestmark = pytest.mark.anyio


@agent(retry=RetryPolicy(max_attempts=2, initial_backoff=0.0, jitter=0.0))
async def wobbly(ctx: AgentContext) -> str:
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return "steady"


RETRY_ONCE = Pipeline("logs", agents=[wobbly]).task("wobble", "wobbly")


def _f(record: logging.LogRecord, name: str) -> Any:
    """A field the record got from `extra` (None when absent)."""
    return record.__dict__.get(name)


def _lifecycle(caplog: pytest.LogCaptureFixture) -> dict[str, logging.LogRecord]:
    return {_f(r, "event"): r for r in caplog.records if r.name == "orchestrator.lifecycle"}


async def test_a_run_logs_its_claim_retries_and_end_with_the_session_and_task_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator")
    async with open_store(f"sqlite://{tmp_path / 'l.db'}") as store:
        result = await run(RETRY_ONCE, store=store, session_id="l1", options=RunOptions(worker_id="w1"))
    assert result.status is SessionStatus.COMPLETED

    records = _lifecycle(caplog)
    claim, retry, end = records["claim"], records["retry"], records["end"]
    assert (_f(claim, "session_id"), _f(claim, "owner"), _f(claim, "fence"), _f(claim, "how")) == (
        "l1", "w1", 1, "claim")
    assert claim.getMessage().startswith("session l1: w1 holds the session at fence 1")
    assert (_f(retry, "session_id"), _f(retry, "task_id"), _f(retry, "attempt"),
            _f(retry, "error_type")) == ("l1", "wobble", 1, "builtins.RuntimeError")
    assert retry.levelno == logging.INFO and "the first attempt fails" in retry.getMessage()
    assert (_f(end, "session_id"), _f(end, "status"), end.levelno) == ("l1", "COMPLETED", logging.INFO)
    assert _f(end, "duration_s") >= 0
    assert _f(end, "task_id") is None


async def test_a_final_failure_is_logged_naming_the_task_and_the_attempt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    @agent(retry=RetryPolicy(max_attempts=1))
    async def broken(ctx: AgentContext) -> None:
        raise ValueError("always")

    caplog.set_level(logging.INFO, logger="orchestrator")
    async with open_store(f"sqlite://{tmp_path / 'l.db'}") as store:
        result = await run(Pipeline("broken", agents=[broken]).task("b", "broken"), store=store, session_id="l2")
    assert result.status is SessionStatus.FAILED

    records = _lifecycle(caplog)
    failed = records["failed"]
    assert (_f(failed, "session_id"), _f(failed, "task_id"), _f(failed, "attempt"), _f(failed, "error_type")) == (
        "l2", "b", 1, "builtins.ValueError")
    assert failed.levelno == logging.INFO
    assert (_f(records["end"], "status"), records["end"].levelno) == ("FAILED", logging.INFO)
    assert records["end"].getMessage().startswith("session l2: FAILED after ")


async def test_a_wait_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator")
    async with open_store(f"sqlite://{tmp_path / 'l.db'}") as store:
        result = await run(SIGNAL, {"dir": str(tmp_path)}, store=store, session_id="l3")
    assert result.status is SessionStatus.WAITING

    waits = [r for r in caplog.records if r.name == "orchestrator.lifecycle" and _f(r, "event") == "wait"]
    assert [(_f(r, "session_id"), _f(r, "task_id")) for r in waits] == [("l3", "ask"), ("l3", None)]
    assert "session waits until a signal arrives" in waits[-1].getMessage()


async def test_a_lost_lease_is_logged_as_a_warning_with_the_fence_held(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    started = anyio.Event()

    @agent(name="block")
    async def block(ctx: AgentContext) -> None:
        started.set()
        await anyio.sleep_forever()

    caplog.set_level(logging.INFO, logger="orchestrator")
    lost: list[LeaseLostError] = []
    async with open_store(f"sqlite://{tmp_path / 'l.db'}", clock=clock) as store:

        async def go() -> None:
            try:
                await run(Pipeline("stuck", agents=[block]).task("x", "block"), store=store, session_id="l4",
                          options=RunOptions(worker_id="w1"))
            except LeaseLostError as exc:
                lost.append(exc)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(go)
                await started.wait()
                clock.advance(60)  # past the local deadline without a renewal: the watchdog gives up
    assert len(lost) == 1

    record = _lifecycle(caplog)["lease_lost"]
    assert (_f(record, "session_id"), _f(record, "owner"), _f(record, "fence")) == ("l4", "w1", 1)
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("session l4: w1 lost its lease at fence 1: session l4: the lease of w1")
