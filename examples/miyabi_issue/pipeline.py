"""The miyabi issue pipeline: one coordinator grows the DAG at run time.

    coordinator ──add_task──> codegen-<key> (P0..P3, edges from "after")
                              └─> review ─> approval (a person) ─> pr

The stored pipeline has a single task; the coordinator reads the issue and adds the
rest with `ctx.add_task` (deterministic ids, so a re-run coordinator adds nothing new).
The added tasks and their DEP# edges are adopted with the coordinator's completion.
One codegen task fails transiently on its first attempt (a marker file remembers it)
and is retried; `approval` waits durably for a signal: the session goes WAITING,
holds no worker, and continues when someone approves.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Any

from orchestrator.agents import AgentContext, ApprovalAgent, RetryPolicy, TaskSpec, agent
from examples.miyabi_issue.issue import parse_issue
from orchestrator.graph import Pipeline

__all__ = ["FLAKY_DEFAULT", "build_pipeline", "pipeline"]

FLAKY_DEFAULT = "codegen-toggle"


def _workdir(ctx: AgentContext) -> Path:
    return Path(ctx.session_input["workdir"])


@agent
async def coordinator(ctx: AgentContext) -> dict[str, Any]:
    """Decompose the issue into codegen tasks, then review -> approval -> pr."""
    issue = parse_issue(ctx.session_input["issue"])
    codegen_ids = []
    for sub in sorted(issue.tasks, key=lambda t: (t.priority, t.key)):
        tid = f"codegen-{sub.key}"
        await ctx.add_task(TaskSpec(
            task_id=tid,
            agent="codegen",
            input={"key": sub.key, "summary": sub.summary, "file": sub.file, "issue": issue.number},
            depends_on=[f"codegen-{a}" for a in sub.after] or ["coordinator"],
            priority=sub.priority,
        ))
        codegen_ids.append(tid)
    await ctx.add_task(TaskSpec("review", "review", {"issue": issue.number}, depends_on=codegen_ids, priority=1))
    await ctx.add_task(TaskSpec("approval", "approval", None, depends_on=["review"], priority=0))
    await ctx.add_task(TaskSpec("pr", "pr", {"issue": issue.number, "title": issue.title, "body": issue.body},
                                depends_on=["approval"], priority=0))
    ctx.log(f"issue #{issue.number} decomposed into {len(codegen_ids)} codegen tasks", tasks=codegen_ids)
    return {"issue": issue.number, "title": issue.title, "tasks": codegen_ids}


def _render(file: str, summary: str, issue: int) -> str:
    if file.endswith(".py"):
        return f'"""{summary} (issue #{issue})."""\n\nTHEME_DEFAULT = "light"\nTHEMES = ("light", "dark")\n'
    if file.endswith(".css"):
        return f"/* {summary} (issue #{issue}) */\n:root.dark {{ --bg: #121212; --fg: #e0e0e0; }}\n"
    return f"# {summary}\n\nIssue #{issue}. Open Settings and flip the theme toggle.\n"


@agent(retry=RetryPolicy(max_attempts=3, initial_backoff=0.1, jitter=0.0))
async def codegen(ctx: AgentContext) -> dict[str, Any]:
    """Write one file of the change; the flaky task's first attempt fails like a timed-out model call."""
    spec = ctx.input
    root = _workdir(ctx)
    if ctx.task_id == ctx.session_input.get("flaky_task", FLAKY_DEFAULT):
        marker = root / "markers" / ctx.session_id / f"{ctx.task_id}.failed-once"
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"attempt {ctx.attempt} failed\n")
            raise ConnectionError(f"code model for {ctx.task_id} timed out (simulated, attempt {ctx.attempt})")
    text = _render(spec["file"], spec["summary"], spec["issue"])
    path = root / "repo" / spec["file"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    ctx.progress(1, 1, phase="codegen", step=spec["file"])
    return {"file": spec["file"], "sha256": hashlib.sha256(text.encode()).hexdigest(), "attempt": ctx.attempt}


@agent
async def review(ctx: AgentContext) -> dict[str, Any]:
    """Automated review: every generated file exists and matches its recorded hash."""
    root = _workdir(ctx) / "repo"
    findings: list[str] = []
    files = sorted(out["file"] for out in ctx.deps.values())
    for out in ctx.deps.values():
        path = root / out["file"]
        if not path.exists():
            findings.append(f"{out['file']}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != out["sha256"]:
            findings.append(f"{out['file']}: changed since generation")
    report = _workdir(ctx) / "out" / f"review-{ctx.input['issue']}.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"- [{'x' if not any(f.startswith(name) for f in findings) else ' '}] {name}" for name in files]
    report.write_text("# Automated review\n\n" + "\n".join(lines + findings) + "\n")
    return {"files": files, "findings": findings, "report": str(report), "passed": not findings}


@agent
async def pr(ctx: AgentContext) -> dict[str, Any]:
    """Write the patch (unified diff of the new files) and the PR description."""
    issue = ctx.input["issue"]
    root = _workdir(ctx)
    approval = ctx.deps["approval"]
    files = sorted(p.relative_to(root / "repo").as_posix() for p in (root / "repo").rglob("*") if p.is_file())
    patch: list[str] = []
    for rel in files:
        new = (root / "repo" / rel).read_text().splitlines(keepends=True)
        patch.extend(difflib.unified_diff([], new, "/dev/null", f"b/{rel}"))
    out = root / "out"
    out.mkdir(parents=True, exist_ok=True)
    patch_path = out / f"pr-{issue}.patch"
    patch_path.write_text("".join(patch))
    by = approval.get("by", "someone") if isinstance(approval, dict) else "someone"
    desc_path = out / f"pr-{issue}.md"
    desc_path.write_text(
        f"# {ctx.input['title']}\n\nCloses #{issue}.\n\n{ctx.input['body']}\n\n## Files\n\n"
        + "".join(f"- `{f}`\n" for f in files)
        + f"\nApproved by {by}.\n"
    )
    return {"patch": str(patch_path), "description": str(desc_path), "files": files, "approved_by": by}


def build_pipeline() -> Pipeline:
    """Only the coordinator is declared; its agents for the added tasks are registered here."""
    return Pipeline(
        "miyabi-issue", version="1", agents=[coordinator, codegen, review, pr, ApprovalAgent("approval")]
    ).task("coordinator", coordinator, priority=0)


#: For `orchestrator worker --app examples.miyabi_issue.pipeline:pipeline`.
pipeline = build_pipeline()
