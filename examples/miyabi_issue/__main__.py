"""`python -m examples.miyabi_issue [--no-approve]`: run issue #42 through codegen, review, approval, PR."""

from __future__ import annotations

import argparse

import anyio

from examples._common import DEMO_DIR, default_store_url, open_initialized
from examples.miyabi_issue.app import run_example


async def main(auto_approve: bool) -> None:
    url = default_store_url()
    store = await open_initialized(url)
    try:
        print(f"store: {url}")
        out = await run_example(store, DEMO_DIR / "miyabi_issue", approve_as="cli-user" if auto_approve else None)
        sid = out.waiting.session_id
        print(f"session {sid}: {out.waiting.status.value} ({out.waiting.reason})")
        snap = await store.load_session(sid)
        for task in sorted(snap.tasks.values(), key=lambda t: (t.priority, t.task_id)):
            print(f"  P{task.priority} {task.task_id:<18} {task.status.value:<9} attempts={task.attempt}")
        if out.finished is None:
            print(f"approve it with: orchestrator approve {sid} approval   (then: orchestrator resume {sid})")
        else:
            print(f"approved and resumed: {out.finished.status.value}; PR: {out.finished.outputs['pr']['description']}")
    finally:
        await store.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-approve", action="store_true", help="leave the session WAITING for the CLI")
    anyio.run(main, not parser.parse_args().no_approve)
