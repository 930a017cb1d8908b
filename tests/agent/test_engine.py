"""The container engine's HTTP client: real HTTP over a real unix socket."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from monitoringserver.agent.collectors.engine import EngineClient, EngineError, quote_id
from tests.agent.unix_http import Route, send_json, serve


def _chunked(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for part in (b'{"a": ', b"[1, 2", b", 3]}"):
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
    handler.wfile.write(b"0\r\n\r\n")


def _until_close(handler: BaseHTTPRequestHandler) -> None:
    # HTTP/1.0 style: no length, the body ends when the engine closes the connection.
    handler.wfile.write(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"b": 2}')
    handler.close_connection = True


def _drop_after_answer(handler: BaseHTTPRequestHandler) -> None:
    # Answers as if keeping the connection, then closes it (an idle-timeout race).
    send_json(handler, 200, {"n": len(handler.server.requests)})  # type: ignore[attr-defined]
    handler.close_connection = True


def _drop_without_answer(handler: BaseHTTPRequestHandler) -> None:
    handler.close_connection = True


def _not_json(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "5")
    handler.end_headers()
    handler.wfile.write(b"hello")


def _plain_error(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(502)
    handler.send_header("Content-Length", "16")
    handler.end_headers()
    handler.wfile.write(b"proxy is down!\r\n")


ROUTES: dict[str, Route] = {
    "/plain-error": _plain_error,
    "/json": {"ok": True},
    "/chunked": _chunked,
    "/until-close": _until_close,
    "/drop": _drop_after_answer,
    "/drop-always": _drop_without_answer,
    "/not-json": _not_json,
    "/big": ["x" * 100],
    "/teapot": (418, {"message": "short and stout"}),
    "/bare-error": (503, None),
}


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "engine.sock"


@pytest.fixture
def client(sock_path: Path) -> Iterator[EngineClient]:
    c = EngineClient(sock_path, timeout_s=5.0)
    try:
        yield c
    finally:
        c.close()


@pytest.mark.parametrize(
    ("path", "params", "expected", "target"),
    [
        ("/json", None, {"ok": True}, "/json"),
        ("/json", {"all": "true", "x": "a b"}, {"ok": True}, "/json?all=true&x=a+b"),
        ("/chunked", None, {"a": [1, 2, 3]}, "/chunked"),
        ("/until-close", None, {"b": 2}, "/until-close"),
    ],
)
def test_get_json_reads_every_body_framing(
    sock_path: Path,
    client: EngineClient,
    path: str,
    params: dict[str, str] | None,
    expected: Any,
    target: str,
) -> None:
    with serve(sock_path, ROUTES) as server:
        assert client.get_json(path, params) == expected
        assert client.get_json("/json") == {"ok": True}  # the connection is usable after
    assert server.requests == [target, "/json"]


def test_one_keepalive_connection_serves_many_requests(
    sock_path: Path, client: EngineClient
) -> None:
    with serve(sock_path, ROUTES) as server:
        for _ in range(5):
            assert client.get_json("/json") == {"ok": True}
        client.close()
        client.close()  # idempotent
        assert client.get_json("/json") == {"ok": True}  # reopens after close
    assert (client.connections, server.connections, len(server.requests)) == (2, 2, 6)


def test_engine_closing_the_connection_is_followed_by_a_fresh_one(
    sock_path: Path, client: EngineClient
) -> None:
    with serve(sock_path, ROUTES) as server:
        assert client.get_json("/until-close") == {"b": 2}
        assert client.get_json("/json") == {"ok": True}
    assert server.connections == client.connections == 2


def test_reused_connection_closed_by_the_engine_is_retried_once(
    sock_path: Path, client: EngineClient
) -> None:
    with serve(sock_path, ROUTES) as server:
        assert client.get_json("/drop") == {"n": 1}
        # The engine closed that connection behind the client's back: the next request
        # fails on it and is sent again on a new one.
        assert client.get_json("/json") == {"ok": True}
    assert client.connections == 2
    assert server.requests[0] == "/drop"
    assert server.requests[-1] == "/json"


def test_fresh_connection_closed_without_answer_is_an_error(
    sock_path: Path, client: EngineClient
) -> None:
    with serve(sock_path, ROUTES) as server:
        with pytest.raises(EngineError, match="cannot GET /drop-always: RemoteDisconnected"):
            client.get_json("/drop-always")
        assert client.get_json("/json") == {"ok": True}
    assert server.requests == ["/drop-always", "/json"]  # not retried on a fresh connection


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/teapot", 418, "cannot GET /teapot: HTTP 418 short and stout"),
        ("/nowhere", 404, "cannot GET /nowhere: HTTP 404 no such"),
        ("/bare-error", 503, "cannot GET /bare-error: HTTP 503 Service Unavailable"),
        ("/not-json", None, "cannot GET /not-json: answer is not JSON"),
        ("/plain-error", 502, "cannot GET /plain-error: HTTP 502 proxy is down!$"),
    ],
)
def test_bad_answers_raise_and_reopen(
    sock_path: Path, client: EngineClient, path: str, status: int | None, message: str
) -> None:
    with serve(sock_path, ROUTES):
        client.get_json("/json")
        with pytest.raises(EngineError, match=message) as info:
            client.get_json(path)
        assert info.value.status == status
        assert client.get_json("/json") == {"ok": True}
    assert client.connections == 2  # closed after the error, reopened


def test_body_over_the_limit_is_an_error(sock_path: Path) -> None:
    client = EngineClient(sock_path, max_body_bytes=64)
    with serve(sock_path, ROUTES):
        with pytest.raises(EngineError, match="answer exceeds 64 bytes"):
            client.get_json("/big")
        assert client.get_json("/json") == {"ok": True}
    client.close()
    assert client.connections == 2


def test_absent_socket_is_an_error(sock_path: Path, client: EngineClient) -> None:
    with pytest.raises(EngineError, match="cannot GET /json: FileNotFoundError") as info:
        client.get_json("/json")
    assert info.value.status is None
    assert client.connections == 0


def test_silent_engine_times_out(sock_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(1)
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
    thread.start()
    client = EngineClient(sock_path, timeout_s=0.2)
    try:
        with pytest.raises(EngineError, match="cannot GET /json: timed out"):
            client.get_json("/json")
    finally:
        client.close()
        thread.join(5)
        for s in accepted:
            s.close()
        listener.close()


def test_timeout_must_be_positive(sock_path: Path) -> None:
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        EngineClient(sock_path, timeout_s=0)


@pytest.mark.parametrize(("cid", "segment"), [("abc123", "abc123"), ("a/b?c", "a%2Fb%3Fc")])
def test_quote_id(cid: str, segment: str) -> None:
    assert quote_id(cid) == segment
