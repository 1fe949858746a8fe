"""`orchestrator.resume()` reads the session before it claims it, on every backend.

`ResumeContract` pins why that order is safe: what lands between our read and our claim
(the previous owner's completion, a signal, the previous owner's end) is never lost nor
done twice, and a pipeline mismatch is refused before anything is written.
`ResumeDynamoDBContract` pins what it saves on the wire: a direct resume of a 200-task
session sends one Query and the claim before its first task write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from orchestrator.agents import AgentContext, agent
from orchestrator.errors import PipelineDefinitionError, VersionMismatchError
from orchestrator.graph import Pipeline
from orchestrator.scheduler import RunOptions, resume
from orchestrator.store import (
    ClaimPolicy,
    ErrorInfo,
    Event,
    Lease,
    NewTask,
    SessionStatus,
    Store,
    TaskStatus,
    TaskWrite,
    TaskWriteKind,
)
from orchestrator.testing.contract_base import LEASE, clock_of, complete, make_session, start
from orchestrator.testing.contract_dynamodb import count_requests

__all__ = ["ResumeContract", "ResumeDynamoDBContract"]

OLD, NEW = "old-worker", "new-worker"
OPTIONS = RunOptions(worker_id=NEW, lease_seconds=LEASE)


class _BeforeClaim:
    """Delegates to a store; runs `hook` once right before the first `claim_session` (a public seam)."""

    def __init__(self, inner: Store, hook: Callable[[], Awaitable[None]]) -> None:
        self.inner = inner
        self._hook: Callable[[], Awaitable[None]] | None = hook
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def load_session(self, session_id: str) -> Any:
        self.calls.append("load_session")
        return await self.inner.load_session(session_id)

    async def claim_session(self, *args: Any, **kwargs: Any) -> Lease:
        self.calls.append("claim_session")
        hook, self._hook = self._hook, None
        if hook is not None:
            await hook()
        return await self.inner.claim_session(*args, **kwargs)


def _pipeline(ran: Counter[str], *, version: str = "1") -> Pipeline:
    """The agents of `make_session`'s tasks t1 -> t2; `ran` counts their invocations."""

    @agent(name="agent-t1")
    async def first(ctx: AgentContext) -> dict[str, Any]:
        ran["t1"] += 1
        return {"by": NEW}

    @agent(name="agent-t2")
    async def second(ctx: AgentContext) -> dict[str, Any]:
        ran["t2"] += 1
        return {"after": ctx.deps["t1"]}

    return Pipeline("contract", version=version, agents=[first, second]).task("t1", first).task(
        "t2", second, depends_on="t1")


async def _abandoned(store: Store) -> Lease:
    """s1 held by OLD, t1 started by it, and OLD's lease expired: a crashed worker's session."""
    await make_session(store, owner=OLD, lease_seconds=LEASE)
    lease = Lease("s1", OLD, 1, clock_of(store).now() + LEASE)
    [started] = await store.write_tasks(lease, [start("t1")])
    assert started.ok
    clock_of(store).advance(LEASE + 1)
    return lease


class ResumeContract:
    """A direct resume reads, refuses or claims, and runs what it read only while that is safe."""

    pytestmark = pytest.mark.anyio

    async def test_a_task_the_previous_owner_completes_between_our_read_and_our_claim_is_not_completed_twice(
        self, store: Store
    ) -> None:
        old = await _abandoned(store)

        async def old_owner_completes_t1() -> None:
            [done] = await store.write_tasks(old, [complete("t1", output={"by": OLD})])
            assert done.ok

        ran: Counter[str] = Counter()
        wrapped = _BeforeClaim(store, old_owner_completes_t1)
        result = await resume(_pipeline(ran), "s1", store=cast(Store, wrapped), options=OPTIONS)

        assert wrapped.calls[:2] == ["load_session", "claim_session"]  # t1 was RUNNING when read
        assert result.status is SessionStatus.COMPLETED
        assert ran == Counter({"t2": 1})  # t1's agent never ran here: its completion was adopted
        assert result.outputs == {"t1": {"by": OLD}, "t2": {"after": {"by": OLD}}}
        t1 = await store.get_task("s1", "t1")
        assert (t1.status, t1.fence, t1.attempt, t1.output) == (TaskStatus.COMPLETED, 1, 1, {"by": OLD})
        assert [(h.attempt, h.status) for h in t1.history] == [(1, TaskStatus.COMPLETED)]

    async def test_a_signal_sent_between_our_read_and_our_claim_is_read_by_the_run(self, store: Store) -> None:
        await make_session(store, tasks=[NewTask("t1", "approver")])
        lease = await store.claim_session("s1", OLD, LEASE)
        assert (await store.write_tasks(lease, [start("t1"), TaskWrite(TaskWriteKind.WAIT, "t1", 1)]))[1].ok
        assert await store.wait_session(lease, None) is True  # waits for a signal only: not claimable

        async def approve() -> None:
            await store.send_signal("s1", "t1", "approve", {"ok": True})

        @agent(name="approver")
        async def approver(ctx: AgentContext) -> Any:
            return await ctx.wait_for_signal("approve")

        pipe = Pipeline("contract", agents=[approver]).task("t1", approver)
        result = await resume(pipe, "s1", store=cast(Store, _BeforeClaim(store, approve)), options=OPTIONS)
        assert result.status is SessionStatus.COMPLETED
        assert result.outputs == {"t1": {"ok": True}}

    async def test_a_session_the_previous_owner_failed_between_our_read_and_our_claim_is_redriven(
        self, store: Store
    ) -> None:
        old = await _abandoned(store)

        async def old_owner_fails_the_session() -> None:
            failed = TaskWrite(TaskWriteKind.FAIL, "t1", 1, error=ErrorInfo("RuntimeError", "boom"))
            assert (await store.write_tasks(old, [failed]))[0].ok
            await store.finish_session(old, SessionStatus.FAILED, "t1 failed")

        ran: Counter[str] = Counter()
        wrapped = _BeforeClaim(store, old_owner_fails_the_session)
        result = await resume(_pipeline(ran), "s1", store=cast(Store, wrapped), options=OPTIONS)

        assert result.status is SessionStatus.COMPLETED
        assert ran == Counter({"t1": 1, "t2": 1})
        session = await store.get_session("s1")
        assert (session.redrive_count, session.fence) == (1, 2)
        events = [e.kind for e in (await store.read_events("s1")).items]
        assert "redrive" in events, events

    async def test_a_version_mismatch_is_refused_before_anything_is_written(self, store: Store) -> None:
        await make_session(store, pipeline_version="1")
        before = await store.get_session("s1")
        events = (await store.read_events("s1")).items
        with pytest.raises(VersionMismatchError, match="version 1, but the code is version 2"):
            await resume(_pipeline(Counter(), version="2"), "s1", store=store, options=OPTIONS)
        after = await store.get_session("s1")
        assert (after.status, after.fence, after.updated_at, after.lease_owner) == (
            SessionStatus.PENDING, before.fence, before.updated_at, None)
        assert (await store.read_events("s1")).items == events

    async def test_a_task_of_an_agent_the_pipeline_lacks_is_refused_before_anything_is_written(
        self, store: Store
    ) -> None:
        await _abandoned(store)
        before = await store.get_session("s1")
        events = (await store.read_events("s1")).items
        lacking = Pipeline("contract", agents=[_pipeline(Counter()).agents["agent-t1"]]).task("t1", "agent-t1")
        with pytest.raises(PipelineDefinitionError, match="agent-t2"):
            await resume(lacking, "s1", store=store, options=OPTIONS)
        after = await store.get_session("s1")
        assert (after.status, after.fence, after.updated_at, after.lease_owner) == (
            SessionStatus.RUNNING, before.fence, before.updated_at, OLD)
        assert (await store.read_events("s1")).items == events


class _Requests:
    """Each DynamoDB request sent while active: its operation and the kinds of item it names."""

    def __init__(self, store: Store) -> None:
        events = getattr(store, "client_events", None)
        assert events is not None, f"{store!r} has no client_events: request counting is for DynamoDB"
        self._events = events
        self.sent: list[tuple[str, str]] = []

    def _params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        keys: list[dict[str, Any]] = []
        if "Key" in params or "Item" in params:
            keys.append(params.get("Key") or params["Item"])
        for writes in params.get("RequestItems", {}).values():
            keys += [w.get("PutRequest", {}).get("Item") or w.get("DeleteRequest", {}).get("Key") for w in writes]
        for item in params.get("TransactItems", []):
            body = next(iter(item.values()))
            keys.append(body.get("Key") or body.get("Item"))
        kinds = sorted({k["SK"]["S"].split("#")[0] for k in keys if k})
        self.sent.append((model.name, "+".join(kinds) or "partition"))

    def __enter__(self) -> _Requests:
        self._events.register("before-parameter-build.dynamodb", self._params, unique_id=f"resume-{id(self)}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._events.unregister("before-parameter-build.dynamodb", self._params, unique_id=f"resume-{id(self)}")

    def before_first_task_write(self) -> list[tuple[str, str]]:
        first = next((i for i, (op, kinds) in enumerate(self.sent) if op != "Query" and "TASK" in kinds.split("+")),
                     None)
        assert first is not None, f"no task write among {self.sent}"
        return self.sent[:first]


def _gated_chain(n: int) -> Pipeline:
    """t0 waits for a signal (so a resume stops early, WAITING), then t1 .. t(n-1) in a chain."""

    @agent(name="gate")
    async def gate(ctx: AgentContext) -> Any:
        return await ctx.wait_for_signal("open")

    @agent(name="step")
    async def step(ctx: AgentContext) -> None:
        return None

    pipe = Pipeline("contract", agents=[gate, step]).task("t0", gate)
    for i in range(1, n):
        pipe.task(f"t{i}", step, depends_on=f"t{i - 1}")
    return pipe


async def _before_first_task_write(store: Store, pipe: Pipeline) -> list[tuple[str, str]]:
    """The requests a direct resume of s1 sends before its first task write (the START of t0)."""
    with _Requests(store) as requests:
        result = await resume(pipe, "s1", store=store, options=OPTIONS)
    assert result.status is SessionStatus.WAITING
    before = requests.before_first_task_write()
    assert requests.sent[len(before)] == ("UpdateItem", "TASK"), requests.sent
    # The session's state costs one Query (META and every task: one page per MB) and the
    # claim; the claim's history event is written next, at once, so it survives a crash.
    assert [r for r in before if r[1] != "EVENT"] == [("Query", "partition"), ("UpdateItem", "META")], before
    return before


class ResumeDynamoDBContract:
    """The requests of a direct resume on DynamoDB stores."""

    pytestmark = pytest.mark.anyio

    async def test_a_direct_resume_of_a_200_task_session_sends_one_query_and_the_claim_before_its_first_task_write(
        self, store: Store
    ) -> None:
        pipe = _gated_chain(200)
        await make_session(store, tasks=pipe.new_tasks())
        assert await _before_first_task_write(store, pipe) == [
            ("Query", "partition"), ("UpdateItem", "META"), ("BatchWriteItem", "EVENT")]

    async def test_a_direct_resume_of_an_abandoned_200_task_session_sends_one_query_and_the_claim_likewise(
        self, store: Store
    ) -> None:
        pipe = _gated_chain(200)
        await make_session(store, tasks=pipe.new_tasks(), owner=OLD, lease_seconds=LEASE)
        clock_of(store).advance(LEASE + 1)  # its worker crashed
        assert await _before_first_task_write(store, pipe) == [
            ("Query", "partition"), ("UpdateItem", "META"), ("BatchWriteItem", "EVENT")]

    async def test_the_read_of_a_resume_is_one_query_per_mb_of_the_session_whatever_its_history(
        self, store: Store
    ) -> None:
        tasks = [NewTask(f"t{i:02d}", "a", input="x" * 90_000) for i in range(30)]  # about 2.7 MB
        await make_session(store, tasks=tasks)
        now = clock_of(store).now()
        await store.append_events([Event("s1", "log", now, message="y" * 30_000, writer="w", seq=i)
                                   for i in range(40)])  # 1.2 MB of events, which sort before META
        with count_requests(store) as counted:
            snap = await store.load_session("s1")
        assert (snap.session.session_id, len(snap.tasks)) == ("s1", 30)
        assert counted.ops == ["Query"] * 3, counted.ops

    async def test_a_version_mismatch_costs_one_query_and_writes_nothing(self, store: Store) -> None:
        await make_session(store, pipeline_version="1")
        with _Requests(store) as requests, pytest.raises(VersionMismatchError):
            await resume(_pipeline(Counter(), version="2"), "s1", store=store, options=OPTIONS)
        assert requests.sent == [("Query", "partition")]

    async def test_a_redrive_takes_the_expiry_off_the_items_of_the_failed_session(self, store: Store) -> None:
        await make_session(store)
        lease = await store.claim_session("s1", OLD, LEASE)
        await store.finish_session(lease, SessionStatus.FAILED, "t1 failed")  # every item gets the expiry
        with _Requests(store) as requests:
            await store.claim_session("s1", NEW, LEASE, ClaimPolicy(redrive_failed=True))
        # The claim reads and writes META, then one Query finds what carries the expiry:
        # t1, t2 and the edge t2 -> t1 each lose it.
        assert requests.sent == [("GetItem", "META"), ("UpdateItem", "META"), ("Query", "partition"),
                                 *[("UpdateItem", "TASK")] * 3], requests.sent
