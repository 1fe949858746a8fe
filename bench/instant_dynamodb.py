"""A stand-in DynamoDB endpoint that answers every request at once with a success.

For `dynamodb_cost.py`: it separates the client's own work from the time a server takes.
It stores nothing; every write "succeeds" and answers its ConsumedCapacity. Run as
`python bench/instant_dynamodb.py PORT` (listens on 127.0.0.1; like moto's server, it
closes the connection after each answer).
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_ONE = b'{"ConsumedCapacity": {"TableName": "bench", "CapacityUnits": 1.0}}'
_MANY = b'{"ConsumedCapacity": [{"TableName": "bench", "CapacityUnits": 4.0}]}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # the name http.server calls
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = _MANY if "Transact" in self.headers.get("X-Amz-Target", "") else _ONE
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet: no line per request
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
