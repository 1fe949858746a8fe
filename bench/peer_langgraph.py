"""Per-task overhead of our `run()` against LangGraph with its durable SQLite checkpointer, in one process run.

    .venv/bin/pip install -r bench/requirements-peer.txt    # the peer, for this script only
    .venv/bin/python bench/peer_langgraph.py [--sizes 200,1000] [--runs 3] [--budget 120]

Shapes, as in bench/overhead.py: a chain of N no-op steps, and a fan-out 1 -> N -> 1 at
concurrency 32 (LangGraph: edges from "root" to each of m0..mN-1, joined by
`add_edge([m0..mN-1], "end")`, one super-step, `max_concurrency=32`). State is one counter
with an `operator.add` reducer, so LangGraph's checkpoints do not grow with the values.

Ours: `chain`/`fanout`/`timed_run` from bench/overhead.py on a SQLite file; the time counted
is session creation plus the run (LangGraph's invoke writes its first checkpoint too).
LangGraph: `ainvoke` with `AsyncSqliteSaver` and `invoke` with `SqliteSaver`, each on its
own file in a temp dir, a new thread_id per run, `durability="sync"`: a super-step's
checkpoint is committed before the next starts, and each node's writes as it finishes.
Both run at SQLite synchronous=NORMAL (our default) and FULL (what LangGraph's own
`from_conn_string` connection gets). Every figure is the best of `--runs` runs after one
warm-up; per-task ms is wall time / N for both shapes. A LangGraph warm-up longer than
`--budget` seconds is abandoned and that row skipped with a note.

Measured with langgraph 1.2.22, langgraph-checkpoint 4.3.2, langgraph-checkpoint-sqlite
3.1.2, aiosqlite 0.22.1 (bench/requirements-peer.txt); LangGraph is not a project
dependency, so it is imported by name at run time and typed as Any.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import math
import operator
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import CONCURRENCY, bare_anyio, chain, fanout, timed_run

from orchestrator.graph import Pipeline
from orchestrator.store import Store, open_store

Shape = Literal["chain", "fan-out"]
Sync = Literal["NORMAL", "FULL"]
SYNC_LEVELS: tuple[Sync, ...] = ("NORMAL", "FULL")
SHAPES: tuple[tuple[Shape, Callable[[int], Pipeline], int], ...] = (
    ("chain", chain, 1), ("fan-out", fanout, CONCURRENCY),
)
PEER_PACKAGES = ("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "aiosqlite")


class CountState(TypedDict):
    """LangGraph state: one counter each node adds 1 to, so every node's run is visible in the output."""

    count: Annotated[int, operator.add]


async def lg_async_step(state: CountState) -> dict[str, int]:
    return {"count": 1}


def lg_sync_step(state: CountState) -> dict[str, int]:
    return {"count": 1}


def lg_graph(shape: Shape, n: int, step: Callable[[CountState], Any]) -> Any:
    """The uncompiled StateGraph for a shape, node names as in overhead.py's pipelines."""
    lg = importlib.import_module("langgraph.graph")
    g = lg.StateGraph(CountState)
    if shape == "chain":
        for i in range(n):
            g.add_node(f"t{i}", step)
        g.add_edge(lg.START, "t0")
        for i in range(n - 1):
            g.add_edge(f"t{i}", f"t{i + 1}")
        g.add_edge(f"t{n - 1}", lg.END)
        return g
    mids = [f"m{i}" for i in range(n)]
    g.add_node("root", step)
    g.add_node("end", step)
    g.add_edge(lg.START, "root")
    for mid in mids:
        g.add_node(mid, step)
        g.add_edge("root", mid)
    g.add_edge(mids, "end")
    g.add_edge("end", lg.END)
    return g


def expected_count(shape: Shape, n: int) -> int:
    return n if shape == "chain" else n + 2


def lg_config(n: int) -> dict[str, Any]:
    # A chain takes one super-step per node; LangGraph's default recursion_limit is 25.
    return {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": n + 10,
            "max_concurrency": CONCURRENCY}


async def best_of(runs: int, once: Callable[[], Awaitable[float]]) -> float:
    """One warm-up, then the fastest of `runs` timed runs, in seconds."""
    await once()
    return min([await once() for _ in range(runs)])


@dataclass
class Row:
    """One (N, shape, synchronous) line of the table; seconds per whole run, None when skipped."""

    n: int
    shape: Shape
    sync: Sync
    bare: float
    ours_run: float
    ours_total: float
    lg_async: float | None
    lg_sync: float | None


async def measure_ours(store: Store, pipeline: Pipeline, runs: int) -> tuple[float, float]:
    """Best (run only, creation + run) seconds of our `run()` path; the two minima may be different runs."""
    results = []
    await timed_run(store, pipeline, None)
    for _ in range(runs):
        stats = await timed_run(store, pipeline, None)
        results.append((stats["run_s"], stats["create_s"] + stats["run_s"]))
    return min(r for r, _ in results), min(t for _, t in results)


class LangGraphFiles:
    """One SQLite file per (API, synchronous level) in a temp dir, opened with the checkpointer's own schema."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    async def open_async(self, sync: Sync) -> tuple[Any, Any]:
        aiosqlite = importlib.import_module("aiosqlite")
        aio = importlib.import_module("langgraph.checkpoint.sqlite.aio")
        conn = await aiosqlite.connect(str(self.tmp / f"langgraph-async-{sync.lower()}.db"))
        await conn.execute(f"PRAGMA synchronous = {sync}")
        saver = aio.AsyncSqliteSaver(conn)
        await saver.setup()
        return conn, saver

    def open_sync(self, sync: Sync) -> tuple[sqlite3.Connection, Any]:
        mod = importlib.import_module("langgraph.checkpoint.sqlite")
        # check_same_thread=False as LangGraph's from_conn_string does: SqliteSaver locks around it.
        conn = sqlite3.connect(str(self.tmp / f"langgraph-sync-{sync.lower()}.db"), check_same_thread=False)
        conn.execute(f"PRAGMA synchronous = {sync}")
        saver = mod.SqliteSaver(conn)
        saver.setup()
        return conn, saver


def rows_written(path: Path, thread_id: str) -> tuple[int, int]:
    """Checkpoints and pending-write rows LangGraph stored for one thread: evidence the run was durable."""
    with sqlite3.connect(str(path)) as conn:
        cps = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = ?", (thread_id,)).fetchone()[0]
        writes = conn.execute("SELECT count(*) FROM writes WHERE thread_id = ?", (thread_id,)).fetchone()[0]
    return int(cps), int(writes)


async def measure_langgraph(
    files: LangGraphFiles, shape: Shape, n: int, sync: Sync, runs: int, budget: float, notes: list[str]
) -> tuple[float | None, float | None]:
    """Best seconds for ainvoke/AsyncSqliteSaver and invoke/SqliteSaver; (None, None) when the warm-up overran."""
    want = expected_count(shape, n)
    conn, saver = await files.open_async(sync)
    try:
        graph = lg_graph(shape, n, lg_async_step).compile(checkpointer=saver)

        async def once_async() -> float:
            start = time.perf_counter()
            out = await graph.ainvoke({"count": 0}, lg_config(n), durability="sync")
            elapsed = time.perf_counter() - start
            assert out["count"] == want, f"langgraph {shape} ran {out['count']} nodes, expected {want}"
            return elapsed

        try:
            with anyio.fail_after(budget):
                await once_async()
        except TimeoutError:
            notes.append(f"skipped LangGraph {shape} N={n} synchronous={sync}: warm-up took over {budget:.0f} s")
            return None, None
        best_async = min([await once_async() for _ in range(runs)])
    finally:
        await conn.close()

    sconn, ssaver = files.open_sync(sync)
    try:
        sgraph = lg_graph(shape, n, lg_sync_step).compile(checkpointer=ssaver)
        last_thread = ""

        async def once_sync() -> float:
            nonlocal last_thread
            config = lg_config(n)
            last_thread = config["configurable"]["thread_id"]
            start = time.perf_counter()
            out = sgraph.invoke({"count": 0}, config, durability="sync")
            elapsed = time.perf_counter() - start
            assert out["count"] == want, f"langgraph {shape} ran {out['count']} nodes, expected {want}"
            return elapsed

        best_sync = await best_of(runs, once_sync)
    finally:
        sconn.close()
    if sync == "NORMAL":
        cps, writes = rows_written(files.tmp / "langgraph-sync-normal.db", last_thread)
        notes.append(f"LangGraph {shape} N={n} stored {cps} checkpoints and {writes} write rows per run")
    return best_async, best_sync


def ms(seconds: float | None, n: int) -> str:
    return "skipped" if seconds is None else f"{seconds * 1000 / n:.3f}"


def ratio(peer: float | None, ours: float) -> str:
    return "-" if peer is None else f"x{peer / ours:.1f}"


def print_table(rows: list[Row]) -> None:
    head = (f"{'N':>5}  {'shape':<8} {'synchronous':<11} {'bare anyio':>10} {'ours run':>9} {'ours total':>10} "
            f"{'LG async':>9} {'LG sync':>9} {'LG async/ours':>13} {'LG sync/ours':>12}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.n:>5}  {r.shape:<8} {r.sync:<11} {ms(r.bare, r.n):>10} {ms(r.ours_run, r.n):>9} "
              f"{ms(r.ours_total, r.n):>10} {ms(r.lg_async, r.n):>9} {ms(r.lg_sync, r.n):>9} "
              f"{ratio(r.lg_async, r.ours_total):>13} {ratio(r.lg_sync, r.ours_total):>12}")


def print_defaults(rows: list[Row]) -> None:
    """Each side at its own default: ours NORMAL against LangGraph's FULL (the better of its two APIs)."""
    by_key = {(r.n, r.shape, r.sync): r for r in rows}
    for (n, shape, sync), ours in by_key.items():
        peer = by_key.get((n, shape, "FULL"))
        if sync != "NORMAL" or peer is None:
            continue
        best = min((t for t in (peer.lg_async, peer.lg_sync) if t is not None), default=math.nan)
        if math.isnan(best):
            continue
        print(f"  N={n:<5} {shape:<8} ours {ms(ours.ours_total, n)} ms/task vs LangGraph {ms(best, n)} ms/task: "
              f"x{best / ours.ours_total:.1f}")


def langgraph_default_sync(tmp: Path) -> str:
    """The synchronous level of the connection LangGraph's own `SqliteSaver.from_conn_string` opens."""
    mod = importlib.import_module("langgraph.checkpoint.sqlite")
    with mod.SqliteSaver.from_conn_string(str(tmp / "probe.db")) as saver:
        level = saver.conn.execute("PRAGMA synchronous").fetchone()[0]
    return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(level, str(level))


def versions() -> str:
    found = []
    for name in PEER_PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} missing")
    return ", ".join(found)


async def main(sizes: list[int], runs: int, budget: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="orchestrator-peer-"))
    files = LangGraphFiles(tmp)
    notes: list[str] = []
    rows: list[Row] = []
    print(f"peer benchmark, per-task ms (wall time / N), best of {runs} runs after 1 warm-up, files in {tmp}")
    print(f"  {versions()}")
    print('  LangGraph: durability="sync" (each super-step\'s checkpoint committed before the next starts), '
          f"fan-out max_concurrency={CONCURRENCY}; LG async = ainvoke + AsyncSqliteSaver, "
          "LG sync = invoke + SqliteSaver")
    print(f"  ours: run() on SQLite (WAL), fan-out concurrency={CONCURRENCY}; 'ours total' = session creation + run "
          "(the basis of the ratios), 'ours run' = run only")
    print()
    for sync in SYNC_LEVELS:
        url = f"sqlite://{tmp}/ours-{sync.lower()}.db" + ("?synchronous=FULL" if sync == "FULL" else "")
        async with open_store(url) as store:
            for n in sizes:
                for shape, build, conc in SHAPES:
                    pipeline = build(n)
                    bare = await best_of(runs, functools.partial(bare_anyio, pipeline, conc))
                    ours_run, ours_total = await measure_ours(store, pipeline, runs)
                    lg_async, lg_sync = await measure_langgraph(files, shape, n, sync, runs, budget, notes)
                    rows.append(Row(n, shape, sync, bare, ours_run, ours_total, lg_async, lg_sync))
                    print(f"  measured N={n} {shape} synchronous={sync}", flush=True)
    print()
    print_table(rows)
    print()
    lg_default = langgraph_default_sync(tmp)
    print(f"defaults (ours synchronous=NORMAL; LangGraph's from_conn_string connection is {lg_default}, "
          "compared at FULL; the better LangGraph API):")
    print_defaults(rows)
    for note in notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="200,1000", help="comma-separated N values")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measurement; the best is reported")
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds a LangGraph warm-up may take before that row is skipped")
    args = parser.parse_args()
    anyio.run(main, [int(s) for s in args.sizes.split(",")], args.runs, args.budget)
