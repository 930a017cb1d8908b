"""The one exception → HTTP map, and request-body limits.

Every router raises :mod:`monitoringserver.errors` exceptions; this module turns them into
``{"status": "error", "errorType": ..., "error": "cannot ..."}`` with the right status code
(and ``Retry-After`` on 429/503, ``WWW-Authenticate`` on 401). FastAPI validation errors,
unknown routes and wrong methods get the same shape. Anything unexpected becomes a 500
with a generic message; the traceback goes to the log, never to the client.

:class:`BodyLimitMiddleware` enforces the request-body limit while the body streams in and
transparently decompresses ``Content-Encoding: gzip`` bodies under a second limit.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitoringserver.errors import (
    AuthError,
    BadDataError,
    CanceledError,
    CardinalityLimitError,
    ExecutionError,
    ForbiddenError,
    MonitoringError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    QueryTimeoutError,
    UnavailableError,
)

__all__ = [
    "BodyLimitMiddleware",
    "CatchAllMiddleware",
    "body_headers",
    "error_response",
    "install_error_handlers",
    "limited_receive",
    "log_after_start",
    "response_for",
    "status_for",
    "too_large",
    "unhandled_response",
]

_log = logging.getLogger("monitoringserver.web")

_GENERIC_500 = "cannot handle request: internal error (see the server log)"


def status_for(exc: MonitoringError) -> int:
    """The HTTP status code of a project exception (the single source of truth)."""
    if isinstance(exc, PayloadTooLargeError):
        return 413
    if isinstance(exc, BadDataError):
        return 400
    if isinstance(exc, AuthError):
        return 401
    if isinstance(exc, ForbiddenError):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, CardinalityLimitError | OverloadedError):
        return 429
    if isinstance(exc, UnavailableError | QueryTimeoutError | CanceledError):
        return 503
    if isinstance(exc, ExecutionError):
        return 422
    return 500


def _retry_after(exc: MonitoringError) -> float | None:
    value = getattr(exc, "retry_after_s", None)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(exc, QueryTimeoutError | CanceledError):
        return 1.0
    return None


def error_response(
    status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"status": "error", "errorType": error_type, "error": message}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def response_for(exc: MonitoringError) -> JSONResponse:
    """Render ``exc``; 500s hide their message (it may carry internals) and are logged."""
    status = status_for(exc)
    headers: dict[str, str] = {}
    if status == 500:
        _log.error("request failed: %s", exc, exc_info=exc)
        return error_response(500, "internal", _GENERIC_500)
    retry = _retry_after(exc)
    if retry is not None and status in (429, 503):
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="monitoringserver"'
    return error_response(status, exc.error_type, str(exc), headers)


async def _monitoring_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MonitoringError)
    return response_for(exc)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return error_response(400, "bad_data", "cannot parse request: " + "; ".join(parts))


_HTTP_TYPES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    cause = exc.__cause__
    if isinstance(cause, MonitoringError):
        # FastAPI wraps errors raised while reading a body (e.g. the size limit) in a 400.
        return response_for(cause)
    status = exc.status_code
    if status == 404:
        message = "cannot find route: no such endpoint"
    elif status == 405:
        message = "cannot handle request: method not allowed on this endpoint"
    else:
        message = f"cannot handle request: {exc.detail}"
    error_type = _HTTP_TYPES.get(status, "bad_data" if status < 500 else "internal")
    return error_response(status, error_type, message, exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app`` (and the catch-all middleware for 500s)."""
    app.add_exception_handler(MonitoringError, _monitoring_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


def unhandled_response(exc: Exception, scope: Scope) -> Response:
    """The answer to ``exc``, which nothing handled while serving ``scope`` before its
    response started: its rendering (:func:`response_for`) for a project error, else a
    generic 500 (the traceback goes to the log)."""
    if isinstance(exc, MonitoringError):
        return response_for(exc)
    _log.error("unhandled error on %s", scope.get("path"), exc_info=exc)
    return error_response(500, "internal", _GENERIC_500)


def log_after_start(exc: Exception, scope: Scope) -> None:
    """Log ``exc``, raised while serving ``scope`` after its response started (too late
    to answer anything else)."""
    if isinstance(exc, MonitoringError):
        _log.warning("error after the response started: %s", exc)
    else:
        _log.error("unhandled error on %s", scope.get("path"), exc_info=exc)


class CatchAllMiddleware:
    """Turns exceptions nobody handled into a generic 500 without re-raising.

    Starlette's own server-error middleware re-raises after responding, which makes the
    ASGI server print the traceback a second time; this one logs once and stops there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 (the last line of defence: log, answer 500)
            if started:
                log_after_start(exc, scope)
            else:
                await unhandled_response(exc, scope)(scope, receive, send)


_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto")


def body_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int | None, bytes, bool]:
    """``(Content-Length, Content-Encoding, any X-Forwarded-For/-Proto)`` of raw ASGI
    request headers, in one pass: the length is ``None`` when absent or not a number,
    the encoding lowercased (``b""`` when absent)."""
    length: int | None = None
    encoding = b""
    forwarded = False
    for key, value in headers:
        if key == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif key == b"content-encoding":
            encoding = value.strip().lower()
        elif key in _FORWARDED:
            forwarded = True
    return length, encoding, forwarded


def too_large(length: int, limit: int) -> PayloadTooLargeError:
    """The error for a declared ``Content-Length`` over ``limit`` (bytes)."""
    return PayloadTooLargeError(
        f"cannot read request body: {length} bytes is over the limit of {limit} bytes"
    )


def limited_receive(receive: Receive, limit: int) -> Receive:
    """``receive`` raising :class:`PayloadTooLargeError` once the body passes ``limit`` bytes."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLargeError(
                    f"cannot read request body: over the limit of {limit} bytes"
                )
        return message

    return limited


class BodyLimitMiddleware:
    """Limits request bodies while they stream in and inflates ``gzip`` bodies.

    ``max_body_bytes`` bounds the bytes on the wire; ``max_decompressed_bytes`` bounds a
    gzip body after inflation (a zip bomb stops at the limit, it is never fully inflated).
    Exceeding either raises :class:`PayloadTooLargeError` from ``receive``; a
    ``Content-Length`` over the limit is refused before reading anything.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_decompressed_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_decompressed_bytes = max_decompressed_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
        length, encoding, _forwarded = body_headers(headers)
        if length is not None and length > self.max_body_bytes:
            await response_for(too_large(length, self.max_body_bytes))(scope, receive, send)
            return
        if encoding == b"gzip":
            # Mutated in place (not copied) so the route the router records stays visible
            # to the outer middlewares.
            scope["headers"] = [
                (k, v) for k, v in headers if k not in (b"content-encoding", b"content-length")
            ]
            await self.app(scope, self._gunzipping(receive), send)
            return
        await self.app(scope, limited_receive(receive, self.max_body_bytes), send)

    def _gunzipping(self, receive: Receive) -> Receive:
        inner = limited_receive(receive, self.max_body_bytes)
        inflater = zlib.decompressobj(wbits=31)
        produced = 0
        limit = self.max_decompressed_bytes

        async def gunzip_receive() -> Message:
            nonlocal produced
            message = await inner()
            if message["type"] != "http.request":
                return message
            chunk: bytes = message.get("body", b"")
            try:
                out = inflater.decompress(chunk, limit - produced + 1)
                if not message.get("more_body", False) and not inflater.unconsumed_tail:
                    out += inflater.flush()
            except zlib.error as exc:
                raise BadDataError(f"cannot decompress gzip request body: {exc}") from exc
            produced += len(out)
            if produced > limit or inflater.unconsumed_tail:
                raise PayloadTooLargeError(
                    f"cannot decompress request body: over the limit of {limit} bytes"
                )
            if not message.get("more_body", False) and not inflater.eof:
                raise BadDataError("cannot decompress gzip request body: truncated stream")
            result: dict[str, Any] = dict(message)
            result["body"] = out
            return result

        return gunzip_receive
