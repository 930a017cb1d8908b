"""A small blocking HTTP/1.1 client for a container engine's REST API on a unix socket.

The standard library's :mod:`http.client` over an ``AF_UNIX`` socket, not httpx: the
engine's socket speaks plain HTTP, and httpx would load OpenSSL (``ssl``, about 4 MiB
of RSS) plus httpcore and anyio (about 5 MiB) into a node agent whose whole budget is
40 MiB; :mod:`http.client` costs about 0.5 MiB and runs without ``ssl``.

Contract: one keep-alive connection, reused across requests and collection cycles and
reopened after any error; every response is read fully (``Content-Length``, chunked,
or until close), up to ``max_body_bytes``; a non-2xx status, a transport error (refused,
reset, timeout) or a body that is not JSON raises :class:`EngineError`. Each socket
operation (connect, send, every receive) has ``timeout_s`` seconds. A request on a
reused connection that the engine had already closed (idle keep-alive timeout) is
retried once on a fresh connection; GET is idempotent. Blocking: call it from a worker
thread (the agent runs collectors in one), one thread at a time.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["EngineClient", "EngineError", "UnixHTTPConnection", "quote_id"]

#: A list of 100 containers is about 100 KiB and one container's stats a few KiB.
MAX_BODY_BYTES = 32 << 20


class EngineError(Exception):
    """A request to the engine failed. ``status`` is the HTTP status of a non-2xx
    answer, or None when no usable answer arrived (transport error, bad body)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UnixHTTPConnection(http.client.HTTPConnection):
    """:class:`http.client.HTTPConnection` whose transport is a unix stream socket.

    ``timeout_s`` applies to connecting and to every later send and receive.
    The ``Host`` header names ``localhost``, which Docker and Podman accept.
    """

    def __init__(self, path: str | Path, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class EngineClient:
    """GET JSON from the engine at ``socket_path``; see the module docstring.

    ``connections`` counts the connections opened (tests and the bench read it).
    Call :meth:`close` when done; a later request opens a new connection.
    """

    def __init__(
        self,
        socket_path: str | Path,
        *,
        timeout_s: float = 5.0,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.socket_path = str(socket_path)
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self.connections = 0
        self._conn: UnixHTTPConnection | None = None

    def close(self) -> None:
        """Close the connection, if any (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """``GET path?params`` and return the decoded JSON body.

        Raises :class:`EngineError` (``cannot GET <path>: <cause>``); the connection is
        closed first, so the next call starts on a fresh one.
        """
        target = path + ("?" + urlencode(params) if params else "")
        try:
            status, reason, body = self._exchange(target)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            cause = "timed out" if isinstance(exc, TimeoutError) else _describe(exc)
            raise EngineError(f"cannot GET {path}: {cause}") from exc
        except EngineError:
            self.close()
            raise
        if not 200 <= status < 300:
            self.close()
            detail = _engine_message(body) or reason
            raise EngineError(f"cannot GET {path}: HTTP {status} {detail}".rstrip(), status)
        try:
            return json.loads(body)
        except ValueError as exc:  # also UnicodeDecodeError
            self.close()
            raise EngineError(f"cannot GET {path}: answer is not JSON: {exc}") from exc

    def _exchange(self, target: str) -> tuple[int, str, bytes]:
        """One request and its whole response; one retry when a reused connection
        turns out to have been closed by the engine before it answered."""
        conn, fresh = self._connection()
        try:
            return self._roundtrip(conn, target)
        except (BrokenPipeError, ConnectionResetError):  # RemoteDisconnected included
            if fresh:
                raise
        self.close()
        return self._roundtrip(self._connection()[0], target)

    def _connection(self) -> tuple[UnixHTTPConnection, bool]:
        """The connection, and whether it was opened just now."""
        if self._conn is None:
            self._conn = UnixHTTPConnection(self.socket_path, self.timeout_s)
        if self._conn.sock is not None:
            return self._conn, False
        # Connect here rather than inside request(), so the count is exact both for
        # new connections and for http.client reopening one that the engine ended
        # with "Connection: close".
        self._conn.connect()
        self.connections += 1
        return self._conn, True

    def _roundtrip(self, conn: UnixHTTPConnection, target: str) -> tuple[int, str, bytes]:
        conn.request("GET", target, headers=_HEADERS)
        resp = conn.getresponse()
        body = resp.read(self.max_body_bytes + 1)
        if len(body) <= self.max_body_bytes and not resp.isclosed():
            # A body delimited by the end of the connection: the read that sees the
            # end marks the response complete.
            body += resp.read(1)
        if len(body) > self.max_body_bytes or not resp.isclosed():
            resp.close()
            raise EngineError(
                f"cannot GET {target.split('?', 1)[0]}: answer exceeds {self.max_body_bytes} bytes"
            )
        return resp.status, resp.reason, body


def quote_id(container_id: str) -> str:
    """``container_id`` as one URL path segment."""
    return quote(container_id, safe="")


_HEADERS = {"Accept": "application/json", "User-Agent": "monitoringserver-node-agent"}


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _engine_message(body: bytes) -> str:
    """The ``message`` of a Docker/Podman error body, else a short prefix of the body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return str(doc["message"])[:200]
    return ""
