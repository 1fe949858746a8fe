"""`python -m examples.nightly_digest`: limits, a schedule, one triggered run worked off."""

from __future__ import annotations

import anyio

from examples._common import default_store_url, open_initialized
from examples.nightly_digest.app import run_digest


async def main() -> None:
    url = default_store_url()
    store = await open_initialized(url)
    try:
        print(f"store: {url}")
        run = await run_digest(store)
        print(f"digest: session {run.session_id} {run.status}, {run.items} summaries, "
              f"at most {run.most_at_once} LLM calls at once (limit 3)")
    finally:
        await store.aclose()


if __name__ == "__main__":
    anyio.run(main)
