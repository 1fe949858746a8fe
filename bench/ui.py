"""Dashboard page render times: a SQLite store with 1,000 sessions and one session of 500 tasks.

Each page is requested through the ASGI app in-process (Starlette's TestClient), so
the times are the server's: store reads, layout and HTML, not a browser's drawing.
Target: under 300 ms a page. Printed, not asserted. Run:

    .venv/bin/python bench/ui.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from starlette.testclient import TestClient

from orchestrator.store import NewSession, NewTask, StoreConfig, open_store
from orchestrator.ui import Settings, create_app

SESSIONS = 1000
BIG_TASKS = 500
LAYERS = 10
RUNS = 7
TARGET_MS = 300.0


def _big_dag() -> list[NewTask]:
    """500 tasks in 10 layers of 50; each depends on two tasks of the layer above."""
    per = BIG_TASKS // LAYERS
    tasks = []
    for layer in range(LAYERS):
        for n in range(per):
            deps = () if layer == 0 else (f"t{layer - 1}-{n:02d}", f"t{layer - 1}-{(n * 7 + 3) % per:02d}")
            tasks.append(NewTask(f"t{layer}-{n:02d}", "worker", depends_on=tuple(sorted(set(deps)))))
    return tasks


async def _fill(url: str) -> None:
    async with open_store(url) as store:
        for n in range(SESSIONS):
            await store.create_session(
                NewSession(f"s-{n:04d}", "bench", project_id=f"p-{n % 20}", user_id=f"u-{n % 7}"),
                [NewTask("a", "step"), NewTask("b", "step", depends_on=("a",))])
        await store.create_session(NewSession("big", "bench"), _big_dag())


def _time(client: TestClient, path: str, headers: dict[str, str] | None = None) -> tuple[float, int]:
    samples = []
    status = 0
    for _ in range(RUNS):
        start = time.perf_counter()
        resp = client.get(path, headers=headers or {})
        samples.append((time.perf_counter() - start) * 1000)
        status = resp.status_code
    return statistics.median(samples), status


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite://{Path(tmp) / 'state.db'}"
        print(f"filling a SQLite store: {SESSIONS} sessions and one of {BIG_TASKS} tasks ...", flush=True)
        anyio.run(_fill, url)
        app = create_app(Settings(store=StoreConfig.from_url(url), store_url=url))
        with TestClient(app, base_url="http://127.0.0.1:8765") as client:
            client.get("/")  # opens the store
            live = client.get("/fragments/sessions/big").headers["x-fingerprint"]
            pages = [
                ("sessions list, first page (50)", "/", None),
                ("sessions list, 500 a page", "/?limit=500", None),
                ("sessions list, one project", "/?project=p-3", None),
                ("sessions list, filtered by user", "/?user=u-2", None),
                ("session page, 500 tasks", "/sessions/big", None),
                ("session live fragment, 500 tasks", "/fragments/sessions/big", None),
                ("session live poll, unchanged (204)", "/fragments/sessions/big", {"x-live-fingerprint": live}),
                ("task panel", "/fragments/sessions/big/tasks/t5-25", None),
                ("metrics page", "/metrics", None),
            ]
            print(f"\n{'page':<40}{'median ms':>10}  status  (target < {TARGET_MS:.0f} ms, median of {RUNS})")
            slow = 0
            for label, path, headers in pages:
                ms, status = _time(client, path, headers)
                flag = "" if ms < TARGET_MS else "  over target"
                slow += bool(flag)
                print(f"{label:<40}{ms:>10.1f}  {status:>6}{flag}")
            print(f"\n{len(pages) - slow} of {len(pages)} pages under {TARGET_MS:.0f} ms")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
