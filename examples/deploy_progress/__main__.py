"""`python -m examples.deploy_progress`: the 29-step deploy under the scheduler, then from a plain script."""

from __future__ import annotations

import anyio

from examples._common import DEMO_DIR, default_store_url, open_initialized
from examples.deploy_progress.app import EXTERNAL_TASK, run_external, run_scheduled


async def main() -> None:
    url = default_store_url()
    store = await open_initialized(url)
    try:
        print(f"store: {url}")
        result = await run_scheduled(store, DEMO_DIR / "deploy" / "scheduled")
        session = await store.get_session(result.session_id)
        print(f"scheduled: session {result.session_id} {result.status.value}, "
              f"progress {session.progress.current}/{session.progress.total}")
        ext = await run_external(store, DEMO_DIR / "deploy" / "external")
        task = await store.get_task(ext.session.session_id, EXTERNAL_TASK)
        p = task.progress
        print(f"external:  session {ext.session.session_id} {ext.session.status.value}, "
              f"task progress {p.current}/{p.total} ({p.phase}: {p.step})")
    finally:
        await store.aclose()


if __name__ == "__main__":
    anyio.run(main)
