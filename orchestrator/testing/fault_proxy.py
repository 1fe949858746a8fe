"""A fault-injecting HTTP proxy for DynamoDB: faults on the wire, not patched into the SDK.

It listens on 127.0.0.1 (a free port) and forwards each request to a DynamoDB
endpoint (a moto server), injecting faults at configured rates drawn from a seeded
`random.Random`:

- throttling: a 400 with DynamoDB's JSON body (`ProvisionedThroughputExceededException`
  or `ThrottlingException`), not forwarded;
- a 5xx with DynamoDB's JSON body (`InternalServerError`), with an HTML body (a load
  balancer's 503 page), or with an empty body (502/503/504 from a gateway), not forwarded;
- a lost response: the request is forwarded (it lands), then the connection is closed
  without an answer;
- `hold()`: a partition. Requests wait before being forwarded until `release()` (or
  `stop()`), as packets would queue behind a broken link.

`respond(op, status, body)` answers one operation with a fixed response instead (e.g.
`TransactWriteItems` with a 400 `UnknownOperationException`, a store without them).
It counts requests seen, forwarded and faults injected (`injected`, by kind) and, with
`record_arrivals=True`, the time each request arrived on the injected clock, so a test
can assert that no request arrived after a lease deadline.

    with FaultProxy(moto_endpoint, Faults(throttle=0.2), seed=7) as proxy:
        store = open_store(f"dynamodb://t1?endpoint={proxy.endpoint}")
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
from collections import Counter
from dataclasses import astuple, dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import ConfigError

__all__ = ["Arrival", "FaultProxy", "Faults"]

#: Hop-by-hop headers a proxy must not pass on (RFC 9110 §7.6.1), and the length we set.
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                  "upgrade", "content-length"})
_HOLD_POLL_S = 0.05
_IDLE_S = 30.0  # an idle keep-alive connection's thread ends after this
_JSON = "application/x-amz-json-1.0"
#: A load balancer's page, and a CDN's (botocore parses the first as a generic error, the second as bad JSON).
_HTML = (b"<html><body><h1>503 Service Unavailable</h1>No server is available to handle this request.</body></html>",
         (b"<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01 Transitional//EN\">\n<html><head><title>503 Service "
          b"Unavailable</title></head><body>The request could not be satisfied.</body></html>"))


@dataclass(frozen=True, slots=True)
class Faults:
    """Rates (0..1, summing to at most 1) of each fault; `ops` limits them to some operations,
    `limit` to that many faults in all (counted in `FaultProxy.injected`)."""

    throttle: float = 0.0
    error_json: float = 0.0
    error_html: float = 0.0
    error_empty: float = 0.0
    lost: float = 0.0
    ops: frozenset[str] | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        rates = self.rates()
        bad = {k: v for k, v in rates.items() if not 0.0 <= v <= 1.0}
        if bad or sum(rates.values()) > 1.0:
            raise ConfigError(f"fault rates {rates} must each be in 0..1 and sum to at most 1")

    def rates(self) -> dict[str, float]:
        return {f.name: v for f, v in zip(fields(self), astuple(self), strict=True) if f.name not in ("ops", "limit")}


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request: when it arrived (`clock.monotonic()`), its operation, and the fault drawn."""

    at: float
    op: str
    fault: str | None


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    content_type: str


class FaultProxy:
    """The proxy; see the module docstring. `start()`/`stop()`, or use it as a context manager."""

    def __init__(self, upstream: str, faults: Faults | None = None, *, seed: int = 0, clock: Clock | None = None,
                 record_arrivals: bool = False, upstream_timeout_s: float = 30.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"FaultProxy forwards to http://HOST:PORT, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.faults = faults or Faults()
        self.clock: Clock = clock or SystemClock()
        self.record_arrivals = record_arrivals
        self.upstream_timeout_s = upstream_timeout_s
        self.seen = 0
        self.forwarded = 0
        self.injected: Counter[str] = Counter()
        self.arrivals: list[Arrival] = []
        self._answers: dict[str, _Answer] = {}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self._stopping = threading.Event()
        self._held = 0
        self._sockets: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("FaultProxy is not started; call start() or use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release held requests, stop listening, close open connections."""
        self._stopping.set()
        self._open.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def hold(self) -> None:
        """Partition: hold every request from now on until `release()`."""
        self._open.clear()

    def release(self) -> None:
        """End the partition: held requests are forwarded now."""
        self._open.set()

    @property
    def held(self) -> int:
        """Requests waiting behind `hold()` right now."""
        return self._held

    def respond(self, op: str, status: int, body: dict[str, str] | bytes,
                content_type: str = _JSON) -> None:
        """Answer every `op` request with this response (a dict is sent as JSON); never forwarded."""
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        self._answers[op] = _Answer(status, raw, content_type)

    # -- per request (handler threads) ----------------------------------------------------------

    def _arrive(self, op: str) -> tuple[str | None, _Answer | None]:
        with self._lock:
            self.seen += 1
            fault = self._draw(op)
            answer = self._answers.get(op)
            if answer is not None:
                fault = "answered"
            elif fault is not None:
                answer = self._fault_answer(fault)
            if fault is not None:
                self.injected[fault] += 1
            if self.record_arrivals:
                self.arrivals.append(Arrival(self.clock.monotonic(), op, fault))
            return fault, answer

    def _draw(self, op: str) -> str | None:
        faults = self.faults
        if faults.ops is not None and op not in faults.ops:
            return None
        if faults.limit is not None and sum(self.injected.values()) >= faults.limit:
            return None
        r = self._rng.random()
        for kind, rate in faults.rates().items():
            if r < rate:
                return kind
            r -= rate
        return None

    def _fault_answer(self, fault: str) -> _Answer | None:
        if fault == "throttle":
            code = self._rng.choice(["ProvisionedThroughputExceededException", "ThrottlingException"])
            return _Answer(400, _error_body(code, "Rate of requests exceeds the allowed throughput."), _JSON)
        if fault == "error_json":
            return _Answer(500, _error_body("InternalServerError", "Internal server error"), _JSON)
        if fault == "error_html":
            return _Answer(503, self._rng.choice(_HTML), "text/html")
        if fault == "error_empty":
            return _Answer(self._rng.choice([502, 503, 504]), b"", "text/plain")
        return None  # lost: forwarded, then the answer is dropped

    def _wait_open(self) -> bool:
        """Wait while held; False if the proxy stops meanwhile."""
        with self._lock:
            self._held += 1
        try:
            while not self._open.wait(_HOLD_POLL_S):
                pass
            return not self._stopping.is_set()
        finally:
            with self._lock:
                self._held -= 1

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]],
                 body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=self.upstream_timeout_s)
        try:
            conn.request(method, path, body, dict(headers))
            resp = conn.getresponse()
            data = resp.read()
            with self._lock:
                self.forwarded += 1
            return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP], data
        finally:
            conn.close()


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}).encode()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects
        timeout = _IDLE_S
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

        def setup(self) -> None:
            super().setup()
            with proxy._lock:
                proxy._sockets.add(self.connection)

        def finish(self) -> None:
            with proxy._lock:
                proxy._sockets.discard(self.connection)
            super().finish()

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: a test reads the counters, not a log

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            op = (self.headers.get("X-Amz-Target") or "").rpartition(".")[2] or "-"
            fault, answer = proxy._arrive(op)
            if answer is not None:
                self._reply(answer.status, [("Content-Type", answer.content_type)], answer.body)
                return
            if not proxy._wait_open():
                self.close_connection = True
                return
            headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP]
            try:
                status, reply_headers, data = proxy._forward(self.command, self.path, headers, body)
            except OSError:
                self.close_connection = True  # upstream gone: the client sees a reset
                return
            if fault == "lost":
                self.close_connection = True  # it landed; the answer never comes
                return
            self._reply(status, reply_headers, data)

        do_GET = do_POST

        def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            try:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ("server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client went away (killed, timed out): nobody to answer
                self.close_connection = True

    return Handler
