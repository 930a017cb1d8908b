"""The Prometheus-compatible HTTP query API (what Grafana's Prometheus data source calls).

``create_router(engine, querier)`` returns an ``APIRouter`` serving ``/api/v1/query``,
``query_range``, ``series``, ``labels``, ``label/<name>/values``, ``metadata``,
``query_exemplars``, ``status/buildinfo``, ``status/runtimeinfo``, ``format_query`` and
``parse_query``. Every route requires ``monitoring:read``. Parameters come from the URL
and, for POST, from an ``application/x-www-form-urlencoded`` body, merged as Prometheus
does. Errors are raised as :mod:`monitoringserver.errors` exceptions and rendered by
``web/errors.py`` (400 ``bad_data``, 422 ``execution``, 503 ``timeout``).

Queries run in worker threads of a :class:`QueryRunner`; at most ``max_concurrent`` run
at once, the rest wait their turn (the wait counts against their timeout).
"""

from __future__ import annotations

import asyncio
import os
import platform
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote_plus

import msgspec
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from monitoringserver import __version__
from monitoringserver.auth.api import Scope
from monitoringserver.errors import BadDataError
from monitoringserver.metrics.api import MetricQuerier
from monitoringserver.model.labels import Labels
from monitoringserver.promql import Engine, Result, format_query, parse
from monitoringserver.promql.engine import InlineBounds, NotInline
from monitoringserver.web.direct_routes import DirectRoute
from monitoringserver.web.routers.prometheus_encode import encode_data
from monitoringserver.web.routers.prometheus_params import (
    MAX_TIME_MS,
    MIN_TIME_MS,
    encode_stats,
    parse_duration_s,
    parse_limit,
    parse_match,
    parse_time_ms,
)
from monitoringserver.web.routers.prometheus_runner import QueryRunner
from monitoringserver.web.security import check_scope

__all__ = ["create_router"]

_encoder = msgspec.json.Encoder()
#: Queries within these bounds run on the event loop (see ``QueryRunner.run``).
_INLINE = InlineBounds()
_GET_POST = ["GET", "POST"]


def _json(data: Any, warnings: list[str] | None = None, infos: list[str] | None = None) -> Response:
    body: dict[str, Any] = {"status": "success", "data": data}
    if warnings:
        body["warnings"] = warnings
    if infos:
        body["infos"] = infos
    return Response(_encoder.encode(body), media_type="application/json")


#: A route handler (the scope check runs before it).
_Handler = Callable[[Request], Awaitable[Response]]

#: A query's result and the JSON bytes of its ``data`` object (built in the worker thread).
_Encoded = tuple[Result, bytes]


def _encode(result: Result) -> _Encoded:
    return result, encode_data(result)


def _raw_json(data: bytes, warnings: list[str], infos: list[str]) -> Response:
    """A success response around already encoded ``data`` bytes."""
    parts = [b'{"status":"success","data":', data]
    if warnings:
        parts += (b',"warnings":', _encoder.encode(warnings))
    if infos:
        parts += (b',"infos":', _encoder.encode(infos))
    parts.append(b"}")
    return Response(b"".join(parts), media_type="application/json")


def _query_items(raw: bytes) -> list[tuple[str, str]]:
    """The URL's ``name=value`` pairs, decoded exactly as ``request.query_params`` decodes
    them (``parse_qsl(raw.decode("latin-1"), keep_blank_values=True)``) without building
    its multi-dict; only names and values holding ``%`` or ``+`` are unquoted."""
    if not raw:
        return []
    items = []
    for field in raw.decode("latin-1").split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        items.append((name, value))
    return items


class _Params:
    """Merged URL and form parameters of one request."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    @classmethod
    async def read(cls, request: Request) -> _Params:
        items = _query_items(request.scope["query_string"])
        if request.method == "POST":
            ctype = request.headers.get("content-type", "")
            if ctype.startswith("application/x-www-form-urlencoded"):
                form = await request.form()
                items.extend((k, v) for k, v in form.multi_items() if isinstance(v, str))
        return cls(items)

    def get(self, name: str) -> str | None:
        for key, value in self._items:
            if key == name:
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self._items if k == name]

    def required(self, name: str) -> str:
        value = self.get(name)
        if value is None or value == "":
            raise BadDataError(f'cannot parse parameter "{name}": missing')
        return value


def create_router(
    engine: Engine,
    querier: MetricQuerier,
    *,
    clock: Callable[[], float] = time.time,
    max_concurrent: int = 8,
    build_info: Mapping[str, str] | None = None,
) -> APIRouter:
    """Build the router. ``clock`` gives "now" in Unix seconds (default time for queries)."""
    router = APIRouter()

    def route(path: str, methods: list[str] = _GET_POST) -> Callable[[_Handler], _Handler]:
        """Register ``handler`` as a direct route behind the ``monitoring:read`` check."""

        def add(handler: _Handler) -> _Handler:
            async def endpoint(request: Request) -> Response:
                check_scope(request, Scope.READ)
                return await handler(request)

            router.routes.append(DirectRoute(path, endpoint, methods=methods))
            return handler

        return add

    runner: QueryRunner[_Encoded] = QueryRunner(max_concurrent)
    started_at = clock()
    info = {
        "version": __version__,
        "revision": "",
        "branch": "",
        "buildUser": "monitoringserver",
        "buildDate": "",
        "goVersion": f"python{platform.python_version()}",
        **(build_info or {}),
    }

    def now_ms() -> int:
        return round(clock() * 1000)

    def timeout_of(params: _Params) -> float:
        default = engine.options.timeout_s
        raw = params.get("timeout")
        return min(default, parse_duration_s(raw, "timeout")) if raw else default

    def respond(encoded: _Encoded, params: _Params, waited: float) -> Response:
        result, data = encoded
        if params.get("stats") in ("all", "true", "1"):
            stats = _encoder.encode(encode_stats(result.stats, waited))
            data = data[:-1] + b',"stats":' + stats + b"}"
        return _raw_json(data, result.warnings, result.infos)

    @route("/api/v1/query")
    async def query(request: Request) -> Response:
        params = await _Params.read(request)
        text = params.required("query")
        at = parse_time_ms(params.get("time"), "time", now_ms())
        timeout_s = timeout_of(params)
        lookback = _lookback(params)

        def call(cancel: threading.Event, remaining: float) -> _Encoded:
            result = engine.instant(
                text, at, timeout_s=remaining, cancel=cancel, lookback_delta_ms=lookback
            )
            return _encode(_limit_result(result, params))

        def inline() -> _Encoded | None:
            try:
                result = engine.instant(text, at, lookback_delta_ms=lookback, inline=_INLINE)
            except NotInline:
                return None
            return _encode(_limit_result(result, params))

        encoded, waited = await runner.run(call, timeout_s, inline)
        return respond(encoded, params, waited)

    @route("/api/v1/query_range")
    async def query_range(request: Request) -> Response:
        params = await _Params.read(request)
        text = params.required("query")
        start = parse_time_ms(params.required("start"), "start", 0)
        end = parse_time_ms(params.required("end"), "end", 0)
        step_s = parse_duration_s(params.required("step"), "step")
        if end < start:
            raise BadDataError(
                'cannot parse parameter "end": end timestamp must not be before start time'
            )
        step = round(step_s * 1000)
        if step <= 0:
            raise BadDataError(
                'cannot parse parameter "step": zero or negative query resolution step widths '
                "are not accepted. Try a positive integer"
            )
        timeout_s = timeout_of(params)
        lookback = _lookback(params)

        def call(cancel: threading.Event, remaining: float) -> _Encoded:
            result = engine.range(
                text,
                start,
                end,
                step,
                timeout_s=remaining,
                cancel=cancel,
                lookback_delta_ms=lookback,
            )
            return _encode(_limit_result(result, params))

        def inline() -> _Encoded | None:
            try:
                result = engine.range(
                    text, start, end, step, lookback_delta_ms=lookback, inline=_INLINE
                )
            except NotInline:
                return None
            return _encode(_limit_result(result, params))

        encoded, waited = await runner.run(call, timeout_s, inline)
        return respond(encoded, params, waited)

    def time_range(params: _Params) -> tuple[int, int]:
        start = parse_time_ms(params.get("start"), "start", MIN_TIME_MS)
        end = parse_time_ms(params.get("end"), "end", MAX_TIME_MS)
        if end < start:
            raise BadDataError(
                'cannot parse parameter "end": end timestamp must not be before start time'
            )
        return start, end

    @route("/api/v1/series")
    async def series(request: Request) -> Response:
        params = await _Params.read(request)
        selectors = params.all("match[]")
        if not selectors:
            raise BadDataError('cannot parse parameter "match[]": no match[] parameter provided')
        groups = parse_match(selectors)
        start, end = time_range(params)
        limit = parse_limit(params.get("limit"))

        def load() -> list[Labels]:
            found: set[Labels] = set()
            for group in groups:
                found.update(querier.series(group, start, end))
            return sorted(found)

        labels = await asyncio.to_thread(load)
        warnings = []
        if limit and len(labels) > limit:
            labels = labels[:limit]
            warnings.append("results truncated due to limit")
        return _json([dict(lbl) for lbl in labels], warnings)

    @route("/api/v1/labels")
    async def labels(request: Request) -> Response:
        params = await _Params.read(request)
        groups = parse_match(params.all("match[]")) or [[]]
        start, end = time_range(params)
        limit = parse_limit(params.get("limit"))

        def load() -> list[str]:
            found: set[str] = set()
            for group in groups:
                found.update(querier.label_names(group, start, end))
            return sorted(found)

        return _limited(await asyncio.to_thread(load), limit)

    async def label_values(request: Request) -> Response:
        check_scope(request, Scope.READ)
        name: str = request.path_params["name"]
        params = await _Params.read(request)
        groups = parse_match(params.all("match[]")) or [[]]
        start, end = time_range(params)
        limit = parse_limit(params.get("limit"))

        def load() -> list[str]:
            found: set[str] = set()
            for group in groups:
                found.update(querier.label_values(name, group, start, end))
            return sorted(found)

        return _limited(await asyncio.to_thread(load), limit)

    router.routes.append(Route("/api/v1/label/{name}/values", label_values, methods=["GET"]))

    @route("/api/v1/metadata", ["GET"])
    async def metadata(_request: Request) -> Response:
        return _json({})

    @route("/api/v1/query_exemplars")
    async def query_exemplars(request: Request) -> Response:
        params = await _Params.read(request)
        parse(params.required("query"))
        return _json([])

    @route("/api/v1/status/buildinfo", ["GET"])
    async def buildinfo(_request: Request) -> Response:
        return _json(info)

    @route("/api/v1/status/runtimeinfo", ["GET"])
    async def runtimeinfo(_request: Request) -> Response:
        return _json(
            {
                "startTime": _rfc3339(started_at),
                "CWD": os.getcwd(),
                "reloadConfigSuccess": True,
                "lastConfigTime": _rfc3339(started_at),
                "corruptionCount": 0,
                "goroutineCount": threading.active_count(),
                "GOMAXPROCS": os.cpu_count() or 1,
                "GOMEMLIMIT": 0,
                "GOGC": "",
                "GODEBUG": "",
                "storageRetention": "",
            }
        )

    @route("/api/v1/format_query")
    async def format_query_route(request: Request) -> Response:
        params = await _Params.read(request)
        return _json(format_query(params.required("query")))

    @route("/api/v1/parse_query")
    async def parse_query(request: Request) -> Response:
        params = await _Params.read(request)
        return _json(_ast(parse(params.required("query"))))

    return router


def _lookback(params: _Params) -> int | None:
    raw = params.get("lookback_delta")
    return round(parse_duration_s(raw, "lookback_delta") * 1000) if raw else None


def _limit_result(result: Result, params: _Params) -> Result:
    limit = parse_limit(params.get("limit"))
    if limit and len(result.series) > limit:
        result.series = result.series[:limit]
        result.warnings.append("results truncated due to limit")
    return result


def _limited(values: list[str], limit: int) -> Response:
    if limit and len(values) > limit:
        return _json(values[:limit], ["results truncated due to limit"])
    return _json(values)


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _ast(expr: Any) -> dict[str, Any]:
    """A small JSON view of the syntax tree: node type, PromQL text and children."""
    children = []
    for attr in ("expr", "lhs", "rhs", "param", "vector_selector"):
        child = getattr(expr, attr, None)
        if child is not None and hasattr(child, "prettify"):
            children.append(_ast(child))
    for arg in getattr(expr, "args", []) or []:
        children.append(_ast(arg))
    node: dict[str, Any] = {"type": type(expr).__name__, "expr": str(expr)}
    if children:
        node["children"] = children
    return node
