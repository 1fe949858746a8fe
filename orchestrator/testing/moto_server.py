"""A moto DynamoDB server in a subprocess that serves ONE request at a time.

moto is not atomic under concurrent requests (two conditional writes racing can both
succeed), so contention tests run against this server: werkzeug with
`threaded=False, processes=1` handles requests strictly one after another, which makes
each DynamoDB request atomic like the real service. It also shares its state between
processes, which in-process `mock_aws()` cannot.

    with moto_server() as endpoint:      # "http://127.0.0.1:PORT"
        store = open_store(f"dynamodb://t1?endpoint={endpoint}")

Run as `python -m orchestrator.testing.moto_server [--port N]`: binds 127.0.0.1 (port 0
picks a free one) and prints `PORT <n>` once listening.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from orchestrator.testing._servers import stop_server, wait_until_answers

__all__ = ["MotoServer", "moto_server", "reset_moto"]

_READY_TIMEOUT_S = 30.0


class MotoServer:
    """A started server process; `endpoint` is its URL. Stop it with `stop()`."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"

    @classmethod
    def start(cls, *, timeout_s: float = _READY_TIMEOUT_S) -> MotoServer:
        """Start the subprocess and wait (bounded) until it answers HTTP."""
        from orchestrator.testing._workers import child_env

        env = child_env()
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.testing.moto_server", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # blocks until the child printed its port or died
            if not line.startswith("PORT "):
                raise RuntimeError(
                    f"moto server did not start (exit code {proc.poll()}, said {line!r}); "
                    f"check that moto[server] is installed: pip install 'moto[server,dynamodb]'"
                )
            server = cls(proc, int(line.split()[1]))
            server.wait_ready(timeout_s)
            return server
        except BaseException:
            proc.kill()
            proc.wait(timeout=10)
            raise

    def wait_ready(self, timeout_s: float) -> None:
        """Poll the moto API until it answers, at most `timeout_s` seconds."""
        wait_until_answers(self.process, f"{self.endpoint}/moto-api/data.json", "moto server", timeout_s)

    def reset(self) -> None:
        """Drop every table and item (moto's `POST /moto-api/reset`)."""
        reset_moto(self.endpoint)

    def stop(self) -> None:
        """Terminate the process and wait for it (bounded; killed if it lingers)."""
        stop_server(self.process)


def reset_moto(endpoint: str) -> None:
    """Reset all state of the moto server at `endpoint`."""
    req = urllib.request.Request(f"{endpoint}/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


@contextlib.contextmanager
def moto_server(*, timeout_s: float = _READY_TIMEOUT_S) -> Iterator[str]:
    """A one-request-at-a-time moto server for the block; yields its endpoint URL."""
    server = MotoServer.start(timeout_s=timeout_s)
    try:
        yield server.endpoint
    finally:
        server.stop()


def _serve(port: int) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    # threaded=False, processes=1: one request at a time (and HTTP/1.0, one per connection).
    server = make_server(
        "127.0.0.1", port, app, threaded=False, processes=1, request_handler=MotoRequestHandler
    )
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto DynamoDB server, one request at a time")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    args = parser.parse_args(argv)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _serve(args.port)


if __name__ == "__main__":
    main()
