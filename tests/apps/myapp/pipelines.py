"""The pipelines the docs' examples run: `build` (code, a person's approval, deploy) and `release`.

tests/test_docs.py runs the README's and docs/cli.md's command lines from a directory
holding this package, as a user runs them from their project's root.
"""

from __future__ import annotations

from typing import Any

from orchestrator import Pipeline
from orchestrator.agents import AgentContext, ApprovalAgent, agent


@agent
async def codegen(ctx: AgentContext) -> dict[str, Any]:
    ctx.progress(1, 1, phase="writing code")
    return {"files": ["app.py"], "issue": ctx.input}


@agent
async def deploy(ctx: AgentContext) -> dict[str, Any]:
    return {"deployed": sorted(ctx.deps)}  # the outputs of the tasks it depends on, by task id


#: codegen -> review (waits for `orchestrator approve SESSION review`) -> deploy
build = (
    Pipeline("build", agents=[codegen, deploy, ApprovalAgent("approval")])
    .task("codegen", "codegen")
    .task("review", "approval", depends_on=["codegen"])
    .task("deploy", "deploy", depends_on=["review"])
)

#: codegen -> deploy, no person in the loop (what a cron resumes)
release = (
    Pipeline("release", agents=[codegen, deploy])
    .task("codegen", "codegen")
    .task("deploy", "deploy", depends_on=["codegen"])
)
