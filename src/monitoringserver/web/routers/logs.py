"""Log HTTP API (seed 002 ``POST/GET /logs``, seed 000 archive operations).

* ``POST /api/v1/logs``, ``POST /logs`` (write): seed-002 JSON, one object or a list.
* ``GET /api/v1/logs``, ``GET /logs`` (read): ``server_id``, ``log_type``|``level``,
  ``logger``, ``source``, ``q`` (substring), ``regex`` (RE2), ``start_time``, ``end_time``
  (RFC 3339 or epoch s/ms), ``limit`` (≤ 5000), ``direction`` (``backward`` = newest first,
  default, or ``forward``), ``cursor`` (from ``next_cursor``). Several values of
  ``server_id``/``level``/``logger`` may be given comma-separated.
* ``GET /api/v1/logs/patterns`` (read): top message patterns with samples.
* ``GET /api/v1/logs/archives`` (read, filter ``start_time``/``end_time``/``server_id``),
  ``GET /api/v1/logs/archives/{id}`` (read; zstd-compressed: ``format=parquet``, the
  default, lines rebuilt as plain columns; ``jsonl``; ``stored``, the file as stored),
  ``DELETE /api/v1/logs/archives/{id}`` (admin), ``POST /api/v1/logs/rotate`` (admin;
  ``flush=true`` archives the head first, ``compact=true`` merges fresh archives).
* ``GET /api/v1/logs/sources`` (read): seed 003 ``log_sources`` (nodes, loggers, levels).
* ``GET /api/v1/logs/stats`` (read); ``GET``/``PUT /api/v1/logs/aggregation`` (read/admin).

* WebSocket ``/api/v1/logs/stream`` (read; same filters as ``GET /logs``): seed 003
  ``new_logs`` events as lines arrive (via the bus; slow clients are dropped).

Ingest and search are plain Starlette routes with msgspec.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import msgspec
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket

from monitoringserver.auth.api import Scope
from monitoringserver.errors import BadDataError
from monitoringserver.ingest.json_logs import decode_json_logs
from monitoringserver.logs.aggregator import AggregationRules, LogAggregator
from monitoringserver.logs.api import (
    ArchiveFilter,
    ArchiveInfo,
    LineFilter,
    LineOp,
    LogAppender,
    LogQuerier,
    LogQuery,
)
from monitoringserver.logs.compressor import LogCompressor
from monitoringserver.logs.logql import LogSelector
from monitoringserver.logs.store import LogStore
from monitoringserver.logs.tailfilter import TailFilter
from monitoringserver.logs.timestamps import parse_ts_value
from monitoringserver.model.logs import LogBatch, normalize_level
from monitoringserver.model.matchers import Matcher, MatchOp
from monitoringserver.pipeline.bus import Bus
from monitoringserver.web.deps import require
from monitoringserver.web.direct_routes import DirectRoute
from monitoringserver.web.routers.logs_ws import (
    authorize_websocket,
    batch_to_json,
    dashboard_messages,
    run_tail,
)

__all__ = ["LogsWeb", "logs_router", "parse_time_param", "query_from_params"]

_encoder = msgspec.json.Encoder()
_MAX_LIMIT = 5000


@dataclass(slots=True)
class LogsWeb:
    """What the log routers use; built by ``server.py`` from ``open_log_pipeline``.

    ``clock`` returns seconds since the epoch; ``parser_stats`` feeds ``/stats``."""

    appender: LogAppender
    querier: LogQuerier
    store: LogStore
    compressor: LogCompressor
    aggregator: LogAggregator | None = None
    bus: Bus[LogBatch] | None = None
    parser_stats: Callable[[], dict[str, int]] | None = None
    clock: Callable[[], float] = time.time

    def now_ms(self) -> int:
        return int(self.clock() * 1000)


def _then_remove(chunks: Iterator[bytes], workdir: Path) -> Iterator[bytes]:
    """``chunks``, then remove the temporary export directory (also when the client
    goes away mid-download and the generator is closed)."""
    try:
        yield from chunks
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _json(body: object, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


def parse_time_param(value: str | None, name: str) -> int | None:
    """RFC 3339 or epoch seconds/ms/ns → ms; None when absent."""
    if value is None or value == "":
        return None
    ms = parse_ts_value(value)
    if ms is None:
        raise BadDataError(f"cannot parse {name} {value!r}: expected RFC 3339 or epoch time")
    return ms


def _multi(name: str, raw: str | None, *, levels: bool = False) -> list[Matcher]:
    if not raw:
        return []
    values = [v.strip() for v in raw.split(",") if v.strip()]
    if levels:
        values = [normalize_level(v) for v in values]
    if len(values) == 1:
        return [Matcher.eq(name, values[0])]
    return [Matcher(name, MatchOp.RE, "|".join(re.escape(v) for v in values))]


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise BadDataError(f"cannot parse {name} {raw!r}: expected an integer") from exc


def query_from_params(request: Request) -> LogQuery:
    p = request.query_params
    matchers = [
        *_multi("server_id", p.get("server_id")),
        *_multi("level", p.get("log_type") or p.get("level") or p.get("type"), levels=True),
        *_multi("logger", p.get("logger")),
        *_multi("source", p.get("source")),
    ]
    filters = []
    if p.get("q"):
        filters.append(LineFilter(LineOp.CONTAINS, p["q"]))
    if p.get("regex"):
        filters.append(LineFilter(LineOp.REGEX, p["regex"]))
    limit = _int_param(request, "limit", 100)
    if not 1 <= limit <= _MAX_LIMIT:
        raise BadDataError(f"cannot query logs: limit must be 1..{_MAX_LIMIT}")
    direction = p.get("direction", "backward")
    if direction not in ("backward", "forward"):
        raise BadDataError(f"cannot query logs: direction {direction!r} is not backward|forward")
    return LogQuery(
        start_ms=parse_time_param(p.get("start_time") or p.get("start"), "start_time"),
        end_ms=parse_time_param(p.get("end_time") or p.get("end"), "end_time"),
        matchers=tuple(matchers),
        filters=tuple(filters),
        limit=limit,
        direction=direction,
        cursor=p.get("cursor") or None,
    )


def _info(a: ArchiveInfo) -> dict[str, object]:
    d = dataclasses.asdict(a)
    d["hosts"] = list(a.hosts)
    d["ratio"] = round(a.raw_bytes / a.stored_bytes, 3) if a.stored_bytes else 0.0
    return d


def logs_router(web: LogsWeb) -> APIRouter:
    """The router; ``server.py`` passes it to ``create_app(extra_routers=...)``."""
    router = APIRouter()

    async def ingest(request: Request) -> Response:
        require(request, Scope.WRITE)
        body = await request.body()
        decoded = decode_json_logs(body, now_ms=web.now_ms())
        source = request.client.host if request.client else "http"
        result = await web.appender.append(decoded.batch, source=source)
        rejected = dict(result.rejected)
        repaired = dict(result.repaired)
        if decoded.invalid_utf8:
            repaired["invalid_utf8"] = repaired.get("invalid_utf8", 0) + decoded.invalid_utf8
        if decoded.bad_timestamps:
            repaired["bad_timestamp"] = decoded.bad_timestamps
        if result.accepted == 0 and rejected:
            detail = ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items()))
            raise BadDataError(f"cannot accept logs: every line was refused ({detail})")
        data = {
            "items": decoded.items,
            "accepted": result.accepted,
            "rejected": sum(rejected.values()),
            "rejected_by_reason": rejected,
            "repaired": repaired,
        }
        return _json({"status": "success", "data": data})

    async def search(request: Request) -> Response:
        require(request, Scope.READ)
        query = query_from_params(request)
        page = await asyncio.to_thread(web.querier.query, query)
        data = {
            "logs": batch_to_json(page.batch),
            "next_cursor": page.next_cursor,
            "archives_scanned": page.archives_scanned,
            "archives_pruned": page.archives_pruned,
        }
        return _json({"status": "success", "data": data})

    for path in ("/api/v1/logs", "/logs"):
        # Ingest is the hot path: a direct route skips FastAPI's routing scan in apps
        # built by ``create_app`` (it authenticates itself and raises project errors).
        router.routes.append(DirectRoute(path, ingest, methods=["POST"]))
        router.add_route(path, search, methods=["GET"], include_in_schema=False)

    async def patterns(request: Request) -> Response:
        require(request, Scope.READ)
        if web.aggregator is None:
            return _json({"status": "success", "data": []})
        level = request.query_params.get("level")
        top = web.aggregator.top_patterns(
            _int_param(request, "limit", 20),
            level=normalize_level(level) if level else None,
            window=request.query_params.get("window") == "true",
        )
        return _json({"status": "success", "data": [dataclasses.asdict(p) for p in top]})

    async def archives(request: Request) -> Response:
        require(request, Scope.READ)
        p = request.query_params
        flt = ArchiveFilter(
            parse_time_param(p.get("start_time"), "start_time"),
            parse_time_param(p.get("end_time"), "end_time"),
            p.get("server_id") or None,
        )
        items = await asyncio.to_thread(web.querier.archives, flt)
        return _json({"status": "success", "data": [_info(a) for a in items]})

    async def download(request: Request) -> Response:
        require(request, Scope.READ)
        archive_id = request.path_params["archive_id"]
        fmt = request.query_params.get("format", "parquet")
        if fmt == "stored":
            path = await asyncio.to_thread(web.store.archive_path, archive_id)
            chunks: Iterator[bytes] = web.compressor.stream_file(path)
            suffix = "stored.parquet"
        else:
            workdir = Path(tempfile.mkdtemp(prefix="log-export-"))
            try:
                suffix = "parquet" if fmt == "parquet" else fmt
                path = await asyncio.to_thread(
                    web.store.export_archive, archive_id, workdir / f"lines.{suffix}", fmt
                )
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            chunks = _then_remove(web.compressor.stream_file(path), workdir)
        return StreamingResponse(
            chunks,
            media_type="application/zstd",
            headers={"Content-Disposition": f'attachment; filename="{archive_id}.{suffix}.zst"'},
        )

    async def delete(request: Request) -> Response:
        require(request, Scope.ADMIN)
        info = await asyncio.to_thread(web.store.delete, request.path_params["archive_id"])
        return _json({"status": "success", "data": _info(info)})

    async def rotate(request: Request) -> Response:
        require(request, Scope.ADMIN)
        p = request.query_params
        if p.get("flush") in ("1", "true"):
            await asyncio.to_thread(web.store.flush)
        merged = []
        if p.get("compact") in ("1", "true"):
            while (info := await asyncio.to_thread(web.store.compact, force=True)) is not None:
                merged.append(info.id)
        age = p.get("max_age_s")
        size = p.get("max_total_bytes")
        try:
            result = await asyncio.to_thread(
                web.store.rotate,
                max_age_s=float(age) if age else None,
                max_total_bytes=int(size) if size else None,
            )
        except ValueError as exc:
            raise BadDataError(f"cannot rotate log archives: {exc}") from exc
        data = {
            "deleted": list(result.deleted),
            "freed_bytes": result.freed_bytes,
            "compacted_into": merged,
        }
        return _json({"status": "success", "data": data})

    async def stats(request: Request) -> Response:
        require(request, Scope.READ)
        st = await asyncio.to_thread(web.querier.stats)
        data: dict[str, object] = {"store": dataclasses.asdict(st)}
        compression: dict[str, object] = dataclasses.asdict(web.compressor.get_stats())
        if st.stored_bytes:
            compression["archive_ratio"] = round(st.raw_bytes / st.stored_bytes, 3)
        data["compression"] = compression
        if web.aggregator is not None:
            agg = dataclasses.asdict(web.aggregator.get_stats())
            data["aggregation"] = agg
        if web.bus is not None:
            data["bus"] = dataclasses.asdict(web.bus.stats())
        if web.parser_stats is not None:
            data["parser"] = web.parser_stats()
        return _json({"status": "success", "data": data})

    async def aggregation(request: Request) -> Response:
        if request.method == "GET":
            require(request, Scope.READ)
        else:
            require(request, Scope.ADMIN)
        if web.aggregator is None:
            raise BadDataError("cannot use aggregation: no aggregator is configured")
        if request.method == "PUT":
            try:
                rules = msgspec.json.decode(await request.body(), type=AggregationRules)
            except msgspec.DecodeError as exc:
                raise BadDataError(f"cannot parse aggregation rules: {exc}") from exc
            web.aggregator.set_rules(rules)
        return _json({"status": "success", "data": dataclasses.asdict(web.aggregator.get_stats())})

    async def stream(websocket: WebSocket) -> None:
        if not await authorize_websocket(websocket, Scope.READ):
            return
        if web.bus is None:
            await websocket.close(code=1011, reason="live logs are not available")
            return
        query = query_from_params(cast(Request, websocket))
        selector = LogSelector(query.matchers, query.filters)
        tail = TailFilter(selector)
        sub = web.bus.subscribe(name=f"logs-stream:{websocket.client}")
        await websocket.accept()
        await run_tail(websocket, sub, tail.apply, dashboard_messages)

    async def sources(request: Request) -> Response:
        require(request, Scope.READ)
        p = request.query_params
        start = parse_time_param(p.get("start_time"), "start_time")
        end = parse_time_param(p.get("end_time"), "end_time")

        def collect() -> dict[str, list[str]]:
            q = web.querier
            return {
                "nodes": q.label_values("server_id", start, end),
                "loggers": q.label_values("logger", start, end),
                "log_levels": q.label_values("level", start, end),
            }

        return _json({"status": "success", "data": await asyncio.to_thread(collect)})

    router.add_api_websocket_route("/api/v1/logs/stream", stream)
    router.add_route("/api/v1/logs/sources", sources, methods=["GET"])
    router.add_route("/api/v1/logs/patterns", patterns, methods=["GET"])
    router.add_route("/api/v1/logs/archives", archives, methods=["GET"])
    router.add_route("/api/v1/logs/archives/{archive_id}", download, methods=["GET"])
    router.add_route("/api/v1/logs/archives/{archive_id}", delete, methods=["DELETE"])
    router.add_route("/api/v1/logs/rotate", rotate, methods=["POST"])
    router.add_route("/api/v1/logs/stats", stats, methods=["GET"])
    router.add_route("/api/v1/logs/aggregation", aggregation, methods=["GET", "PUT"])
    return router
