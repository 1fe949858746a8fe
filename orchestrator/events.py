"""Session events, buffered and written in batches (DESIGN.md §3 "Events").

Events hold what task items do not: retries and their errors, lease changes, signals,
cancellations, and log lines agents chose to record. They are statistics-grade: a
SIGKILL loses at most one flush interval of them; task state never depends on them.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

from orchestrator.clock import Clock
from orchestrator.errors import OrchestratorError
from orchestrator.store.protocol import Store
from orchestrator.store.records import Event

__all__ = ["EventBuffer"]

_log = logging.getLogger("orchestrator.events")


class EventBuffer:
    """Collects one writer's events for one session and appends them in batches."""

    def __init__(self, store: Store, session_id: str, writer: str, clock: Clock, *, max_buffer: int = 1000) -> None:
        self._store = store
        self._session_id = session_id
        self._writer = writer
        self._clock = clock
        self._seq = itertools.count(1)
        self._pending: list[Event] = []
        self._max_buffer = max_buffer
        self.dropped = 0

    def add(
        self,
        kind: str,
        message: str = "",
        *,
        task_id: str | None = None,
        level: str = "INFO",
        data: dict[str, Any] | None = None,
    ) -> None:
        clean = self._store.codec.to_jsonable(data or {}, where=f"data of {kind} event")
        if len(self._pending) >= self._max_buffer:
            # A flood of log lines must not grow memory without bound: keep the newest.
            self._pending.pop(0)
            self.dropped += 1
        self._pending.append(
            Event(
                session_id=self._session_id,
                kind=kind,
                at=self._clock.now(),
                task_id=task_id,
                message=message,
                data=clean,
                writer=self._writer,
                seq=next(self._seq),
                level=level,
            )
        )

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Append what is buffered; on a store error keep it for the next flush."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await self._store.append_events(batch)
        except OrchestratorError:
            _log.warning("could not write %d events of session %s; will retry", len(batch), self._session_id,
                         exc_info=True)
            self._pending[:0] = batch[-self._max_buffer:]
            raise
