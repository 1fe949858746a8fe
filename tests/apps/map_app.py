"""Pipelines of the child-session tests (`map_app:<name>`): a parent that maps over items.

`square` is the child pipeline; `fanout` maps it over `range(input["n"])` with
`input["concurrency"]`; `each` is the same map declared in the pipeline definition (a
map task over a dependency's list). Every child execution appends one line
(`<session> <pid>`) to `$DEMO_MARK_DIR/children.log` when that variable is set, and
sleeps `input["sleep"]` seconds (default 0), so tests count executions from side effects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio

from orchestrator.agents import AgentContext, MapAgent, RetryPolicy, SyncAgentContext, agent
from orchestrator.graph import Pipeline


def _mark(ctx: AgentContext) -> None:
    folder = os.environ.get("DEMO_MARK_DIR")
    if folder:
        with open(Path(folder) / "children.log", "a", encoding="utf-8") as f:
            f.write(f"{ctx.session_id} {os.getpid()}\n")


@agent(retry=RetryPolicy(max_attempts=1))
async def square_one(ctx: AgentContext) -> dict[str, Any]:
    """Squares the item's "i" after sleeping its "sleep" seconds; an item with "fail" fails until the
    file named by its "until" exists."""
    item = ctx.input or {}
    _mark(ctx)
    await anyio.sleep(float(item.get("sleep", 0.0)))
    if item.get("fail") and not Path(str(item.get("until", ""))).is_file():
        raise RuntimeError(f"item {item['i']} was told to fail")
    return {"i": item["i"], "square": item["i"] ** 2}


square = Pipeline("square", agents=[square_one]).task("square", agent="square_one")


@agent(retry=RetryPolicy(max_attempts=1))
async def fan(ctx: AgentContext) -> list[Any]:
    """Maps `square` over the session input's items."""
    spec = ctx.session_input or {}
    items = [{"i": i, "sleep": spec.get("sleep", 0.0), "fail": i in spec.get("fail", []), "until": spec.get("until")}
             for i in range(int(spec.get("n", 3)))]
    return await ctx.map(square, items, concurrency=spec.get("concurrency"),
                         policy=spec.get("policy", "fail_fast"), poll_interval=float(spec.get("poll", 0.2)))


fanout = Pipeline("fanout", agents=[fan]).task("fan", agent="fan")


@agent
async def one_child(ctx: AgentContext) -> Any:
    """Runs one child: `square` of the input's "i"."""
    return await ctx.run_child(square, {"i": (ctx.session_input or {}).get("i", 7)})


single = Pipeline("single", agents=[one_child]).task("one", agent="one_child")


@agent
async def make_items(ctx: AgentContext) -> list[dict[str, Any]]:
    """The list a map task runs over."""
    return [{"i": i} for i in range(int((ctx.session_input or {}).get("n", 3)))]


each = (Pipeline("each", agents=[make_items, MapAgent("squares", square, over="items", poll_interval=0.2)])
        .task("items", agent="make_items")
        .task("squares", agent="squares", depends_on=["items"]))


@agent(executor="thread")
def sync_fan(ctx: SyncAgentContext) -> list[Any]:
    """The same map from a sync agent in a worker thread."""
    return ctx.map(square, [{"i": i} for i in range(3)], poll_interval=0.2)


sync_fanout = Pipeline("sync-fanout", agents=[sync_fan]).task("fan", agent="sync_fan")
