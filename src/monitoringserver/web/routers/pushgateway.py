"""Pushgateway-compatible API with a TTL per group.

* ``PUT /metrics/job/<job>{/<label>/<value>}`` (``monitoring:write``): replace the group;
* ``POST`` same path: replace only the pushed metric families of the group;
* ``DELETE`` same path: remove the group;
* ``GET /api/v1/pushgateway/groups`` (``monitoring:read``): the groups as JSON;
* ``GET /api/v1/pushgateway/metrics`` (``monitoring:read``): every group's series in the
  text format (what a Pushgateway's ``/metrics`` shows).

Pushed samples are written to the store at push time with the server's clock, together
with ``push_time_seconds`` per group. Series that a push or delete removes get a staleness
marker at once. While a group lives, the refresh service re-writes its series every
``pushgateway_refresh_s`` seconds (as a Prometheus scraping a Pushgateway would), so they
stay visible to PromQL's 5-minute lookback; a group not pushed to for ``pushgateway_ttl_s``
expires and its series get staleness markers. Groups are saved to
``<data-dir>/pushgateway.json`` at every refresh and at stop, and restored at start.

Wiring (``server.py``)::

    pg = Pushgateway()
    server.router_factories.append(pg.router)
    server.service_factories.append(lambda s: Service(*pg.service(s)))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from monitoringserver.auth.api import Scope
from monitoringserver.errors import BadDataError, MonitoringError
from monitoringserver.ingest.prom_options import PromIngestOptions
from monitoringserver.ingest.prom_text import ExpositionParser, format_exposition
from monitoringserver.ingest.pushgateway import parse_grouping_path, parse_push_body
from monitoringserver.metrics.api import MetricAppender
from monitoringserver.model.labels import METRIC_NAME, Labels
from monitoringserver.model.samples import STALE_NAN, SampleBatch
from monitoringserver.pipeline.push_groups import PushGroups
from monitoringserver.web.deps import components, require
from monitoringserver.web.routers.ingest_common import append_counted, prom_ingest_options

__all__ = ["STATE_FILE", "Pushgateway", "samples_batch"]

log = logging.getLogger(__name__)

_FORMAT = "pushgateway"
#: The groups' state file inside the data directory.
STATE_FILE = "pushgateway.json"
_PREFIX = "/metrics/"
_JSON = "application/json"
_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def samples_batch(values: Sequence[tuple[Labels, float]], ts_ms: int) -> SampleBatch:
    """One sample per series, all at ``ts_ms``."""
    return SampleBatch(
        [labels for labels, _ in values],
        np.arange(len(values), dtype=np.uint32),
        np.full(len(values), ts_ms, dtype=np.int64),
        np.asarray([v for _, v in values], dtype=np.float64),
    )


class Pushgateway:
    """Owns the groups shared by the router and the refresh/expiry service."""

    def __init__(
        self,
        options: PromIngestOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
        state_file: Path | None = None,
    ) -> None:
        self.options = options
        self.clock = clock
        self.groups: PushGroups | None = None
        #: Where groups survive restarts (default ``<data-dir>/pushgateway.json``).
        self.state_file = state_file
        self._stop = asyncio.Event()

    def _groups(self, server: object) -> PushGroups:
        if self.groups is None:
            opts = self.options or prom_ingest_options(server)
            self.options = opts
            self.groups = PushGroups(
                ttl_s=opts.pushgateway_ttl_s,
                max_groups=opts.pushgateway_max_groups,
                clock=self.clock,
            )
            data_dir = getattr(server, "data_dir", None)
            if self.state_file is None and isinstance(data_dir, Path):
                self.state_file = data_dir / STATE_FILE
            if self.state_file is not None:
                loaded = self.groups.load(self.state_file)
                if loaded:
                    log.info("restored %d push groups from %s", loaded, self.state_file)
        return self.groups

    def save(self) -> None:
        """Persist the groups (when a state file is known)."""
        if self.groups is not None and self.state_file is not None:
            try:
                self.groups.save(self.state_file)
            except OSError as exc:
                log.warning("cannot save push groups to %s: %s", self.state_file, exc)

    # -- router ------------------------------------------------------------------------

    def router(self, server: object) -> APIRouter:
        groups = self._groups(server)
        parser = ExpositionParser()
        router = APIRouter()

        def key_of(request: Request) -> Labels:
            raw = request.scope.get("raw_path") or request.url.path.encode()
            path = raw.decode("latin-1").split("?", 1)[0]
            return parse_grouping_path(path[len(_PREFIX) :])

        async def push(request: Request) -> Response:
            require(request, Scope.WRITE)
            comps = components(request)
            key = key_of(request)
            try:
                text = (await request.body()).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadDataError(f"cannot parse push body: not UTF-8: {exc}") from exc
            body = parse_push_body(
                text, key, parser, content_type=request.headers.get("content-type", "")
            )
            now_s = self.clock()
            push_time = (
                tuple(sorted({**dict(key), METRIC_NAME: "push_time_seconds"}.items())),
                now_s,
                "push_time_seconds",
            )
            dropped = groups.push(
                key,
                [*body.samples, push_time],
                replace_all=request.method == "PUT",
                types={**body.types, "push_time_seconds": "gauge"},
                helps=body.helps,
            )
            values = [(labels, value) for labels, value, _ in body.samples]
            values.append((push_time[0], now_s))
            values.extend((labels, STALE_NAN) for labels in dropped)
            await append_counted(
                comps, samples_batch(values, int(now_s * 1000)), fmt=_FORMAT, source=_FORMAT
            )
            return Response(status_code=200)

        async def delete(request: Request) -> Response:
            require(request, Scope.WRITE)
            dropped = groups.delete(key_of(request))
            if dropped:
                batch = samples_batch([(s, STALE_NAN) for s in dropped], int(self.clock() * 1000))
                await append_counted(components(request), batch, fmt=_FORMAT, source=_FORMAT)
            return Response(status_code=202)

        async def list_groups(request: Request) -> Response:
            require(request, Scope.READ)
            ttl = groups.ttl_s
            data = [
                {
                    "labels": dict(g.key),
                    "last_push_time": g.last_push_s,
                    "expires_at": g.last_push_s + ttl,
                    "series": len(g.series),
                    "metrics": sorted({dict(s)[METRIC_NAME] for s in g.series}),
                }
                for g in groups.groups()
            ]
            body = msgspec.json.encode({"status": "success", "data": data})
            return Response(body, media_type=_JSON)

        async def metrics_text(request: Request) -> Response:
            require(request, Scope.READ)
            types: dict[str, str] = {}
            helps: dict[str, str] = {}
            rows: list[tuple[Labels, float, int | None]] = []
            for g in groups.groups():
                types.update(g.types)
                helps.update(g.helps)
                rows.extend((s, v, None) for s, v in g.series.items())
            return Response(format_exposition(rows, types=types, helps=helps), media_type=_TEXT)

        for path in ("/metrics/job/{rest:path}", "/metrics/job@base64/{rest:path}"):
            router.add_route(path, push, methods=["PUT", "POST"], include_in_schema=False)
            router.add_route(path, delete, methods=["DELETE"], include_in_schema=False)
        router.add_route("/api/v1/pushgateway/groups", list_groups, methods=["GET"])
        router.add_route("/api/v1/pushgateway/metrics", metrics_text, methods=["GET"])
        return router

    # -- service -----------------------------------------------------------------------

    async def refresh_once(self, appender: MetricAppender) -> int:
        """Expire old groups (staleness markers) and re-write live series; return samples."""
        groups = self.groups
        if groups is None:
            return 0
        now_ms = int(self.clock() * 1000)
        values = [(s, STALE_NAN) for s in groups.expire()]
        values.extend(groups.snapshot())
        if values:
            await appender.append(samples_batch(values, now_ms), source=_FORMAT)
        return len(values)

    def service(
        self, server: Any
    ) -> tuple[
        str, Callable[[], Coroutine[Any, Any, None]], Callable[[], Coroutine[Any, Any, None]]
    ]:
        """``(name, run, stop)`` for a ``server.Service``; uses ``server.store.appender``."""
        self._groups(server)
        appender: MetricAppender = server.store.appender
        assert self.options is not None
        interval = self.options.pushgateway_refresh_s

        async def run() -> None:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=interval)
                if self._stop.is_set():
                    return
                try:
                    await self.refresh_once(appender)
                except MonitoringError as exc:
                    log.warning("cannot refresh pushed groups: %s", exc)
                await asyncio.to_thread(self.save)

        async def stop() -> None:
            self._stop.set()
            await asyncio.to_thread(self.save)

        return "pushgateway", run, stop
