"""A small HTTP proxy in front of an S3 endpoint that fails requests on demand.

Faults: ``503`` (S3's ``SlowDown``), ``500`` (``InternalError``) or ``reset`` (the TCP
connection is closed with RST before any response). ``fail_next(n)`` fails the next
``n`` requests; ``fail_every(k)`` fails every k-th request until ``clear()``.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Fault = Literal["503", "500", "reset"]
_BODY = {
    "503": b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
    "500": b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>",
}


class FaultProxy:
    """Forward every request to ``upstream`` (host, port) unless a fault is due."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.lock = threading.Lock()
        self.requests = 0
        self.faults = 0
        self._next = 0
        self._every = 0
        self.mode: Fault = "503"
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._due()
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault:
                    payload = _BODY[fault]
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "transfer-encoding")}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _due(self) -> Fault | None:
        with self.lock:
            self.requests += 1
            due = self._next > 0 or (self._every and self.requests % self._every == 0)
            if self._next > 0:
                self._next -= 1
            if due:
                self.faults += 1
                return self.mode
            return None

    def fail_next(self, n: int, mode: Fault = "503") -> None:
        with self.lock:
            self._next, self.mode = n, mode

    def fail_every(self, k: int, mode: Fault = "503") -> None:
        with self.lock:
            self._every, self.mode = k, mode

    def clear(self) -> None:
        with self.lock:
            self._next = self._every = 0

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
