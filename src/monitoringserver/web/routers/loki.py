"""Loki-compatible HTTP API, so Promtail/Alloy/Fluent Bit can push and Grafana's Loki
data source can query.

* ``POST /loki/api/v1/push`` (write): snappy protobuf or JSON; 204 on success.
* ``GET|POST /loki/api/v1/query_range``, ``/query`` (read): the LogQL subset of
  :mod:`monitoringserver.logs.logql`; ``streams``, ``matrix`` and ``vector`` results.
* ``GET /loki/api/v1/labels`` (alias ``/label``), ``/label/{name}/values``, ``/series``,
  ``/index/stats`` (read).
* WebSocket ``/loki/api/v1/tail`` (read): ``query``, ``start``, ``limit``; lines are
  filtered server-side as they arrive on the bus; slow clients are dropped with a message.

Times: RFC 3339, Unix seconds (float) or nanoseconds; durations ``5m`` or seconds.
"""

from __future__ import annotations

import asyncio
import math

import msgspec
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from monitoringserver.auth.api import Scope
from monitoringserver.errors import BadDataError
from monitoringserver.ingest.loki_push import decode_push_json, decode_push_protobuf
from monitoringserver.logs.api import COLUMN_LABELS, LogQuery
from monitoringserver.logs.logql import (
    LogSelector,
    VectorExpr,
    parse_duration_ms,
    parse_logql,
)
from monitoringserver.logs.logql_eval import MetricSeries, evaluate_metric
from monitoringserver.logs.tailfilter import TailFilter
from monitoringserver.model.logs import LogBatch
from monitoringserver.web.deps import require
from monitoringserver.web.direct_routes import DirectRoute
from monitoringserver.web.routers.logs import LogsWeb, parse_time_param
from monitoringserver.web.routers.logs_ws import authorize_websocket, run_tail

__all__ = ["loki_router", "streams_json"]

_encoder = msgspec.json.Encoder()
_HOUR_MS = 3_600_000


def _json(body: object, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


def _ok(data: object) -> Response:
    return _json({"status": "success", "data": data})


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def streams_json(batch: LogBatch) -> list[dict[str, object]]:
    """Lines grouped into Loki streams (labels = non-empty columns + attrs), order kept."""
    streams: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
    for i, t in enumerate(batch.ts_ms.tolist()):
        labels = {c: str(getattr(batch, c)[i]) for c in COLUMN_LABELS}
        labels.update(batch.attrs[i])
        key = tuple(sorted((k, v) for k, v in labels.items() if v))
        streams.setdefault(key, []).append([str(t * 1_000_000), batch.message[i]])
    return [{"stream": dict(k), "values": v} for k, v in streams.items()]


def _matrix(series: list[MetricSeries]) -> list[dict[str, object]]:
    return [
        {
            "metric": s.labels,
            "values": [[t / 1000, _fmt(v)] for t, v in zip(s.ts_ms, s.values, strict=True)],
        }
        for s in series
    ]


async def _params(request: Request) -> dict[str, str]:
    params = dict(request.query_params)
    if request.method == "POST":
        form = await request.form()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
        await form.close()
    return params


def _range(params: dict[str, str], now_ms: int, default_ms: int) -> tuple[int, int]:
    end = parse_time_param(params.get("end"), "end") or now_ms
    since = params.get("since")
    start = parse_time_param(params.get("start"), "start")
    if start is None:
        start = end - (parse_duration_ms(since) if since else default_ms)
    if start > end:
        raise BadDataError("cannot query: start is after end")
    return start, end


def _limit(params: dict[str, str]) -> int:
    try:
        limit = int(params.get("limit", "100"))
    except ValueError as exc:
        raise BadDataError(f"cannot parse limit {params.get('limit')!r}") from exc
    if not 1 <= limit <= 5000:
        raise BadDataError("cannot query: limit must be 1..5000")
    return limit


def _selector(text: str) -> LogSelector:
    parsed = parse_logql(text)
    if not isinstance(parsed, LogSelector):
        raise BadDataError(f"cannot use {text!r} here: a log stream selector is required")
    return parsed


def loki_router(web: LogsWeb) -> APIRouter:
    router = APIRouter()

    async def push(request: Request) -> Response:
        require(request, Scope.WRITE)
        body = await request.body()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            decoded = await asyncio.to_thread(decode_push_json, body)
        else:
            decoded = await asyncio.to_thread(decode_push_protobuf, body)
        source = request.client.host if request.client else "loki"
        if len(decoded.batch):
            await web.appender.append(decoded.batch, source=source)
        return Response(status_code=204)

    def _run_log_query(sel: LogSelector, params: dict[str, str], start: int, end: int) -> Response:
        direction = params.get("direction", "backward")
        page = web.querier.query(
            sel.to_query(start, end, limit=_limit(params), direction=direction)
        )
        result = streams_json(page.batch)
        stats = {"summary": {"totalEntriesReturned": len(page.batch)}}
        return _ok({"resultType": "streams", "result": result, "stats": stats})

    def _step_ms(params: dict[str, str], start: int, end: int) -> int:
        raw = params.get("step") or params.get("interval")
        if raw:
            return max(1, parse_duration_ms(raw))
        return max(1000, math.ceil((end - start) / 250 / 1000) * 1000)

    async def query_range(request: Request) -> Response:
        require(request, Scope.READ)
        params = await _params(request)
        text = params.get("query", "")
        expr = parse_logql(text)
        start, end = _range(params, web.now_ms(), _HOUR_MS)
        if isinstance(expr, LogSelector):
            return await asyncio.to_thread(_run_log_query, expr, params, start, end)
        step = _step_ms(params, start, end)
        if isinstance(expr, VectorExpr):
            n = (end - start) // step + 1
            values = [[(start + k * step) / 1000, _fmt(expr.value)] for k in range(min(n, 11_000))]
            return _ok({"resultType": "matrix", "result": [{"metric": {}, "values": values}]})
        series = await asyncio.to_thread(evaluate_metric, web.querier, expr, start, end, step)
        return _ok({"resultType": "matrix", "result": _matrix(series)})

    async def query(request: Request) -> Response:
        require(request, Scope.READ)
        params = await _params(request)
        expr = parse_logql(params.get("query", ""))
        at = parse_time_param(params.get("time"), "time") or web.now_ms()
        if isinstance(expr, VectorExpr):
            return _ok(
                {
                    "resultType": "vector",
                    "result": [{"metric": {}, "value": [at / 1000, _fmt(expr.value)]}],
                }
            )
        if isinstance(expr, LogSelector):
            return await asyncio.to_thread(_run_log_query, expr, params, at - _HOUR_MS, at)
        series = await asyncio.to_thread(evaluate_metric, web.querier, expr, at, at, 1000)
        result = [{"metric": s.labels, "value": [at / 1000, _fmt(s.values[-1])]} for s in series]
        return _ok({"resultType": "vector", "result": result})

    async def labels(request: Request) -> Response:
        require(request, Scope.READ)
        params = await _params(request)
        start, end = _range(params, web.now_ms(), 6 * _HOUR_MS)
        return _ok(await asyncio.to_thread(web.querier.label_names, start, end))

    async def label_values(request: Request) -> Response:
        require(request, Scope.READ)
        params = await _params(request)
        start, end = _range(params, web.now_ms(), 6 * _HOUR_MS)
        name = request.path_params["name"]
        if params.get("query"):
            sel = _selector(params["query"])
            rows = await asyncio.to_thread(web.querier.series, sel.to_query(start, end))
            return _ok(sorted({r[name] for r in rows if r.get(name)}))
        return _ok(await asyncio.to_thread(web.querier.label_values, name, start, end))

    async def series(request: Request) -> Response:
        require(request, Scope.READ)
        params = await _params(request)
        start, end = _range(params, web.now_ms(), 6 * _HOUR_MS)
        matches = request.query_params.getlist("match[]") or request.query_params.getlist("match")
        if request.method == "POST" and not matches:
            form = await request.form()
            matches = [v for v in form.getlist("match[]") if isinstance(v, str)]
            await form.close()
        if not matches:
            raise BadDataError("cannot list series: at least one match[] selector is required")
        found: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        for text in matches:
            q = _selector(text).to_query(start, end)
            for row in await asyncio.to_thread(web.querier.series, q):
                found[tuple(sorted(row.items()))] = row
        return _ok([found[k] for k in sorted(found)])

    async def index_stats(request: Request) -> Response:
        require(request, Scope.READ)
        params = await _params(request)
        start, end = _range(params, web.now_ms(), _HOUR_MS)
        q: LogQuery = _selector(params.get("query", "")).to_query(start, end)
        rows = await asyncio.to_thread(web.querier.count_series, q, end - start + 1, None)
        return _json(
            {
                "streams": len(rows),
                "chunks": len(rows),
                "entries": sum(sum(r.lines) for r in rows),
                "bytes": sum(sum(r.bytes) for r in rows),
            }
        )

    async def tail(websocket: WebSocket) -> None:
        if not await authorize_websocket(websocket, Scope.READ):
            return
        params = dict(websocket.query_params)
        try:
            sel = _selector(params.get("query", ""))
            limit = _limit(params)
            start = parse_time_param(params.get("start"), "start")
        except BadDataError as exc:
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        if web.bus is None:
            await websocket.close(code=1011, reason="live tail is not available")
            return
        sub = web.bus.subscribe(name=f"loki-tail:{websocket.client}")
        await websocket.accept()
        if start is not None:
            q = sel.to_query(start, web.now_ms(), limit=limit, direction="backward")
            page = await asyncio.to_thread(web.querier.query, q)
            history = page.batch.take(list(range(len(page.batch) - 1, -1, -1)))
            await websocket.send_text(_encoder.encode({"streams": streams_json(history)}).decode())
        flt = TailFilter(sel)
        await run_tail(websocket, sub, flt.apply, lambda b: [{"streams": streams_json(b)}])

    async def buildinfo(request: Request) -> Response:
        require(request, Scope.READ)
        # The API level this server implements; Grafana picks its features by it.
        return _json({"version": "2.9.0", "revision": "monitoringserver", "branch": "",
                      "goVersion": ""})  # fmt: skip

    router.add_route("/loki/api/v1/status/buildinfo", buildinfo, methods=["GET"])
    # The push endpoint is the hot path: a direct route skips FastAPI's routing scan.
    router.routes.append(DirectRoute("/loki/api/v1/push", push, methods=["POST"]))
    for path, fn in (
        ("/loki/api/v1/query_range", query_range),
        ("/loki/api/v1/query", query),
        ("/loki/api/v1/labels", labels),
        ("/loki/api/v1/label", labels),
        ("/loki/api/v1/label/{name}/values", label_values),
        ("/loki/api/v1/series", series),
        ("/loki/api/v1/index/stats", index_stats),
    ):
        router.add_route(path, fn, methods=["GET", "POST"])
    router.add_api_websocket_route("/loki/api/v1/tail", tail)
    return router
