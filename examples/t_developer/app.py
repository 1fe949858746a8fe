"""Run the t-developer pipeline and keep the user's project history.

The pipeline runs under the scheduler (`orchestrator.scheduler.run`). The
user-project record (name, tech stack, size, download count) goes to the store's
user-project history through the state API: `StateAPI.save_user_project` writes the
description, `StateAPI.record_download` counts each download (once per download id).
No session is created for a download, so `project_stats` counts only generations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from examples.t_developer import rules
from examples.t_developer.pipeline import PIPELINE_TYPES, pipeline
from orchestrator.errors import ValidationError
from orchestrator.scheduler import RunOptions, RunResult, run
from orchestrator.state import StateAPI
from orchestrator.store import Store, UserProjectRecord

__all__ = ["TDeveloperRun", "generate_project", "project_id_for", "record_download", "run_example"]

DEFAULT_REQUEST = "a todo app with React and a Node API"


@dataclass(frozen=True, slots=True)
class TDeveloperRun:
    """One generation and its download, as stored."""

    result: RunResult
    project_id: str
    user_id: str
    artifact: dict[str, Any]  # the download agent's output
    user_project: UserProjectRecord


def project_id_for(request: str, user_id: str, project_name: str | None = None) -> str:
    """A stable project id per user and project name (re-generating keeps the history)."""
    return f"{rules.slug_of(project_name or rules.project_name_of(request))}.{user_id}"


async def generate_project(
    store: Store,
    request: str,
    *,
    user_id: str,
    output_dir: Path,
    pipeline_type: str = "SIMPLE",
    project_name: str | None = None,
    options: RunOptions | None = None,
) -> RunResult:
    """Run the 9 agents for `request`; the project lands in `output_dir/<slug>/` and its zip beside it."""
    ptype = pipeline_type.upper()
    if ptype not in PIPELINE_TYPES:
        raise ValidationError(f"pipeline_type {pipeline_type!r} is unknown; use SIMPLE or PRODUCTION")
    name = project_name or rules.project_name_of(request)
    return await run(
        pipeline,
        {"request": request, "pipeline_type": ptype, "output_dir": str(output_dir), "project_name": name},
        store=store,
        project_id=project_id_for(request, user_id, name),
        user_id=user_id,
        pipeline_type=ptype,
        metadata={"project_name": name},
        options=options,
    )


async def record_download(
    store: Store, *, user_id: str, project_id: str, artifact: dict[str, Any], download_id: str
) -> UserProjectRecord:
    """Describe the project in the user's history and count one download of it.

    `download_id` names this download: a call retried with the same id counts once.
    """
    api = StateAPI(store)
    await api.save_user_project({
        "user_id": user_id,
        "project_id": project_id,
        "project_name": artifact["project_name"],
        "description": f"{artifact['template']} project, {len(artifact['files'])} files",
        "tech_stack": artifact["tech_stack"],
        "file_path": artifact["zip_path"],
        "size_mb": artifact["size_mb"],
    })
    project = await api.record_download(user_id, project_id, download_id)
    await api.record_metric({"metric_name": "download_bytes", "agent_name": "history", "value": artifact["size_bytes"]})
    await api.aclose()
    return project


async def run_example(
    store: Store,
    workdir: Path,
    *,
    request: str = DEFAULT_REQUEST,
    user_id: str = "user-1",
    pipeline_type: str = "SIMPLE",
) -> TDeveloperRun:
    """Generate the project for `request` and record its first download."""
    result = await generate_project(store, request, user_id=user_id, output_dir=workdir, pipeline_type=pipeline_type)
    project_id = project_id_for(request, user_id)
    if not result.ok:
        raise RuntimeError(f"t-developer session {result.session_id} ended {result.status.value}: {result.reason}")
    artifact = dict(result.outputs["download"])
    project = await record_download(store, user_id=user_id, project_id=project_id, artifact=artifact,
                                    download_id=result.session_id)
    return TDeveloperRun(result=result, project_id=project_id, user_id=user_id, artifact=artifact,
                         user_project=project)
