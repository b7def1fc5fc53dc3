"""A tiny threaded HTTP(S) server on 127.0.0.1 that the stand-ins build on.

STAND-IN: no GCP/Azure server can run here; this speaks the documented REST API so
the official client library is exercised; it is not the real service. (This module is
the plumbing the two stand-ins share.)
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """Answer the next ``count`` matching requests with ``status`` and ``body`` instead
    of serving them (``match`` is a regex on "METHOD /path"). With ``apply`` the
    request is served first and only its answer is lost: a write whose outcome the
    client cannot know."""

    status: int
    body: Any = None
    count: int = 1
    match: str = ".*"
    headers: dict[str, str] = field(default_factory=dict)
    apply: bool = False


class LoopbackServer:
    """Serves ``handle(request) -> Response`` on 127.0.0.1 and a free port, one thread
    per connection, over TLS when given a certificate."""

    def __init__(self, *, certfile: str | None = None, keyfile: str | None = None) -> None:
        self._certfile = certfile
        self._keyfile = keyfile
        self._faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._conns: set[Any] = set()
        self._conns_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------
    @property
    def url(self) -> str:
        scheme = "https" if self._certfile else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        handler = _handler_for(self)
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        httpd.daemon_threads = True
        if self._certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self._certfile, self._keyfile)
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving (the port is kept, so ``start()`` brings it back on the same
        URL). Connections are refused meanwhile: an outage."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        # Kept-alive connections would go on being served by their threads.
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- faults -----------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        with self._faults_lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._faults_lock:
            self._faults.clear()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._faults_lock:
            for f in self._faults:
                if f.count > 0 and re.search(f.match, f"{method} {path}"):
                    f.count -= 1
                    return f
        return None

    # -- to override ------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def error(self, status: int, message: str) -> Response:
        raise NotImplementedError


def _handler_for(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; without this, Nagle's algorithm
        # and delayed ACKs add 40 ms to every answer.
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            with server._conns_lock:
                server._conns.add(self.connection)

        def finish(self) -> None:
            with server._conns_lock:
                server._conns.discard(self.connection)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            req = Request(self.command, parts.path, query,
                          {k.lower(): v for k, v in self.headers.items()}, body)
            server.requests.append((req.method, req.path))
            fault = server._fault_for(req.method, req.path)
            if fault is not None:
                if fault.apply:
                    server.handle(req)
                resp = Response(fault.status, fault.body, dict(fault.headers))
                if resp.body is None:
                    resp = server.error(fault.status, "injected fault")
                    resp.headers.update(fault.headers)
            else:
                try:
                    resp = server.handle(req)
                except Exception as exc:  # a stand-in bug shows up as a 500 with its text
                    resp = server.error(500, f"stand-in error: {exc!r}")
            payload = b"" if resp.body is None else json.dumps(resp.body).encode()
            self.send_response(resp.status)
            for k, v in resp.headers.items():
                self.send_header(k, v)
            if payload:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler
