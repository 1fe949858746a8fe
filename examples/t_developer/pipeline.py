"""The t-developer pipeline: 9 agents turn a one-line request into a project and its zip.

    nl_input -> ui_selection -> parser -> component_decision -> match_rate
             -> search -> generation -> assembly -> download

Each agent reads the spec its predecessor produced (`ctx.deps`), adds its part, and
reports progress i/9. The session is created with its
`pipeline_type` (SIMPLE or PRODUCTION), `project_id` and `user_id`; the
scheduler records every task's status, attempts, output and duration metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.agents import AgentContext, SyncAgentContext, agent
from examples.t_developer import rules
from examples.t_developer.generate import generate_files, write_files, zip_dir
from orchestrator.graph import Pipeline

__all__ = ["AGENTS", "PIPELINE_TYPES", "build_pipeline", "pipeline"]

AGENTS: tuple[str, ...] = (
    "nl_input", "ui_selection", "parser", "component_decision", "match_rate",
    "search", "generation", "assembly", "download",
)
PIPELINE_TYPES: tuple[str, ...] = ("SIMPLE", "PRODUCTION")


def _spec(ctx: AgentContext | SyncAgentContext) -> dict[str, Any]:
    """The spec so far: the output of the one task this one depends on."""
    (previous,) = ctx.deps.values()
    return dict(previous)


def _step(ctx: AgentContext | SyncAgentContext, step: str) -> None:
    ctx.progress(AGENTS.index(ctx.agent) + 1, len(AGENTS), phase=ctx.agent, step=step)


@agent
async def nl_input(ctx: AgentContext) -> dict[str, Any]:
    """Normalise the request: project name, slug, keywords, pipeline type, output dir."""
    request = str(ctx.session_input["request"]).strip()
    name = ctx.session_input.get("project_name") or rules.project_name_of(request)
    ptype = str(ctx.session_input.get("pipeline_type", "SIMPLE")).upper()
    _step(ctx, f"parsed request for {name!r}")
    return {
        "request": request,
        "project_name": name,
        "slug": rules.slug_of(name),
        "keywords": rules.keywords_of(request),
        "pipeline_type": ptype,
        "output_dir": str(ctx.session_input["output_dir"]),
    }


@agent
async def ui_selection(ctx: AgentContext) -> dict[str, Any]:
    spec = _spec(ctx)
    spec["ui"] = rules.ui_of(spec["keywords"])
    _step(ctx, spec["ui"])
    return spec


@agent
async def parser(ctx: AgentContext) -> dict[str, Any]:
    """Backend, database and data models implied by the request."""
    spec = _spec(ctx)
    words = spec["keywords"]
    spec["backend"] = rules.backend_of(words)
    spec["database"] = rules.database_of(words)
    spec["entities"] = rules.entities_of(words)
    spec["tech_stack"] = [s for s in (spec["ui"], spec["backend"], spec["database"]) if s]
    _step(ctx, ", ".join(e["name"] for e in spec["entities"]))
    return spec


@agent
async def component_decision(ctx: AgentContext) -> dict[str, Any]:
    spec = _spec(ctx)
    spec["components"] = rules.components_of(spec["entities"], spec["backend"] is not None)
    _step(ctx, f"{len(spec['components']['ui'])} components, {len(spec['components']['api'])} routes")
    return spec


@agent
async def match_rate(ctx: AgentContext) -> dict[str, Any]:
    """Pick the template that covers the stack best; keep the ranking for the record."""
    spec = _spec(ctx)
    ranking = rules.match_templates(spec["tech_stack"])
    spec["template"], spec["match_rate"] = ranking[0]["template"], ranking[0]["match_rate"]
    spec["ranking"] = ranking[:3]
    _step(ctx, f"{spec['template']} ({spec['match_rate']:.0%})")
    return spec


@agent
async def search(ctx: AgentContext) -> dict[str, Any]:
    """Find reusable snippets of the chosen template for each component."""
    spec = _spec(ctx)
    template = next(t for t in rules.TEMPLATES if t.name == spec["template"])
    spec["snippets"] = list(template.snippets)
    _step(ctx, f"{len(template.snippets)} snippets")
    return spec


@agent(executor="thread")
def generation(ctx: SyncAgentContext) -> dict[str, Any]:
    """Template every file (a sync agent: the "thread" executor runs it off the event loop)."""
    spec = _spec(ctx)
    files = generate_files(spec)
    ctx.log(f"generated {len(files)} files", files=sorted(files))
    _step(ctx, f"{len(files)} files")
    return {**spec, "files": files}


@agent
async def assembly(ctx: AgentContext) -> dict[str, Any]:
    """Write the files into `<output_dir>/<slug>/` (a re-run overwrites them identically)."""
    spec = _spec(ctx)
    files: dict[str, str] = spec.pop("files")
    root = Path(spec["output_dir"]) / spec["slug"]
    spec["bytes"] = write_files(root, files)
    spec["project_dir"] = str(root)
    spec["file_list"] = sorted(files)
    _step(ctx, str(root))
    return spec


@agent
async def download(ctx: AgentContext) -> dict[str, Any]:
    """Zip the project reproducibly; the output is what the user's history records."""
    spec = _spec(ctx)
    root = Path(spec["project_dir"])
    target = root.parent / f"{spec['slug']}.zip"
    sha256, size = zip_dir(root, target)
    _step(ctx, target.name)
    return {
        "project_name": spec["project_name"],
        "slug": spec["slug"],
        "pipeline_type": spec["pipeline_type"],
        "tech_stack": spec["tech_stack"],
        "template": spec["template"],
        "match_rate": spec["match_rate"],
        "project_dir": str(root),
        "files": spec["file_list"],
        "zip_path": str(target),
        "sha256": sha256,
        "size_bytes": size,
        "size_mb": round(size / 1_000_000, 4),
    }


def build_pipeline() -> Pipeline:
    """The 9-task chain; each task runs the agent of the same name."""
    steps = [nl_input, ui_selection, parser, component_decision, match_rate, search, generation, assembly, download]
    pipe = Pipeline("t-developer", version="1")
    previous: str | None = None
    for step in steps:
        pipe.task(step.__name__, step, depends_on=[previous] if previous else [])
        previous = step.__name__
    return pipe


#: For `orchestrator worker --app examples.t_developer.pipeline:pipeline`.
pipeline = build_pipeline()
