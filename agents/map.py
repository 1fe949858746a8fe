"""`MapAgent`: a map task in a pipeline definition, one child session per item of a dependency's list.

    pipe.task("items", agent=make_items)
    pipe.task("each", agent=MapAgent("each", child_pipeline, over="items", concurrency=50),
              depends_on=["items"])

Its output is the children's outputs in item order (or, with `policy="collect"`,
`{"ok", "output" | "error", "session"}` per item). See `AgentContext.map`.
"""

from __future__ import annotations

from typing import Any

from orchestrator.agents.context import AgentContext, MapPolicy
from orchestrator.agents.errors import NonRetryableError
from orchestrator.agents.retry import RetryPolicy
from orchestrator.agents.spec import Agent, AgentSpec

__all__ = ["MapAgent"]


class MapAgent(Agent):
    """Run `pipeline` once per item of dependency `over`'s output (a list), as child sessions.

    One attempt by default: a retry would look at the same children again, and a failed
    child is redriven by redriving it (or the parent), not by a new attempt of the map.
    """

    def __init__(
        self,
        name: str,
        pipeline: Any,
        *,
        over: str,
        concurrency: int | None = None,
        policy: MapPolicy = "fail_fast",
        poll_interval: float = 1.0,
        retry: RetryPolicy = RetryPolicy(max_attempts=1),
    ) -> None:
        if not over:
            raise ValueError(f"MapAgent {name!r}: `over` must name the dependency whose list output is mapped")
        if poll_interval <= 0:
            raise ValueError(f"MapAgent {name!r}: poll_interval={poll_interval} must be > 0 seconds")
        self.name = name
        self.pipeline = pipeline
        self.over = over
        self.concurrency = concurrency
        self.policy: MapPolicy = policy
        self.poll_interval = poll_interval
        self.retry = retry

    def spec(self) -> AgentSpec:
        return AgentSpec(name=self.name, fn=self.run, retry=self.retry, timeout=None, executor="async")

    def __repr__(self) -> str:
        return f"MapAgent({self.name!r}, over={self.over!r})"

    async def run(self, ctx: AgentContext) -> Any:
        if self.over not in ctx.deps:
            raise NonRetryableError(
                f"task {ctx.task_id} of session {ctx.session_id}: MapAgent {self.name!r} maps over {self.over!r}, "
                f"which is not a dependency of the task (deps: {', '.join(sorted(ctx.deps)) or 'none'}); "
                f"add depends_on=[{self.over!r}]"
            )
        items = ctx.deps[self.over]
        if not isinstance(items, list):
            raise NonRetryableError(
                f"task {ctx.task_id} of session {ctx.session_id}: MapAgent {self.name!r} needs a list from "
                f"{self.over!r}, which returned {type(items).__name__}"
            )
        return await ctx.map(self.pipeline, items, concurrency=self.concurrency, policy=self.policy,
                             poll_interval=self.poll_interval)
