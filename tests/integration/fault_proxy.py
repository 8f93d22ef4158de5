"""Proxies that fail on demand, in front of a real local server.

``FaultProxy`` speaks HTTP (in front of S3): ``503`` (S3's ``SlowDown``), ``500``
(``InternalError``) or ``reset`` (the TCP connection is closed with RST before any
response). ``fail_next(n)`` fails the next ``n`` requests; ``fail_every(k)`` fails every
k-th request until ``clear()`` (with ``retries_pass``, never the same request twice in a
row: each fault costs one retry, none exhausts the client's). ``delay_ms`` holds every
request that long before it is forwarded, as a cloud region's round trip would (10-30 ms); ``requests`` and ``by_method``
count what went through, for requests-per-file figures. ``TcpFaultProxy`` relays raw TCP (Snowflake, the Prefect
API with its websockets) and resets every connection during an outage.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Fault = Literal["503", "500", "reset"]
_BODY = {
    "503": b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
    "500": b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>",
}


class FaultProxy:
    """Forward every request to ``upstream`` (host, port) unless a fault is due."""

    def __init__(self, upstream: tuple[str, int], *, delay_ms: float = 0.0) -> None:
        self.upstream = upstream
        self.delay_ms = delay_ms
        self.lock = threading.Lock()
        self.requests = 0
        self.by_method: dict[str, int] = {}
        self.faults = 0
        self._next = 0
        self._every = 0
        self._retries_pass = False
        self._failed: set[tuple[str, str]] = set()  # requests whose last attempt was failed
        self.mode: Fault = "503"
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._due(self.command, self.path)
                if proxy.delay_ms:  # each connection has a thread: requests in flight wait side by side
                    time.sleep(proxy.delay_ms / 1000)
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
                conn = self.upstream_connection()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "transfer-encoding")}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                except (http.client.RemoteDisconnected, ConnectionError):  # the kept connection went stale
                    conn = self.upstream_connection(renew=True)
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
                if resp.will_close:
                    self.upstream_connection(renew=True)

            def upstream_connection(self, *, renew: bool = False) -> http.client.HTTPConnection:
                """This client connection's own keep-alive connection upstream."""
                conn = getattr(self, "_upstream", None)
                if conn is None or renew:
                    if conn is not None:
                        conn.close()
                    conn = self._upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                return conn

            def finish(self) -> None:
                super().finish()
                if getattr(self, "_upstream", None) is not None:
                    self._upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _due(self, method: str, path: str) -> Fault | None:
        with self.lock:
            self.requests += 1
            self.by_method[method] = self.by_method.get(method, 0) + 1
            due = self._next > 0 or (self._every and self.requests % self._every == 0)
            if self._next > 0:
                self._next -= 1
            if self._retries_pass:
                if (method, path) in self._failed:
                    self._failed.discard((method, path))
                    due = False
                elif due:
                    self._failed.add((method, path))
            if due:
                self.faults += 1
                return self.mode
            return None

    def fail_next(self, n: int, mode: Fault = "503") -> None:
        with self.lock:
            self._next, self.mode = n, mode

    def fail_every(self, k: int, mode: Fault = "503", *, retries_pass: bool = False) -> None:
        with self.lock:
            self._every, self.mode, self._retries_pass = k, mode, retries_pass

    def clear(self) -> None:
        with self.lock:
            self._next = self._every = 0
            self._retries_pass, self._failed = False, set()

    def reset_counts(self) -> None:
        with self.lock:
            self.requests, self.faults, self.by_method = 0, 0, {}

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class TcpFaultProxy:
    """Relay TCP connections to ``upstream`` (host, port) byte for byte; reset them all during an outage.

    Below HTTP, so it carries anything (HTTP keep-alive, websockets). ``outage(seconds)``
    resets every open connection with RST and every connection made until the outage
    ends; ``after_bytes`` delays its start until that many more bytes went upstream
    (mid-conversation, not before it). ``down()`` is an outage with no end.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.lock = threading.Lock()
        self.sent = 0  # bytes client -> upstream
        self.resets = 0  # connections reset
        self._pending: tuple[int, float] | None = None  # (start at sent bytes, seconds)
        self._until = 0.0
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def outage(self, seconds: float, *, after_bytes: int = 0) -> None:
        with self.lock:
            if after_bytes:
                self._pending = (self.sent + after_bytes, seconds)
                return
        self._start(seconds)

    def down(self) -> None:
        self.outage(float("inf"))

    def clear(self) -> None:
        with self.lock:
            self._until, self._pending = 0.0, None

    @property
    def is_down(self) -> bool:
        return time.monotonic() < self._until

    def _start(self, seconds: float) -> None:
        with self.lock:
            self._until = time.monotonic() + seconds
            self._pending = None
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            self._reset(*pair)

    def _reset(self, *socks: socket.socket) -> None:
        with self.lock:
            self.resets += 1
        for sock in socks:
            _close(sock, reset=True)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_down:
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                self._reset(client)
                continue
            pair = (client, upstream)
            with self.lock:
                self._pairs.add(pair)
            threading.Thread(target=self._pump, args=(client, upstream, pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, pair, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair: tuple, upward: bool) -> None:
        try:
            while data := src.recv(65536):
                start = None
                if upward:
                    with self.lock:
                        self.sent += len(data)
                        if self._pending and self.sent >= self._pending[0]:
                            start = self._pending[1]
                if start is not None:
                    self._start(start)  # this connection is reset with the others: the data never arrives
                    return
                dst.sendall(data)
        except OSError:
            pass
        with self.lock:
            live = pair in self._pairs
            self._pairs.discard(pair)
        if live:  # one side closed normally: close the other
            for sock in pair:
                _close(sock)

    def __enter__(self) -> TcpFaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self.clear()
        self.listener.close()
        with self.lock:
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            for sock in pair:
                _close(sock)


def _close(sock: socket.socket, *, reset: bool = False) -> None:
    """Close a socket, waking a thread blocked on it; ``reset`` sends RST instead of FIN."""
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # SHUT_RD wakes a blocked recv() and sends nothing, so close() answers with RST alone
        sock.shutdown(socket.SHUT_RD if reset else socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
