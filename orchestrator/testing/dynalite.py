"""dynalite, an independent DynamoDB implementation (Node.js), in a subprocess.

The test matrix runs against it because it is not moto: it serves requests
concurrently (item writes are atomic under per-key locks), enforces DynamoDB's real
limits (400 KB items, 25 writes per BatchWriteItem) and answers with its own error
codes. It has no transactions, no UpdateTimeToLive and no point-in-time recovery: open
stores on it with `transactions=0` (`initialize()` logs the missing TTL and PITR as
warnings). Its default in-memory backend is used: state lives as long as the process.

    with dynalite_server(module) as endpoint:      # "http://127.0.0.1:PORT"
        store = open_store(f"dynamodb://t1?region=us-east-1&endpoint={endpoint}&transactions=0")

`module` is the installed npm package's folder (`.../node_modules/dynalite`); this
repository's `make test` installs it into `tests/dynalite` with `npm ci`. Node.js must
be on PATH (or pass `node=`). The server binds 127.0.0.1 on a port the OS picks
(dynalite's own CLI cannot: it treats `--port 0` as its default 4567), and exits when
its parent does (it watches its stdin pipe), so a killed test run leaves no server.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from orchestrator.testing._servers import stop_server, wait_until_answers

__all__ = ["DynaliteServer", "dynalite_server"]

_READY_TIMEOUT_S = 30.0

# process.argv[1] is the package folder, [2] how long a new table stays CREATING.
_SERVE_JS = """
const dynalite = require(process.argv[1]);
const server = dynalite({createTableMs: +process.argv[2], deleteTableMs: 0, updateTableMs: 0});
server.listen(0, '127.0.0.1', () => console.log('PORT ' + server.address().port));
// Each way out says which it was, for DynaliteServer.exit_report().
process.on('SIGTERM', () => { console.error('dynalite: stopped by SIGTERM'); process.exit(0); });
process.stdin.on('end', () => { console.error('dynalite: its stdin was closed (its parent exited or closed the pipe)'); process.exit(0); });
process.stdin.resume();
"""


class DynaliteServer:
    """A started dynalite process; `endpoint` is its URL. Stop it with `stop()`."""

    def __init__(self, process: subprocess.Popen[str], port: int, stderr: IO[str]) -> None:
        self.process = process
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self._stderr = stderr

    def exit_report(self) -> str | None:
        """None while the server runs; once it has exited, its exit code and the end of its stderr.

        A server shared by a whole test session that dies mid-run otherwise leaves only
        "connection refused" in the next test that uses it.
        """
        if self.process.poll() is None:
            return None
        self._stderr.seek(0)
        return f"dynalite exited with code {self.process.returncode}: {self._stderr.read().strip()[-4000:]!r}"

    @classmethod
    def start(cls, module: Path, *, node: str | None = None, create_table_ms: int = 0,
              timeout_s: float = _READY_TIMEOUT_S) -> DynaliteServer:
        """Start dynalite from the package folder `module` and wait (bounded) until it answers.

        `create_table_ms` is how long a new table stays CREATING (dynalite's default is
        500 ms; 0 spares every test the store's one-second poll for ACTIVE).
        """
        if not (module / "package.json").is_file():
            raise RuntimeError(f"dynalite is not installed at {module}; install it with "
                               f"`npm ci --prefix {module.parents[1]}` (this repository: `make test`)")
        executable = node or shutil.which("node")
        if executable is None:
            raise RuntimeError("Node.js (`node`) is not on PATH; install Node.js 18+ to run dynalite")
        # stderr to a file, not a pipe nobody drains while the server runs; kept for exit_report().
        err = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(
            [executable, "-e", _SERVE_JS, str(module.resolve()), str(create_table_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the child printed its port or died
        try:
            if not line.startswith("PORT "):
                proc.kill()
                proc.wait(timeout=10)
                err.seek(0)
                raise RuntimeError(f"dynalite did not start (exit code {proc.returncode}, said {line!r}): "
                                   f"{err.read().strip()[-2000:]}")
            server = cls(proc, int(line.split()[1]), err)
            server.wait_ready(timeout_s)
            return server
        except BaseException:
            proc.kill()
            proc.wait(timeout=10)
            err.close()
            raise

    def wait_ready(self, timeout_s: float) -> None:
        """Poll dynalite's health answer (`GET /`) until it comes, at most `timeout_s` seconds."""
        wait_until_answers(self.process, f"{self.endpoint}/", "dynalite", timeout_s)

    def stop(self) -> None:
        """Terminate the process and wait for it (bounded; killed if it lingers)."""
        stop_server(self.process)
        self._stderr.close()


@contextlib.contextmanager
def dynalite_server(module: Path, *, node: str | None = None, create_table_ms: int = 0,
                    timeout_s: float = _READY_TIMEOUT_S) -> Iterator[str]:
    """A dynalite server for the block; yields its endpoint URL."""
    server = DynaliteServer.start(module, node=node, create_table_ms=create_table_ms, timeout_s=timeout_s)
    try:
        yield server.endpoint
    finally:
        server.stop()
