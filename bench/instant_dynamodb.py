"""A stand-in DynamoDB endpoint that answers every request with a success, at once or after
a set latency.

For `client_cpu.py`: it separates the client's own work from the time a server takes,
and gives both sides of a comparison the same server (moto answers a transaction 15x
slower than a put, and a client's CPU per request grows with how long it waited). It
stores nothing; every write "succeeds" and answers its ConsumedCapacity. Run as
`python bench/instant_dynamodb.py PORT [SINGLE_MS TRANSACTION_MS]`: listens on
127.0.0.1, waits SINGLE_MS before answering a single-item request and TRANSACTION_MS
before a transaction (default 0), and, like moto's server, closes the connection after
each answer.
"""

from __future__ import annotations

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_ONE = b'{"ConsumedCapacity": {"TableName": "bench", "CapacityUnits": 1.0}}'
_MANY = b'{"ConsumedCapacity": [{"TableName": "bench", "CapacityUnits": 4.0}]}'
_LATENCY_S = {"single": 0.0, "transaction": 0.0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # the name http.server calls
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        transaction = "Transact" in self.headers.get("X-Amz-Target", "")
        latency = _LATENCY_S["transaction" if transaction else "single"]
        if latency:
            time.sleep(latency)
        body = _MANY if transaction else _ONE
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet: no line per request
        pass


if __name__ == "__main__":
    if len(sys.argv) == 4:
        _LATENCY_S.update(single=float(sys.argv[2]) / 1000, transaction=float(sys.argv[3]) / 1000)
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
