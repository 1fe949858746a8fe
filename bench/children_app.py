"""The children benchmark's app (see bench/children.py): a parent mapping `square` over n items.

    python bench/children_app.py worker STORE_URL    run a Worker (both pipelines) until idle for 5 s
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

from orchestrator import Worker, open_store
from orchestrator.agents import AgentContext, agent
from orchestrator.graph import Pipeline


@agent
async def square_one(ctx: AgentContext) -> int:
    await anyio.sleep(float(ctx.input.get("sleep", 0.0)))
    return int(ctx.input["i"]) ** 2


square = Pipeline("bench-square", agents=[square_one]).task("square", "square_one")


@agent
async def fan(ctx: AgentContext) -> list[Any]:
    spec = ctx.session_input
    items = [{"i": i, "sleep": spec["sleep"]} for i in range(spec["n"])]
    return await ctx.map(square, items, concurrency=spec.get("concurrency"), poll_interval=spec.get("poll", 0.2))


fanout = Pipeline("bench-fanout", agents=[fan]).task("fan", "fan")


async def work(url: str) -> None:
    async with open_store(url) as store:
        await Worker(store, [fanout, square], concurrency=4, poll_interval=0.1).run(idle_exit=5.0)


if __name__ == "__main__":
    if sys.argv[1:2] != ["worker"] or len(sys.argv) != 3:
        raise SystemExit("usage: python bench/children_app.py worker STORE_URL")
    anyio.run(work, sys.argv[2])
