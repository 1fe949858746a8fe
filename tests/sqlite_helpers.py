"""Real-world conditions for a SQLite store file: another process holding its write lock,
and a user who may read the file but not write it (nor its directory)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


@contextmanager
def lock_held_by_another_process(path: Path, *, paused: bool = False) -> Iterator[Callable[[], None]]:
    """A second process holds the write lock until the returned function is called.

    `paused`: the holder is stopped (SIGSTOP) while it holds the lock, as a debugger or a
    frozen VM would stop it; releasing continues it (SIGCONT) first.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin

    def release() -> None:
        if paused:
            proc.send_signal(signal.SIGCONT)
        if not stdin.closed:
            stdin.write("\n")
            stdin.close()

    try:
        assert proc.stdout.readline().strip() == "locked"
        if paused:
            proc.send_signal(signal.SIGSTOP)
        yield release
    finally:
        release()
        proc.wait(timeout=10)
        proc.stdout.close()


#: Capabilities that let root ignore file modes; dropped so that root meets 0444 as others do.
_DAC_CAPS = "-dac_override,-dac_read_search,-fowner"


def without_write_access() -> list[str]:
    """Argv prefix that runs a command unable to write files whose mode forbids it.

    As a normal user, file modes already apply: nothing to add. As root (CI containers),
    `setpriv` drops the capabilities that bypass them, keeping uid 0 so the interpreter
    stays readable.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): cannot take away write access")
    return [setpriv, f"--inh-caps={_DAC_CAPS}", f"--bounding-set={_DAC_CAPS}"]


@contextmanager
def made_read_only(path: Path) -> Iterator[None]:
    """The store file 0444 and its directory 0555 for the block (restored after, so tmp_path cleans up)."""
    folder = path.parent
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (path, folder)}
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        yield
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
