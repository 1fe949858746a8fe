"""`python -m examples.demo` (`make demo`): a tour of the SDK in under a minute.

Uses `ORCHESTRATOR_STORE` if set, else a fresh `sqlite:///<repo>/.demo/state.db`.
Produced files go to `<repo>/.demo/`. Ends with CLI commands to try on the real sessions.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import anyio

from examples import crash_and_resume, deploy_progress, miyabi_issue, t_developer
from examples._common import DEMO_DIR, default_store_url, open_initialized, utc_day
from orchestrator.cli._waits import cli_command
from orchestrator.metrics import agent_stats, project_stats
from orchestrator.scheduler import RunOptions, resume
from orchestrator.store import Store, TaskStatus


def _fresh_demo_dir(url: str) -> None:
    """Start from nothing: remove `.demo/` (and so its SQLite file, when that is the store)."""
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    if url.startswith("sqlite:") and "ORCHESTRATOR_STORE" in os.environ:
        for suffix in ("", "-wal", "-shm"):
            Path(url.split("://", 1)[-1].split("?")[0] + suffix).unlink(missing_ok=True)


def _title(n: int, text: str) -> None:
    print(f"\n{n}. {text}")


async def _t_developer(store: Store) -> dict[str, str]:
    _title(1, 't-developer: "a todo app with React and a Node API" -> 9 agents -> a project zip')
    out = await t_developer.run_example(store, DEMO_DIR / "t_developer")
    art = out.artifact
    snap = await store.load_session(out.result.session_id)
    done = sum(t.status is TaskStatus.COMPLETED for t in snap.tasks.values())
    print(f"   session {out.result.session_id} ({snap.session.pipeline_type}): {out.result.status.value}, "
          f"{done}/{len(snap.tasks)} agents completed")
    print(f"   {art['project_name']} [{', '.join(art['tech_stack'])}], template {art['template']} "
          f"({art['match_rate']:.0%} match): {len(art['files'])} files in {art['project_dir']}")
    print(f"   zip: {art['zip_path']} ({art['size_bytes']} bytes, sha256 {art['sha256'][:12]}...)")
    again = await t_developer.record_download(store, user_id=out.user_id, project_id=out.project_id, artifact=art,
                                              download_id=f"{out.result.session_id}-again")
    print(f"   user history (store, via the state API): {again.project_name} by {again.user_id} "
          f"[{', '.join(again.tech_stack)}], downloaded {again.download_count}x, {again.size_mb} MB")
    day = utc_day(store.clock.now())
    rows = {r.agent: r for r in await agent_stats(store, day)}
    line = ", ".join(f"{a} {rows[a].mean_ms or 0:.1f}ms" for a in t_developer.AGENTS if a in rows)
    print(f"   per-agent metrics (mean duration today): {line}")
    stats = await project_stats(store, out.project_id, [day])
    print(f"   project {out.project_id}: {stats.completed} of {stats.total} sessions completed (downloads are not sessions)")
    return {"t-developer": out.result.session_id}


async def _miyabi(store: Store) -> dict[str, str]:
    _title(2, "miyabi issue #42: a coordinator adds tasks at run time; a retry; a durable approval")
    waiting = await miyabi_issue.start(store, DEMO_DIR / "miyabi_issue")
    sid = waiting.session_id
    snap = await store.load_session(sid)
    added = [t for t in snap.tasks.values() if t.added_by == "coordinator"]
    print(f"   session {sid}: coordinator added {len(added)} tasks and {len(snap.edges)} DEP# edges:")
    for task in sorted(added, key=lambda t: (t.priority, t.task_id)):
        retry = f", attempt {task.attempt}: {task.history[0].error.message}" if task.attempt > 1 and \
            task.history and task.history[0].error else ""
        print(f"     P{task.priority} {task.task_id:<17} {task.status.value}{retry}")
    print(f"   the session is {waiting.status.value}: no worker holds it while it waits for a person")
    await miyabi_issue.approve(store, sid, by="demo")
    print(f'   approved through the store API (same as `orchestrator approve {sid} approval --by demo`)')
    done = await resume(miyabi_issue.pipeline, sid, store=store)
    print(f"   resumed: {done.status.value}; PR description {done.outputs['pr']['description']}")
    second = await miyabi_issue.start(store, DEMO_DIR / "miyabi_issue_2")
    print(f"   a second issue session, {second.session_id}, is left WAITING for you (see below)")
    return {"miyabi": sid, "miyabi-waiting": second.session_id}


async def _deploy(store: Store) -> dict[str, str]:
    _title(3, "deploy: 29 CommandAgent shell steps reporting [n/29], watched from outside")
    sid = f"deploy-progress-{uuid.uuid4().hex[:8]}"
    async with anyio.create_task_group() as tg:
        tg.start_soon(deploy_progress.app.watch, store, sid)
        result = await deploy_progress.run_scheduled(
            store, DEMO_DIR / "deploy" / "scheduled", step_seconds=0.03, session_id=sid,
            options=RunOptions(progress_interval=0.2),
        )
    events = await store.read_events(sid, limit=100)
    lines = [e.message for e in events.items if e.kind == "log"]
    print(f"   session {sid}: {result.status.value}; {len(lines)} progress lines stored as events, "
          f"e.g. {lines[4]!r}")
    ext = await deploy_progress.run_external(store, DEMO_DIR / "deploy" / "external")
    task = await store.get_task(ext.session.session_id, deploy_progress.app.EXTERNAL_TASK)
    p = task.progress
    print(f"   the same deploy from a plain script with the state API only: session {ext.session.session_id} "
          f"(owner kind {ext.session.owner_kind.value}) {ext.session.status.value}, "
          f"progress {p.current}/{p.total} {p.phase}: {p.step}")
    return {"deploy": sid, "deploy-external": ext.session.session_id}


async def _crash(store: Store, url: str) -> dict[str, str]:
    _title(4, "crash and resume: SIGKILL a worker process mid-run, resume from this process")
    out = await crash_and_resume.run_example(store, url, DEMO_DIR / "crash_and_resume", verbose=True)
    print(f"   session {out.session_id}: {out.result.status.value}")
    print(f"   ran once:  {', '.join(out.ran_once)}")
    print(f"   ran again: {', '.join(out.ran_again)} (only the tasks in flight at the kill)")
    return {"crash": out.session_id}


async def main() -> None:
    started = time.monotonic()
    url = default_store_url()
    _fresh_demo_dir(url)
    store = await open_initialized(url)
    print(f"store: {url} ({store.describe().backend}); files under {DEMO_DIR}")
    ids: dict[str, str] = {}
    try:
        ids.update(await _t_developer(store))
        ids.update(await _miyabi(store))
        ids.update(await _deploy(store))
        ids.update(await _crash(store, url))
    finally:
        await store.aclose()
    cli = cli_command()  # `orchestrator`, or the venv's script when it is not on PATH
    print(f"\ndone in {time.monotonic() - started:.1f}s. Try next (from {DEMO_DIR.parent}):")
    print(f"  export ORCHESTRATOR_STORE='{url}'")
    for command in (
        f"status {ids['t-developer']}",
        f"graph {ids['miyabi']} --format text",
        f"events {ids['deploy']}",
        f"approve {ids['miyabi-waiting']} approval --by you",
        f"resume {ids['miyabi-waiting']} --app examples.miyabi_issue.pipeline:pipeline",
        "metrics --project todo-app.user-1",
        "projects user-1",
        "list --status completed",
    ):
        print(f"  {cli} {command}")
    if cli != "orchestrator":
        print(f"  (or `source {Path(cli).parent / 'activate'}` once, then plain `orchestrator ...`)")


if __name__ == "__main__":
    anyio.run(main)
