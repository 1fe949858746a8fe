"""The DynamoDB backend of the Store protocol (PynamoDB models, one table, DESIGN.md §5-§6).

Composed of one mixin per concept, named like the SQLite backend's modules: sessions
(`sessions.SessionOps`), tasks (`tasks.TaskOps`), events, metrics and pipelines
(`history.HistoryOps`), the users' project history (`projects.ProjectOps`), flow control
(`resources.ResourceOps`, `schedules.ScheduleOps`). Every
decision comes from `orchestrator.store.rules`; every request goes through the choke
point in `connection` (retries, error mapping, context). PynamoDB is blocking:
requests run in worker threads under a capacity limiter sized to the connection pool.

Negative-control seam: `_cas_claims = False` in a subclass writes claims without their
condition expression. It exists only so a test can show that two workers then both
"win" a session; never set it in real code.
"""

from __future__ import annotations

from types import TracebackType

from pynamodb.expressions.operand import Path

from orchestrator.errors import StoreError, StoreUnavailableError
from orchestrator.store.dynamodb.cache import CacheOps
from orchestrator.store.dynamodb.children import ChildOps
from orchestrator.store.dynamodb.history import HistoryOps
from orchestrator.store.dynamodb.models import session_pk
from orchestrator.store.dynamodb.projects import ProjectOps
from orchestrator.store.dynamodb.resources import ResourceOps
from orchestrator.store.dynamodb.schedules import ScheduleOps
from orchestrator.store.dynamodb.schema import check_table, ensure_table
from orchestrator.store.dynamodb.sessions import SessionOps
from orchestrator.store.dynamodb.tasks import TaskOps
from orchestrator.store.records import PurgeReport, SessionStatus

__all__ = ["DynamoDBStore"]


class DynamoDBStore(ChildOps, CacheOps, SessionOps, TaskOps, HistoryOps, ProjectOps, ResourceOps, ScheduleOps):
    """Durable state in one DynamoDB table; see the module docstring and `Store`."""

    async def __aenter__(self) -> DynamoDBStore:
        await self.initialize()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def initialize(self) -> None:
        """Create the table if missing; else check its keys and indexes (one DescribeTable)."""
        await ensure_table(self._caller, self.config, settings=False)

    async def provision(self) -> None:
        """`initialize()`, and bring TTL, point-in-time recovery and encryption to the definition."""
        await ensure_table(self._caller, self.config)

    async def check(self) -> list[str]:
        try:
            return await check_table(self._caller, self.config)
        except StoreUnavailableError as exc:
            return [f"cannot reach {self.describe()}: {exc}"]
        except StoreError as exc:  # reached, but refused: say what it answered (access denied, ...)
            return [f"{self.describe()} answered with an error: {exc}"]

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()

    # -- retention --------------------------------------------------------------------------

    async def purge(self, *, ended_before: float) -> PurgeReport:
        """Delete finished sessions that ended before the bound, found via the status index.

        Events and metrics of live sessions expire through DynamoDB TTL (`ttl`).
        """
        sessions = items = 0
        for status in (SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED):
            cursor: str | None = None
            while True:
                page = await self.list_sessions(status, updated_before=ended_before, limit=100, cursor=cursor)
                for found in page.items:
                    n = await self._purge_one(found.session_id, ended_before)
                    if n:
                        sessions += 1
                        items += n
                cursor = page.cursor
                if cursor is None:
                    break
        return PurgeReport(sessions=sessions, items=items)

    async def _purge_one(self, sid: str, ended_before: float) -> int:
        pk = session_pk(sid)
        keys, _ = await self.query_raw(pk, Path("PK") == pk, projection="PK, SK", session=sid)
        meta = await self.get_raw(pk, "META", session=sid)  # never decide on index data
        if meta is None:
            return 0
        current = self.items.session(meta, sid)
        if not current.status.is_final or (current.completed_at or current.updated_at) > ended_before:
            return 0
        body = [self.key(pk, k["SK"]["S"]) for k in keys if k["SK"]["S"] != "META"]
        await self.batch_put([], deletes=body, session=sid)
        await self._caller.call("DeleteItem", {"TableName": self.table, "Key": self.key(pk, "META")}, session=sid)
        return len(body) + 1
