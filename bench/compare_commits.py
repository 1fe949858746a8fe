"""Per-task overhead of two commits, measured alternately in one run: a before/after check.

    .venv/bin/python bench/compare_commits.py BEFORE AFTER [--rounds 3] [--n 1000] [--with-dynamodb]

Each commit is checked out in a temporary detached `git worktree` (removed at exit;
AFTER may be `.`, this checkout as it is, uncommitted changes included). This checkout's
bench/overhead.py runs against each tree's package with this interpreter: the same
measuring code for both (an older script lacks the CPU columns; 7dab1d4's differed only
in importing `agents`, which is mapped to `orchestrator.agents` for a tree without that
symlink). Every `orchestrator` or `agents` module a run imported must come from its tree,
or the comparison stops. Runs alternate (A B A B ...) so machine load falls on both
alike. Per shape it prints, for wall and CPU time, the medians of ms/task and of the
ratio to bare anyio (same run), after/before of each, and the range of the per-round
after/before ratios; and the 1-minute load average seen.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve().parent / "overhead.py"
ROW = re.compile(r"^\s+(?P<shape>\S.*?)\s+(?P<ms>[\d.]+) ms/task\s+x\s*(?P<x>[\d.]+|inf) bare anyio"
                 r"\s+cpu\s+(?P<cpu_ms>[\d.]+) ms/task x\s*(?P<cpu_x>[\d.]+|inf)")
MEASURES = (("wall", "ms", "x"), ("cpu", "cpu_ms", "cpu_x"))

# Imports the tree's package before the script runs (the script puts its own checkout first
# on sys.path, too late to matter), then names where it came from and fails if any
# orchestrator/agents module was imported from outside the tree (e.g. the editable install).
BOOT = """
import os, runpy, sys
tree, script, *args = sys.argv[1:]
sys.argv = [script, *args]
sys.path.insert(0, tree)
import orchestrator
if not os.path.exists(os.path.join(tree, "orchestrator", "agents")):
    import agents  # a tree from before agents/ was installed as orchestrator.agents
    sys.modules["orchestrator.agents"] = orchestrator.agents = agents
runpy.run_path(script, run_name="__main__")
root = os.path.realpath(tree) + os.sep
mods = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())
        if n.split(".")[0] in ("orchestrator", "agents")}
print("imported:", *(f"{n}={mods[n]}" for n in ("orchestrator", "agents", "orchestrator.agents") if n in mods))
foreign = sorted(n for n, f in mods.items() if f and not os.path.realpath(f).startswith(root))
if foreign:
    sys.exit(f"modules imported from outside {tree}: {', '.join(foreign)}")
"""


@dataclass
class Side:
    """One commit under test: its tree and, per shape and measure, the value of each run."""

    label: str
    commit: str
    tree: Path
    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def shapes(self) -> list[str]:
        return list(dict.fromkeys(shape for shape, _ in self.values))


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def run_once(side: Side, args: list[str], loads: list[float], scratch: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BOOT, str(side.tree), str(SCRIPT), *args],
        # TMPDIR: the script's database files go where the exit removes them
        check=False, cwd=side.tree, env={**os.environ, "PYTHONPATH": str(side.tree), "TMPDIR": str(scratch)},
        capture_output=True, text=True, timeout=3600,
    )
    loads.append(os.getloadavg()[0])
    if proc.returncode != 0:
        sys.exit(f"{side.label} ({side.commit}) failed:\n{proc.stdout}{proc.stderr}")
    rows = [m for m in map(ROW.match, proc.stdout.splitlines()) if m]
    if not rows:
        sys.exit(f"{side.label} ({side.commit}): no rows in its output:\n{proc.stdout}")
    for m in rows:
        for key in ("ms", "x", "cpu_ms", "cpu_x"):
            side.values.setdefault((m["shape"], key), []).append(float(m[key]))
    imported = next(line for line in proc.stdout.splitlines() if line.startswith("imported:"))
    print(f"  {side.label:<6} " + "  ".join(f"{m['shape']} {m['ms']}/x{m['x']} cpu {m['cpu_ms']}/x{m['cpu_x']}"
                                            for m in rows))
    print(f"         {imported}")


def report(before: Side, after: Side, loads: list[float]) -> None:
    med = statistics.median
    runs = len(next(iter(before.values.values())))
    print(f"\nmedians over {runs} runs each; before {before.commit}, after {after.commit}; "
          "x = ratio to bare anyio on the same DAG in the same run; a/b = after/before")
    for measure, ms, x in MEASURES:
        print(f"\n{measure:<24}{'ms/task before':>15}{'after':>8}{'a/b':>7}   "
              f"{'x before':>9}{'after':>7}{'a/b':>7}   {'a/b of x per round':>18}")
        for shape in before.shapes():
            if (shape, ms) not in after.values:
                continue
            b_ms, a_ms = med(before.values[shape, ms]), med(after.values[shape, ms])
            b_x, a_x = med(before.values[shape, x]), med(after.values[shape, x])
            rounds = [a / b for a, b in zip(after.values[shape, x], before.values[shape, x], strict=False)]
            print(f"{shape:<24}{b_ms:>15.3f}{a_ms:>8.3f}{a_ms / b_ms:>7.2f}   "
                  f"{b_x:>9.1f}{a_x:>7.1f}{a_x / b_x:>7.2f}   {min(rounds):>8.2f} - {max(rounds):<7.2f}")
    print(f"\n1-minute load average after each run: {min(loads):.1f} - {max(loads):.1f} "
          f"(median {med(loads):.1f}) on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after", help="a commit, or . for this checkout as it is")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each commit, alternating")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--with-dynamodb", action="store_true", help="also the moto rows (slow)")
    opts = parser.parse_args()
    args = ["--n", str(opts.n)] + ([] if opts.with_dynamodb else ["--skip-dynamodb"])
    # A SIGTERM should still remove the worktrees (the finally below).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="orchestrator-compare-"))
    trees: list[Path] = []
    try:
        sides = []
        for label, ref in (("before", opts.before), ("after", opts.after)):
            if ref == ".":
                dirty = " + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
                sides.append(Side(label, git("rev-parse", "--short", "HEAD") + dirty, REPO))
                continue
            commit = git("rev-parse", "--short", "--verify", f"{ref}^{{commit}}")
            tree = tmp / label
            git("worktree", "add", "--detach", str(tree), commit)
            trees.append(tree)
            sides.append(Side(label, commit, tree))
        scratch = tmp / "scratch"
        scratch.mkdir()
        loads = [os.getloadavg()[0]]
        print(f"{SCRIPT.relative_to(REPO)} {' '.join(args)} on each tree's package, {opts.rounds} rounds alternating; "
              f"load {loads[0]:.1f}")
        for _ in range(opts.rounds):
            for side in sides:
                run_once(side, args, loads, scratch)
        report(sides[0], sides[1], loads)
    finally:
        for tree in trees:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def _exit_on_sigterm(_sig: int, _frame: FrameType | None) -> None:
    sys.exit(143)


if __name__ == "__main__":
    main()
