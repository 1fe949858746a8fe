"""Keeping a session's lease: renew it in the background, stop everything if it lapses.

The keeper owns the `Lease`: nobody else replaces it. The renewal loop also carries
news from the session item (a stored cancel request, a newer signal sequence), which
it reports to a `LeaseListener`. A watchdog compares the clock with the local deadline
(the lease expiry of the last successful renewal, minus the clock-skew margin): past
it, the listener hears `lease_lost` even if no write was rejected. The keeper is also
the `orchestrator.store.deadline.Deadline` of every store call of its run: none is sent
past the deadline. Renewals run on the
event loop; an agent that blocks the loop delays them, which is why every write also
calls `check()` first (run CPU-bound agents with executor="thread" or "process").
"""

from __future__ import annotations

import logging
from dataclasses import replace

import anyio
from anyio.abc import TaskStatus

from orchestrator.clock import Clock, format_ts
from orchestrator.errors import LeaseLostError, OrchestratorError
from orchestrator.scheduler.options import RunOptions
from orchestrator.scheduler.ports import LeaseListener
from orchestrator.store.protocol import Store
from orchestrator.store.records import Lease

__all__ = ["LeaseKeeper"]

_log = logging.getLogger("orchestrator.lease")


class LeaseKeeper:
    """Owns one session's lease: renews it, enforces its local deadline, reports news."""

    def __init__(self, store: Store, lease: Lease, options: RunOptions, clock: Clock, listener: LeaseListener) -> None:
        self._store = store
        self._lease = lease
        self._options = options
        self._clock = clock
        self._listener = listener
        expires = lease.expires_at
        now = clock.now()
        self.deadline = (expires if expires is not None else now + options.lease_seconds) - options.clock_skew_margin
        self._error: LeaseLostError | None = None
        self._ending = False

    @property
    def lease(self) -> Lease:
        """The lease as last renewed, with the signal sequence last loaded."""
        return self._lease

    @property
    def lost(self) -> bool:
        return self._error is not None

    def touch(self) -> None:
        """An agent said it is alive; renewal is periodic regardless, so nothing to do now."""

    def signals_loaded(self, signal_seq: int) -> None:
        """The runner loaded signals up to `signal_seq`: a wait may now be recorded over them."""
        self._lease = replace(self._lease, signal_seq=signal_seq)

    # -- orchestrator.store.deadline.Deadline: every store call of the run is bounded ------

    def deadline_at(self) -> float | None:
        return None if self._lease.expires_at is None else self.deadline

    def deadline_error(self) -> Exception:
        """The lost lease a store call raises instead of sending past the deadline."""
        if self._error is None:
            self._lose(self._deadline_error())
        assert self._error is not None
        return self._error

    def check(self) -> None:
        """Raise LeaseLostError if the lease was lost or its local deadline passed."""
        if self._error is not None:
            raise self._error
        if self._lease.expires_at is not None and self._clock.now() >= self.deadline:
            self._lose(self._deadline_error())
            assert self._error is not None
            raise self._error

    def _deadline_error(self) -> LeaseLostError:
        lease = self._lease
        return LeaseLostError.deadline_passed(lease.session_id, lease.owner, lease.fence, format_ts(self.deadline))

    def _lose(self, error: LeaseLostError) -> None:
        if self._error is None:
            self._error = error
            # The listener records the loss (a lifecycle event and WARNING record); this says why.
            _log.debug("%s", error, extra={"session_id": self._lease.session_id, "owner": self._lease.owner,
                                           "fence": self._lease.fence})
            self._listener.lease_lost(error)

    def ending(self, value: bool) -> None:
        """While the runner writes the session's end (finish or wait), no renewal is sent, and
        one already in flight that the end refuses says nothing: the end write decides. The
        deadline still bounds everything. False again when a wait did not happen."""
        self._ending = value

    def lose(self, error: LeaseLostError) -> None:
        """Someone else found the lease lost (a fenced write was refused): stop as if we had."""
        self._lose(error)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Renew and watch until cancelled or lost (an external-style lease never expires)."""
        if self._lease.expires_at is None:
            task_status.started()
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew_loop)
            tg.start_soon(self._watchdog)
            task_status.started()

    async def _renew_loop(self) -> None:
        opts = self._options
        while self._error is None:
            await self._clock.sleep(opts.heartbeat_interval)
            if self._ending:
                continue
            sent = self._clock.now()
            try:
                renewed, session = await self._store.renew_lease(self._lease, opts.lease_seconds)
            except LeaseLostError as exc:
                if self._ending:
                    continue
                self._lose(exc)
                return
            except (OrchestratorError, OSError):
                _log.warning("session %s: lease renewal failed; retrying until %s", self._lease.session_id,
                             format_ts(self.deadline), exc_info=True, extra={"session_id": self._lease.session_id})
                continue
            self.deadline = sent + opts.lease_seconds - opts.clock_skew_margin
            # Keep our own signal_seq: it must stay the sequence of signals we have *loaded*,
            # or a wait could be recorded over a signal we never saw.
            self._lease = replace(self._lease, expires_at=renewed.expires_at)
            if session.cancel_requested:
                self._listener.cancel_requested(session.reason or "cancel requested")
            if session.signal_seq > self._lease.signal_seq:
                self._listener.signals_changed(session.signal_seq)

    async def _watchdog(self) -> None:
        while self._error is None:
            remaining = self.deadline - self._clock.now()
            if remaining <= 0:
                self._lose(self._deadline_error())
                return
            await self._clock.sleep(min(remaining, self._options.heartbeat_interval / 2))
