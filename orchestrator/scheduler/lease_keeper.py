"""Keeping a session's lease: renew it in the background, stop everything if it lapses.

The renewal loop also carries news from the session item: a stored cancel request and
a newer signal sequence. A watchdog compares the clock with the local deadline (the
lease expiry of the last successful renewal, minus the clock-skew margin): past it,
the runner stops its agents and writes nothing more, even if no write was rejected.
Renewals run on the event loop; an agent that blocks the loop delays them, which is
why every write also checks the deadline first (run CPU-bound agents with
executor="thread" or "process").
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from orchestrator.clock import format_ts
from orchestrator.errors import LeaseLostError, OrchestratorError

if TYPE_CHECKING:
    from orchestrator.scheduler.runner import SessionRunner

__all__ = ["LeaseKeeper"]

_log = logging.getLogger("orchestrator.lease")


class LeaseKeeper:
    """Renews one runner's lease and enforces its local deadline."""

    def __init__(self, runner: SessionRunner) -> None:
        self._runner = runner
        opts = runner.options
        expires = runner.lease.expires_at
        now = runner.clock.now()
        self.deadline = (expires if expires is not None else now + opts.lease_seconds) - opts.clock_skew_margin
        self._error: LeaseLostError | None = None

    def touch(self) -> None:
        """An agent said it is alive; renewal is periodic regardless, so nothing to do now."""

    def check(self) -> None:
        """Raise LeaseLostError if the lease was lost or its local deadline passed."""
        if self._error is not None:
            raise self._error
        if self._runner.lease.expires_at is not None and self._runner.clock.now() >= self.deadline:
            self._lose(self._deadline_error())
            assert self._error is not None
            raise self._error

    def _deadline_error(self) -> LeaseLostError:
        r = self._runner
        return LeaseLostError(
            f"session {r.session_id}: the lease of {r.lease.owner} (fence {r.lease.fence}) could not be renewed "
            f"before its local deadline {format_ts(self.deadline)}; agents stopped, nothing more is written. "
            f"Another worker may resume it after the lease expires",
            session_id=r.session_id,
            fence=r.lease.fence,
        )

    def _lose(self, error: LeaseLostError) -> None:
        if self._error is None:
            self._error = error
            _log.warning("%s", error)
            self._runner.lease_lost(error)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if self._runner.lease.expires_at is None:  # an external-style lease never expires
            task_status.started()
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew_loop)
            tg.start_soon(self._watchdog)
            task_status.started()

    async def _renew_loop(self) -> None:
        r = self._runner
        opts = r.options
        while self._error is None:
            await r.clock.sleep(opts.heartbeat_interval)
            sent = r.clock.now()
            try:
                renewed, session = await r.store.renew_lease(r.lease, opts.lease_seconds)
            except LeaseLostError as exc:
                self._lose(exc)
                return
            except (OrchestratorError, OSError):
                _log.warning("session %s: lease renewal failed; retrying until %s", r.session_id,
                             format_ts(self.deadline), exc_info=True)
                continue
            self.deadline = sent + opts.lease_seconds - opts.clock_skew_margin
            # Keep our own signal_seq: it must stay the sequence of signals we have *loaded*,
            # or a wait could be recorded over a signal we never saw.
            r.lease = replace(r.lease, expires_at=renewed.expires_at)
            if session.cancel_requested:
                r.notify("cancel", session.reason or "cancel requested")
            if session.signal_seq > r.lease.signal_seq:
                r.notify("signal")

    async def _watchdog(self) -> None:
        r = self._runner
        while self._error is None:
            remaining = self.deadline - r.clock.now()
            if remaining <= 0:
                self._lose(self._deadline_error())
                return
            await r.clock.sleep(min(remaining, r.options.heartbeat_interval / 2))
