"""A nightly digest: summarise articles with a rate-limited "LLM", then join the summaries.

Every `summarize` task uses one unit of the `openai` resource, whose fleet-wide limits
(`orchestrator limits set openai --concurrency 3 --rate 30/min`) hold across every
worker sharing the store; a schedule (`orchestrator schedule add nightly-digest --cron
"0 6 * * *" --timezone Europe/Berlin --app examples.nightly_digest.app:digest`) starts
it each morning. `run_digest` does both from code, triggers one run and works it off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio

from orchestrator.agents import AgentContext, agent
from orchestrator.graph import Pipeline
from orchestrator.recovery import Worker
from orchestrator.schedules import add_schedule, flow_store, trigger_schedule
from orchestrator.store import Store
from orchestrator.store.records.flow import Rate, ResourceLimit

__all__ = ["ARTICLES", "DigestRun", "digest", "run_digest", "summarize"]

ARTICLES = [f"article-{n}" for n in range(8)]


class _Inside:
    """How many summaries run at once in this process, and the most seen (to show the limit)."""

    now = 0
    most = 0


@agent(uses={"openai": 1})
async def summarize(ctx: AgentContext) -> str:
    """Stands in for an LLM call (a real one would call the provider here)."""
    _Inside.now += 1
    _Inside.most = max(_Inside.most, _Inside.now)
    try:
        await anyio.sleep(0.05)
    finally:
        _Inside.now -= 1
    return f"summary of {ctx.input['article']}"


@agent
async def join(ctx: AgentContext) -> dict[str, Any]:
    return {"date": (ctx.session_input or {}).get("edition", "today"), "items": [ctx.deps[k] for k in sorted(ctx.deps)]}


def build() -> Pipeline:
    pipe = Pipeline("nightly-digest", agents=[summarize, join])
    for n, article in enumerate(ARTICLES):
        pipe.task(f"summarize-{n}", summarize, input={"article": article})
    return pipe.task("digest", join, depends_on=[f"summarize-{n}" for n in range(len(ARTICLES))])


digest = build()


@dataclass(frozen=True)
class DigestRun:
    session_id: str
    status: str
    items: int
    most_at_once: int


async def run_digest(store: Store) -> DigestRun:
    """Set the limits, add the schedule, trigger one run now, and run it with a worker."""
    await flow_store(store).set_limit(ResourceLimit("openai", 3, Rate(30, 60.0)))
    if not [s for s in await flow_store(store).list_schedules() if s.name == "nightly-digest"]:
        await add_schedule(store, "nightly-digest", digest, cron="0 6 * * *", timezone="Europe/Berlin",
                           app="examples.nightly_digest.app:digest", input={"edition": "morning"},
                           catch_up="latest", overlap="skip")
    sid = await trigger_schedule(store, "nightly-digest", digest)
    _Inside.most = 0
    await Worker(store, digest, concurrency=1, poll_interval=0.05).run(max_sessions=1, idle_exit=1.0)
    session = await store.get_session(sid)
    output = (await store.get_task(sid, "digest")).output or {}
    return DigestRun(sid, session.status.value, len(output.get("items", [])), _Inside.most)
