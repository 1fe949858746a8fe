"""`python -m examples.t_developer [REQUEST] [--production] [--user USER]`."""

from __future__ import annotations

import argparse

import anyio

from examples._common import DEMO_DIR, default_store_url, open_initialized, utc_day
from examples.t_developer.app import DEFAULT_REQUEST, run_example
from orchestrator.metrics import agent_stats, project_stats


async def main(request: str, production: bool, user: str) -> None:
    url = default_store_url()
    store = await open_initialized(url)
    try:
        print(f"store: {url}")
        out = await run_example(store, DEMO_DIR / "t_developer", request=request, user_id=user,
                                pipeline_type="PRODUCTION" if production else "SIMPLE")
        art = out.artifact
        print(f"session {out.result.session_id}: {out.result.status.value}")
        print(f"project {art['project_name']} ({', '.join(art['tech_stack'])}): {len(art['files'])} files "
              f"in {art['project_dir']}")
        print(f"zip {art['zip_path']} ({art['size_bytes']} bytes, sha256 {art['sha256'][:12]}...)")
        print(f"history: downloads={out.user_project.download_count} size_mb={out.user_project.size_mb}")
        day = utc_day(store.clock.now())
        for row in await agent_stats(store, day):
            print(f"  {row.agent:<20} runs={row.count} errors={row.errors} mean={row.mean_ms or 0:.1f} ms")
        stats = await project_stats(store, out.project_id, [day])
        print(f"project {out.project_id}: {stats.completed}/{stats.total} sessions completed")
    finally:
        await store.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("request", nargs="?", default=DEFAULT_REQUEST)
    parser.add_argument("--production", action="store_true", help="pipeline_type PRODUCTION (tests, Dockerfile, CI)")
    parser.add_argument("--user", default="user-1")
    args = parser.parse_args()
    anyio.run(main, args.request, args.production, args.user)
