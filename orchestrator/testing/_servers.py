"""What the local test servers (moto, dynalite) share: wait until one answers, stop it."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["stop_server", "wait_until_answers"]


def wait_until_answers(process: subprocess.Popen[str], url: str, what: str, timeout_s: float) -> None:
    """Poll `url` until it answers 200, at most `timeout_s` seconds (real time: a real process)."""
    deadline = time.monotonic() + timeout_s  # a real child process: real time
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{what} at {url} not ready after {timeout_s}s: {last}")


def stop_server(process: subprocess.Popen[Any]) -> None:
    """Terminate and wait (bounded; killed if it lingers); close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
