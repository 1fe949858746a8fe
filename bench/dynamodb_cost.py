"""DynamoDB client CPU per step, creation and resume costs, and a cost table per 1,000 tasks.

Starts a moto server on a free 127.0.0.1 port (stopped at exit) and measures, with
transactions on and off:

1. client CPU (this process's `time.process_time()`, so the server's work is not
   counted) per chain step (`write_tasks`: complete one task + start the next), next to
   a bare PynamoDB put (`Model.save()` of a task-sized item, PynamoDB's defaults) in the
   same run: on moto, then (`client_cpu.py`) against a stand-in server that gives both
   sides the same latency, and in instructions counted by valgrind;
2. creating a 10,000-task session: wall time and the client's CPU share;
3. resuming a 200-task session, by a worker and by `orchestrator.resume()`: the requests
   before its first task write;
4. per 1,000 tasks of a real `run()` (a chain, and a fan-out: one task, then the rest
   in parallel): requests, and read/write request units computed with DynamoDB's
   pricing rules from the items on the wire (moto reports no capacity for
   transactions): a write costs 1 unit per KB of the item, a transactional write twice
   that; a strongly consistent read 1 unit per 4 KB (summed over a Query's items), an
   eventually consistent (index) read half; an empty read still costs its minimum.

Run (about four minutes): `.venv/bin/python bench/dynamodb_cost.py [--tasks 100] [--only-cpu]`
"""

from __future__ import annotations

import argparse
import math
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
from client_cpu import STEPS, bare_model, pairs, report, url
from store_requests import start_moto

from orchestrator import Pipeline, RunOptions, resume, run
from orchestrator.agents import AgentContext, agent
from orchestrator.store import open_store
from orchestrator.store.dynamodb import DynamoDBStore
from orchestrator.store.records import NewSession, NewTask, SessionStatus, TaskWrite, TaskWriteKind
from orchestrator.testing._servers import stop_server

#: On-demand prices in us-east-1 (USD per million request units) at the time of writing; see --wru-price.
WRU_PRICE, RRU_PRICE = 0.625, 0.125


def value_size(v: dict[str, Any]) -> int:
    """Bytes of one AttributeValue as DynamoDB sizes it (numbers approximately)."""
    kind, x = next(iter(v.items()))
    if kind == "S":
        return len(x.encode())
    if kind == "N":
        return len(x.lstrip("-").replace(".", "")) // 2 + 2
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(e) for k, e in x.items())
    if kind == "L":
        return 3 + sum(1 + value_size(e) for e in x)
    return len(str(x))


def item_size(item: dict[str, Any]) -> int:
    return sum(len(k.encode()) + value_size(v) for k, v in item.items())


@dataclass
class Bill:
    """Requests and request units of everything a store sent, from botocore's events."""

    requests: Counter[str] = field(default_factory=Counter)
    rru: float = 0.0
    wru: float = 0.0
    updates: list[tuple[tuple[str, str], int]] = field(default_factory=list)  # (key, factor) sized at the end
    _local: threading.local = field(default_factory=threading.local)

    def attach(self, store: DynamoDBStore) -> None:
        store.client_events.register("before-parameter-build.dynamodb", self._params)
        store.client_events.register("after-call.dynamodb", self._after)

    def _params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self._local.params = dict(params)

    def _after(self, model: Any, parsed: Any = None, **_: Any) -> None:
        op, params, parsed = model.name, getattr(self._local, "params", {}), parsed or {}
        self.requests[op] += 1
        if op in ("GetItem", "Query"):
            items = [parsed["Item"]] if parsed.get("Item") else parsed.get("Items", [])
            per = 4096.0
            units = max(1, math.ceil(sum(item_size(i) for i in items) / per))
            self.rru += units * (1.0 if params.get("ConsistentRead") else 0.5)
        elif op == "BatchGetItem":
            for items in parsed.get("Responses", {}).values():
                self.rru += sum(math.ceil(item_size(i) / 4096.0) for i in items)
        elif op == "PutItem":
            self.wru += math.ceil(item_size(params["Item"]) / 1024.0)
        elif op in ("UpdateItem", "DeleteItem"):
            self.updates.append(((params["Key"]["PK"]["S"], params["Key"]["SK"]["S"]), 1))
        elif op == "BatchWriteItem":
            for reqs in params["RequestItems"].values():
                for r in reqs:
                    if "PutRequest" in r:
                        self.wru += math.ceil(item_size(r["PutRequest"]["Item"]) / 1024.0)
                    else:
                        self.wru += 1
        elif op == "TransactWriteItems":
            for t in params["TransactItems"]:
                if "Put" in t:
                    self.wru += 2 * math.ceil(item_size(t["Put"]["Item"]) / 1024.0)
                else:
                    body = t.get("Update") or t.get("Delete") or t.get("ConditionCheck") or {}
                    self.updates.append(((body["Key"]["PK"]["S"], body["Key"]["SK"]["S"]), 2))

    async def settle(self, store: DynamoDBStore) -> None:
        """Size updated items as stored at the end (an upper bound: items only grow in a run)."""
        sizes: dict[tuple[str, str], int] = {}
        for pk in {k[0] for k, _ in self.updates}:
            items, _ = await store.query_raw(pk, _pk_is(pk))
            sizes.update({(i["PK"]["S"], i["SK"]["S"]): item_size(i) for i in items})
        self.wru += sum(f * math.ceil(sizes.get(k, 1024) / 1024.0) for k, f in self.updates)
        self.updates.clear()


def _pk_is(pk: str) -> Any:
    from pynamodb.expressions.operand import Path

    return Path("PK") == pk


@agent(name="noop")
async def noop(ctx: AgentContext) -> int:
    return 1


def chain(n: int) -> Pipeline:
    pipe = Pipeline(f"chain{n}", agents=[noop])
    for i in range(n):
        pipe.task(f"t{i}", "noop", depends_on=[f"t{i - 1}"] if i else [])
    return pipe


def fan_out(n: int) -> Pipeline:
    pipe = Pipeline(f"fan{n}", agents=[noop])
    pipe.task("t0", "noop")
    for i in range(1, n):
        pipe.task(f"t{i}", "noop", depends_on=["t0"])
    return pipe


async def cpu_per_step(endpoint: str, tx: bool) -> tuple[float, float, float, float]:
    """On the moto server: (client CPU ms per chain step, CPU ms per bare PynamoDB put, and
    the wall ms of each), STEPS pairs of one step and one put (`client_cpu.pairs`)."""
    store = open_store(url(endpoint, f"cpu-{int(tx)}", tx))
    assert isinstance(store, DynamoDBStore)
    async with store:
        tasks = [NewTask(f"t{i}", "noop", depends_on=(f"t{i - 1}",) if i else ()) for i in range(STEPS + 1)]
        await store.create_session(NewSession("s1", "bench"), tasks)
        lease = await store.claim_session("s1", "w", 60)
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t0", 1)])
        step, bare, step_wall, bare_wall = await pairs(store, lease, bare_model(f"cpu-{int(tx)}", endpoint))
    return step, bare, step_wall, bare_wall


async def create_big(endpoint: str, n: int) -> tuple[float, float]:
    store = open_store(url(endpoint, "big", True))
    async with store:
        tasks = [NewTask(f"t{i:05d}", "noop", input={"i": i}) for i in range(n)]
        wall, cpu = time.perf_counter(), time.process_time()
        await store.create_session(NewSession("big", "bench"), tasks)
        return time.perf_counter() - wall, time.process_time() - cpu


class _Sent:
    """Each request's operation, marked `(claim event)` or `(task write)` by the items it writes."""

    def __init__(self, store: DynamoDBStore) -> None:
        self.ops: list[str] = []
        store.client_events.register("before-parameter-build.dynamodb", self._params)

    def _params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        keys = [params.get("Key") or params.get("Item") or {}]
        for writes in params.get("RequestItems", {}).values():
            keys += [w.get("PutRequest", {}).get("Item") or w.get("DeleteRequest", {}).get("Key") for w in writes]
        for item in params.get("TransactItems", []):
            body = next(iter(item.values()))
            keys.append(body.get("Key") or body.get("Item"))
        sks = {k["SK"]["S"].split("#")[0] for k in keys if k and "SK" in k}
        tag = " (task write)" if model.name != "Query" and "TASK" in sks else " (claim event)" if sks == {"EVENT"} else ""
        self.ops.append(model.name + tag)

    def until_first_task_write(self) -> list[str]:
        first = next(i for i, op in enumerate(self.ops) if op.endswith("(task write)"))
        return self.ops[: first + 1]


@agent(name="gate")
async def gate(ctx: AgentContext) -> Any:
    return await ctx.wait_for_signal("open")  # the resumed run stops here, WAITING


def gated_chain(n: int) -> Pipeline:
    pipe = Pipeline(f"gated{n}", agents=[gate, noop]).task("t0", gate)
    for i in range(1, n):
        pipe.task(f"t{i}", "noop", depends_on=[f"t{i - 1}"])
    return pipe


async def resume_requests(endpoint: str, tx: bool) -> tuple[list[str], list[str]]:
    """Requests of resuming a 200-task session, up to and including its first task write: by a
    worker (the claim decided on its listing, then the load) and by `orchestrator.resume()`
    (the load, the pipeline check, then the claim decided on what was read). The worker's
    is measured at the store (its runner writes the same claim event as the direct one's)."""
    store = open_store(url(endpoint, f"resume-{int(tx)}", tx))
    assert isinstance(store, DynamoDBStore)
    async with store:
        await store.create_session(NewSession("r1", "bench"), [NewTask(f"t{i}", "noop", input={"i": i},
                                   depends_on=(f"t{i - 1}",) if i else ()) for i in range(200)])
        seen = (await store.list_sessions(SessionStatus.PENDING)).items[0]
        worker = _Sent(store)
        lease = await store.claim_session("r1", "w", 60, seen=seen)
        await store.load_session("r1")
        await store.write_tasks(lease, [TaskWrite(TaskWriteKind.START, "t0", 1)])
    store = open_store(url(endpoint, f"resume-direct-{int(tx)}", tx))
    assert isinstance(store, DynamoDBStore)
    async with store:
        pipe = gated_chain(200)
        await store.create_session(NewSession("r2", pipe.name), pipe.new_tasks())
        direct = _Sent(store)
        result = await resume(pipe, "r2", store=store, options=RunOptions(worker_id="w"))
        assert result.status is SessionStatus.WAITING, result
    return worker.until_first_task_write(), direct.until_first_task_write()


async def cost(endpoint: str, shape: str, n: int, tx: bool) -> Bill:
    store = open_store(url(endpoint, f"cost-{shape}-{int(tx)}", tx))
    assert isinstance(store, DynamoDBStore)
    async with store:
        bill = Bill()
        bill.attach(store)
        pipe = chain(n) if shape == "chain" else fan_out(n)
        result = await run(pipe, store=store, options=RunOptions(concurrency=16))
        assert result.status is SessionStatus.COMPLETED, result
        await bill.settle(store)
        return bill


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100, help="tasks per session of the cost table")
    parser.add_argument("--big", type=int, default=10_000, help="tasks of the large session created")
    parser.add_argument("--wru-price", type=float, default=WRU_PRICE, help="USD per million write request units")
    parser.add_argument("--rru-price", type=float, default=RRU_PRICE, help="USD per million read request units")
    parser.add_argument("--only-cpu", action="store_true", help="measure the CPU per step only (about three minutes)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds of the stand-in server's CPU measure")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    proc, endpoint = start_moto()
    try:
        print(f"moto server {endpoint}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
        print(f"\nclient CPU per chain step (complete + start the next) on the moto server, {STEPS} pairs of one "
              f"step and one bare PynamoDB put:")
        for tx in (True, False):
            step, bare, step_wall, bare_wall = await cpu_per_step(endpoint, tx)
            n, op = (1, "TransactWriteItems") if tx else (2, "UpdateItem")
            print(f"  transactions {'on ' if tx else 'off'}: {step:.2f} ms/step, bare put {bare:.2f} ms "
                  f"({step / bare:.2f}x; the step is {n} {op}; wall {step_wall:.1f} ms/step, {bare_wall:.1f} ms/put)")
        print()
        await report(args.rounds)
        if args.only_cpu:
            return
        wall, cpu = await create_big(endpoint, args.big)
        print(f"\ncreate a {args.big}-task session: {wall:.1f} s, client CPU {cpu:.1f} s ({cpu / wall:.0%} of it)")
        for tx in (True, False):
            for how, ops in zip(("a worker's resume", "orchestrator.resume()"), await resume_requests(endpoint, tx),
                                strict=True):
                state = [op for op in ops[:-1] if not op.endswith("(claim event)")]
                print(f"{how} of a 200-task session (transactions {'on' if tx else 'off'}): {', '.join(ops)} "
                      f"-> {len(state)} request(s) for the session's state before the first task write")
        scale = 1000 / args.tasks
        print(f"\nper 1,000 tasks (a run() of {args.tasks}-task sessions, scaled): on-demand at "
              f"${args.wru_price}/M WRU, ${args.rru_price}/M RRU")
        print(f"{'pipeline':10} {'transactions':13} {'requests':>9} {'WRU':>8} {'RRU':>8} {'USD':>9}  requests by op")
        for shape in ("chain", "fan-out"):
            for tx in (True, False):
                bill = await cost(endpoint, shape, args.tasks, tx)
                total = sum(bill.requests.values()) * scale
                usd = (bill.wru * args.wru_price + bill.rru * args.rru_price) * scale / 1e6
                by_op = ", ".join(f"{k} {v * scale:.0f}" for k, v in bill.requests.most_common())
                print(f"{shape:10} {'on' if tx else 'off':13} {total:9.0f} {bill.wru * scale:8.0f} "
                      f"{bill.rru * scale:8.0f} {usd:9.5f}  {by_op}")
    finally:
        stop_server(proc)


if __name__ == "__main__":
    anyio.run(main)
