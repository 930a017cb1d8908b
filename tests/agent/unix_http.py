"""A real threaded HTTP server on a unix socket, for container-engine tests.

Routes map a path (query string ignored) to an answer: a JSON-able object (200), a
``(status, object)`` pair, or a callable that writes the whole response itself. Each
request is recorded in ``server.requests`` as the full request target; each accepted
connection is counted in ``server.connections``. Leaving :func:`serve` ends the
accepted connections too and leaves the socket file behind (nothing listens on it).
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

Route = Any | tuple[int, Any] | Callable[[BaseHTTPRequestHandler], None]


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: Path, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.requests: list[str] = []
        self.connections = 0
        self._open: list[socket.socket] = []
        super().__init__(str(path), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        self._open.append(request)
        super().process_request(request, client_address)

    def drop_connections(self) -> None:
        """End every accepted connection, as an engine that stops does."""
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless a route says otherwise
    server: UnixHTTPServer

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        route = self.server.routes.get(self.path.split("?", 1)[0], (404, {"message": "no such"}))
        if callable(route):
            route(self)
            return
        status, doc = route if isinstance(route, tuple) else (200, route)
        send_json(self, status, doc)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        return


def send_json(handler: BaseHTTPRequestHandler, status: int, doc: Any) -> None:
    body = json.dumps(doc).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def serve(path: Path, routes: dict[str, Route]) -> Iterator[UnixHTTPServer]:
    """Serve ``routes`` on ``path`` until the block ends; stops and joins the thread."""
    server = UnixHTTPServer(path, routes)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.drop_connections()
        server.server_close()
        thread.join(5)
