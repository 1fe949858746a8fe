"""`python -m examples.crash_and_resume`: kill a worker mid-run and resume the session here."""

from __future__ import annotations

import shutil

import anyio

from examples._common import DEMO_DIR, default_store_url, open_initialized
from examples.crash_and_resume.app import run_example


async def main() -> None:
    url = default_store_url()
    store = await open_initialized(url)
    workdir = DEMO_DIR / "crash_and_resume"
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        print(f"store: {url}")
        out = await run_example(store, url, workdir, verbose=True)
        print(f"session {out.session_id}: {out.result.status.value}")
        print(f"ran once:  {', '.join(out.ran_once)}")
        print(f"ran again: {', '.join(out.ran_again)} (in flight when the worker died)")
    finally:
        await store.aclose()


if __name__ == "__main__":
    anyio.run(main)
