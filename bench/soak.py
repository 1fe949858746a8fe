"""A fault soak: sessions drained by worker processes through a faulty wire, then invariants checked.

Starts a moto server and, per worker slot, a FaultProxy in front of it (all on
127.0.0.1; one proxy per slot so each request is attributed to a worker), submits
`--sessions` sessions of the pipeline in bench/soak_app.py (10 agents with a fan-out
and a fan-in), and runs `--workers` worker processes while injecting: throttling 20%,
5xx 5% (JSON, HTML and empty bodies), lost responses 5%, one partition of
`--partition` seconds (every proxy holds its requests), and `--chaos` SIGKILLs or
SIGSTOP/SIGCONTs of random workers (killed ones are restarted). Leases are 6 s.
Then it prints the sessions, the faults, and each invariant with PASS/FAIL; the exit
code is 1 if one fails. Run by hand (about a minute or two):

    .venv/bin/python bench/soak.py [--sessions 20] [--workers 3] [--partition 30] [--timeout 300]

What "no writes or agent starts after a deadline" covers: an agent start (a side-effect
file with its fence and wall time) is a violation if a newer fence of its session had
been claimed before it (the claim's time is the earlier of the claimant's own log line
and the first agent start under that fence, each an upper bound of when the claim
landed; the store's attempt history is not used: an interrupted attempt's entry carries
the fence that recorded it, not the one it ran under). For requests, the proxies' arrival records show that no
request arrived from a worker slot while its process was killed (until its restart) or
stopped (0.5 s grace for bytes already on the wire). Requests cannot be attributed to
a fence from the proxy, so stale-fence writes are left to the store's conditions (and
show up as the first two invariants).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio

import soak_app
from orchestrator.scheduler import submit
from orchestrator.store import Store, open_store
from orchestrator.store.records import SessionStatus, TaskStatus
from orchestrator.testing._workers import child_env
from orchestrator.testing.fault_proxy import FaultProxy, Faults
from orchestrator.testing.moto_server import moto_server

BENCH = Path(__file__).resolve().parent
FAULTS = Faults(throttle=0.20, error_json=0.02, error_html=0.015, error_empty=0.015, lost=0.05)
TERMINAL = {SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED}
GRACE_S = 0.5  # bytes already on the wire when a process is killed or stopped may still arrive
STOP_S = 9.0  # a SIGSTOP lasts longer than the 6 s lease, so the session is taken over


@dataclass
class Slot:
    """One worker slot: its proxy, its current process, and when it could not send."""

    index: int
    proxy: FaultProxy
    url: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    silent: list[tuple[str, int, float, float]] = field(default_factory=list)  # (kind, pid, from, to)
    stopped: bool = False
    down: bool = False  # killed by us, not yet restarted

    def start(self) -> None:
        err = open(self.workdir / f"worker-{self.index}-{time.monotonic_ns()}.err", "w")
        self.proc = subprocess.Popen([sys.executable, str(BENCH / "soak_app.py"), "worker", self.url,
                                      str(self.workdir)], stdout=subprocess.DEVNULL, stderr=err, env=child_env())
        err.close()

    def kill(self) -> None:
        """SIGKILL, reap, restart after a second (the quiet window is recorded)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._killed_at = time.monotonic()
        self.down = True

    def restart(self) -> None:
        assert self.proc is not None
        self.silent.append(("kill", self.proc.pid, self._killed_at, time.monotonic()))
        self.start()
        self.down = False

    def crashed(self) -> bool:
        """The process ended without our SIGKILL (see its .err file)."""
        return self.proc is not None and not self.down and self.proc.poll() is not None

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self._stopped_at = time.monotonic()
        self.stopped = True

    def cont(self) -> None:
        assert self.proc is not None
        self.silent.append(("stop", self.proc.pid, self._stopped_at, time.monotonic()))
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def shutdown(self) -> None:
        """SIGCONT if stopped, SIGTERM, and SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.stopped:
            self.cont()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Chaos:
    """What the parent did to the workers."""

    killed: int = 0
    stopped: int = 0
    partitions: list[float] = field(default_factory=list)


async def chaos(slots: list[Slot], args: argparse.Namespace, rng: random.Random, log: Chaos) -> None:
    """One partition after 5 s, and `--chaos` kills/stops of random workers, one every 3 s."""
    async with anyio.create_task_group() as tg:
        async def partition() -> None:
            await anyio.sleep(5.0)
            for s in slots:
                s.proxy.hold()
            await anyio.sleep(args.partition)
            for s in slots:
                s.proxy.release()
            log.partitions.append(args.partition)

        async def stop_for(slot: Slot) -> None:
            slot.stop()
            await anyio.sleep(STOP_S)
            slot.cont()

        if args.partition > 0:
            tg.start_soon(partition)
        for _ in range(args.chaos):
            await anyio.sleep(3.0)
            candidates = [s for s in slots if not s.stopped]
            if not candidates:
                continue
            slot = rng.choice(candidates)
            if rng.random() < 0.5:
                slot.kill()
                log.killed += 1
                await anyio.sleep(1.0)
                slot.restart()
            else:
                log.stopped += 1
                tg.start_soon(stop_for, slot)


async def wait_done(store: Store, sids: list[str], slots: list[Slot], deadline: float) -> dict[str, SessionStatus]:
    """Poll (through no proxy) until every session ended, a worker crashed, or the deadline passed."""
    statuses: dict[str, SessionStatus] = {}
    while time.monotonic() < deadline:
        crashed = [s.index for s in slots if s.crashed()]
        if crashed:
            print(f"  worker slot(s) {crashed} exited on their own: stopping the soak")
            break
        statuses = {sid: (await store.get_session(sid)).status for sid in sids}
        if all(s in TERMINAL for s in statuses.values()):
            break
        await anyio.sleep(1.0)
    return statuses


def read_jsonl(paths: Iterator[Path]) -> list[dict[str, object]]:
    return [json.loads(line) for p in paths for line in p.read_text().splitlines() if line.strip()]


async def soak(args: argparse.Namespace, workdir: Path) -> bool:
    """Run the soak and print the report; True if every invariant holds."""
    rng = random.Random(args.seed)
    (workdir / "starts").mkdir()
    t_begin = time.monotonic()
    with moto_server() as moto:
        table = "soak"
        store = open_store(f"dynamodb://{table}?region=us-east-1&endpoint={moto}")
        async with store:
            sids = [await submit(soak_app.PIPELINE, {"dir": str(workdir), "salt": i}, store=store,
                                 session_id=f"soak-{i:03d}", options=soak_app.OPTIONS)
                    for i in range(args.sessions)]
            slots: list[Slot] = []
            for i in range(args.workers):
                proxy = FaultProxy(moto, FAULTS, seed=args.seed * 100 + i, record_arrivals=True).start()
                url = f"dynamodb://{table}?region=us-east-1&endpoint={proxy.endpoint}"
                slots.append(Slot(i, proxy, url, workdir))
            log = Chaos()
            statuses: dict[str, SessionStatus] = {}
            try:
                for slot in slots:
                    slot.start()
                deadline = t_begin + args.timeout
                async with anyio.create_task_group() as tg:
                    tg.start_soon(chaos, slots, args, rng, log)
                    statuses = await wait_done(store, sids, slots, deadline)
                    tg.cancel_scope.cancel()
            finally:
                for slot in slots:
                    slot.shutdown()
                for slot in slots:
                    slot.proxy.release()
                    slot.proxy.stop()
            elapsed = time.monotonic() - t_begin
            snapshots = {sid: await store.load_session(sid) for sid in sids}

    checks: list[tuple[str, bool, str]] = []
    final = Counter(s.status.value for s in (snap.session for snap in snapshots.values()))
    print(f"soak: {args.sessions} sessions x {len(soak_app.TASKS)} agents, {args.workers} workers, "
          f"{elapsed:.0f} s (seed {args.seed})")
    print(f"  final statuses: {dict(sorted(final.items()))}")
    injected: Counter[str] = Counter()
    for slot in slots:
        injected.update(slot.proxy.injected)
    seen = sum(s.proxy.seen for s in slots)
    forwarded = sum(s.proxy.forwarded for s in slots)
    print(f"  requests: {seen} seen, {forwarded} forwarded; faults injected: {dict(sorted(injected.items()))}")
    print(f"  partitions: {[f'{p:g} s' for p in log.partitions]}; workers SIGKILLed {log.killed} "
          f"(restarted), SIGSTOPped {log.stopped} (for {STOP_S:g} s, lease {soak_app.OPTIONS.lease_seconds:g} s)")
    if not statuses or any(s not in TERMINAL for s in statuses.values()):
        print(f"  ended after {elapsed:.0f} s (timeout {args.timeout:g} s) with sessions still running")

    bad = [sid for sid, snap in snapshots.items() if snap.session.status is not SessionStatus.COMPLETED]
    checks.append(("every session COMPLETED", not bad, f"{len(bad)} not: {bad[:5]}" if bad else ""))

    wrong = []
    for sid, snap in snapshots.items():
        want = soak_app.expected(int(snap.session.input["salt"]))
        got = {t: (rec.output or {}).get("v") for t, rec in snap.tasks.items()}
        if got != want:
            wrong.append(sid)
    checks.append(("every output correct", not wrong, f"wrong: {wrong[:5]}" if wrong else ""))

    twice = [(sid, t) for sid, snap in snapshots.items() for t, rec in snap.tasks.items()
             if rec.status is not TaskStatus.COMPLETED
             or sum(h.status is TaskStatus.COMPLETED for h in rec.history) != 1]
    checks.append(("each task completed once (store records)", not twice, f"{twice[:5]}" if twice else ""))

    starts = read_jsonl((workdir / "starts").glob("*.json"))
    per_task: defaultdict[tuple[str, str], list[dict[str, object]]] = defaultdict(list)
    for s in starts:
        per_task[(str(s["session"]), str(s["task"]))].append(s)
    rerun = {k: v for k, v in per_task.items() if len(v) > 1}
    same_fence = {k for k, v in rerun.items() if len({int(str(s["fence"])) for s in v}) < len(v)}
    detail = (f"{len(starts)} starts for {len(per_task)} tasks; {len(rerun)} ran more than once, "
              f"all after a takeover (new fence)" if not same_fence else f"{len(same_fence)} re-ran under "
              f"the same fence: {sorted(same_fence)[:5]}")
    checks.append(("agent re-runs only after a lease loss", not same_fence, detail))

    claimed: dict[tuple[str, int], float] = {}  # (session, fence) -> latest time it surely existed

    def seen_at(sid: str, fence: int, at: float | None) -> None:
        if at is not None:
            claimed[(sid, fence)] = min(at, claimed.get((sid, fence), at))

    for c in read_jsonl(workdir.glob("claims.*.jsonl")):
        seen_at(str(c["session"]), int(str(c["fence"])), float(str(c["at"])))
    for s in starts:
        seen_at(str(s["session"]), int(str(s["fence"])), float(str(s["at"])))
    late = [s for s in starts if any(sid == s["session"] and fence > int(str(s["fence"]))
                                     and at < float(str(s["at"])) for (sid, fence), at in claimed.items())]
    checks.append(("no agent start after its fence was taken over", not late,
                   f"{len(late)} late: {late[:3]}" if late else f"{len(starts)} starts, "
                   f"{len(claimed)} claimed fences checked"))

    after = 0
    windows = 0
    for slot in slots:
        for _kind, _pid, start, end in slot.silent:
            windows += 1
            after += sum(1 for a in slot.proxy.arrivals if start + GRACE_S < a.at < end)
    checks.append(("no request from a worker while killed or stopped", after == 0,
                   f"{after} requests in {windows} kill/stop windows"))

    print("invariants:")
    for name, ok, why in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}" + (f" ({why})" if why else ""))
    return all(ok for _, ok, _ in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--partition", type=float, default=30.0, help="seconds of the partition (0: none)")
    parser.add_argument("--chaos", type=int, default=8, help="kills/stops of random workers, one per 3 s")
    parser.add_argument("--timeout", type=float, default=300.0, help="end the run after this many seconds")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for key, default in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                         ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(key, default)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    ok = anyio.run(soak, args, workdir)
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"worker logs and side effects kept in {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
