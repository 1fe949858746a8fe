"""Events, metrics and pipeline definitions on DynamoDB (the SQLite twin is `sqlite/history.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pynamodb.expressions.operand import Path

from orchestrator.errors import PipelineNotFoundError, ValidationError, VersionMismatchError
from orchestrator.store import rules
from orchestrator.store.dynamodb.base import DynamoDBBase, gather
from orchestrator.store.dynamodb.connection import DynamoCallError
from orchestrator.store.dynamodb.models import event_sk, pipeline_key, session_pk
from orchestrator.store.records import Event, MetricSummary, Page, PipelineDefinition
from datetime import UTC

__all__ = ["HistoryOps"]


class HistoryOps(DynamoDBBase):
    """What a session leaves besides its state: events, metrics, pipeline definitions."""

    # -- events -----------------------------------------------------------------------------

    async def append_events(self, events: Sequence[Event]) -> None:
        items = [self.items.event_item(e, rules.event_data(self.codec, e), int(e.at + self.config.ttl_days * 86400))
                 for e in events]
        if items:
            await self.batch_put(items, session=events[0].session_id)

    async def read_events(self, session_id: str, *, after: str | None = None, limit: int = 100) -> Page[Event]:
        rules.check_page_limit(limit)
        pk = session_pk(session_id)
        cond = (Path("PK") == pk) & Path("SK").between("EVENT#", "EVENT#~")
        start = {"PK": {"S": pk}, "SK": {"S": event_sk(after)}} if after else None
        items, more = await self.query_raw(pk, cond, limit=limit, start=start, pages=False, session=session_id)
        if not items and after is None:
            await self.read_session(session_id)  # SessionNotFoundError, as on every backend
        now = self.clock.now()
        events = tuple(self.items.event(r, session_id) for r in items if not self.expired(r, now))
        last = items[-1]["SK"]["S"][len("EVENT#"):] if items else None
        return Page(events, last if more else None)

    # -- metrics ------------------------------------------------------------------------------

    async def record_metrics(self, writer: str, seq: int, summaries: Sequence[MetricSummary]) -> None:
        m = self.models.metric
        rules.check_metric_keys(writer, summaries)
        cond = m.seq.does_not_exist() | (m.seq < seq)

        async def one(s: MetricSummary) -> None:
            ttl = int(_day_start(s.day) + self.config.ttl_days * 86400)
            try:
                await self._caller.call("PutItem", self.put_params(self.items.metric_item(writer, seq, s, ttl), cond))
            except DynamoCallError as exc:
                if not exc.condition_failed:
                    raise self._caller.to_error(exc) from exc
                # an equal or newer seq is stored: this was a retry, nothing to do

        await gather([lambda s=s: one(s) for s in summaries])  # type: ignore[misc]

    async def read_metrics(self, day: str, *, name: str | None = None, agent: str | None = None) -> list[MetricSummary]:
        async def shard(i: int) -> list[dict[str, Any]]:
            pk = f"METRIC#{day}#{i}"
            items, _ = await self.query_raw(pk, Path("PK") == pk, consistent=False)
            return items

        out: list[Any] = await gather([lambda i=i: shard(i) for i in range(self.config.status_shards)])  # type: ignore[misc]
        sums: dict[tuple[int, str, str], MetricSummary] = {}
        for items in out:
            for raw in items:
                s = self.items.metric(raw)
                if (name is not None and s.name != name) or (agent is not None and s.agent != agent):
                    continue
                key = (s.hour, s.name, s.agent)
                prev = sums.get(key)
                sums[key] = s if prev is None else prev.plus(s)
        return [sums[k] for k in sorted(sums)]

    # -- pipelines and retention ----------------------------------------------------------------

    async def put_pipeline(self, definition: PipelineDefinition) -> None:
        rules.check_definition(self.codec, definition)  # the definition is one item: sizes first
        item = self.items.pipeline_item(definition)
        try:
            await self._caller.call("PutItem", self.put_params(item, self.models.pipeline.PK.does_not_exist()))
        except DynamoCallError as exc:
            if not exc.condition_failed:
                raise self._caller.to_error(exc) from exc
            stored = await self.get_pipeline(definition.name, definition.version)
            if stored.digest != definition.digest:
                raise VersionMismatchError.reshaped(definition.name, definition.version, stored.digest,
                                                    definition.digest) from None

    async def get_pipeline(self, name: str, version: str) -> PipelineDefinition:
        pk, sk = pipeline_key(name, version)
        raw = await self.get_raw(pk, sk)
        if raw is None:
            raise PipelineNotFoundError.missing(name, version, str(self.describe()))
        return self.items.pipeline(raw)


def _day_start(day: str) -> float:
    from datetime import datetime

    try:
        return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise ValidationError(f"metric day {day!r} is not YYYY-MM-DD") from None
