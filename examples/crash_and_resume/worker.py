"""The worker process the crash example starts and kills: `python -m examples.crash_and_resume.worker URL`.

It claims one submitted session and runs it, as `orchestrator worker` would.
"""

from __future__ import annotations

import os
import sys

import anyio

from examples._common import open_initialized
from examples.crash_and_resume.pipeline import FAST_LEASE, pipeline
from orchestrator.recovery import Worker


async def main(url: str) -> None:
    store = await open_initialized(url)
    try:
        worker = Worker(store, pipeline, options=FAST_LEASE, poll_interval=0.1, worker_id=f"doomed-worker-{os.getpid()}")
        await worker.run(max_sessions=1)
    finally:
        await store.aclose()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
