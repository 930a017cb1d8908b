"""Seed 001 ``GET /api/v1/monitoring/metrics``: the latest value of every metric per server.

Looks back ``limits.latest_lookback_s`` (or ``?lookback=5m``) from now; optional
``server_id`` comma list. Answer::

    {"status": "success", "data": {"servers": [{"server_id": "web-1", "last_seen": 1732.5,
      "metrics": [{"metric": "cpu_usage", "labels": {}, "value": 70.5, "timestamp": 1732.5}]}]}}

Timestamps are epoch seconds. Requires ``monitoring:read``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from monitoringserver.auth.api import Principal, Scope
from monitoringserver.metrics.api import MetricQuerier
from monitoringserver.model.labels import METRIC_NAME
from monitoringserver.model.matchers import Matcher, MatchOp
from monitoringserver.model.samples import is_stale_nan
from monitoringserver.web.deps import components
from monitoringserver.web.history import parse_duration_ms
from monitoringserver.web.security import require_scope

__all__ = ["latest_per_server", "router"]

router = APIRouter(tags=["monitoring"])


def latest_per_server(
    querier: MetricQuerier, server_ids: list[str], start_ms: int, end_ms: int
) -> list[dict[str, object]]:
    """Synchronous; one entry per server, metrics sorted by name then labels."""
    if server_ids:
        pattern = "|".join(re.escape(s) for s in server_ids)
        matcher = Matcher("server_id", MatchOp.RE, pattern)
    else:
        matcher = Matcher("server_id", MatchOp.RE, ".+")
    servers: dict[str, list[dict[str, object]]] = {}
    last_seen: dict[str, float] = {}
    for s in querier.select([matcher], start_ms, end_ms):
        if not len(s.values) or is_stale_nan(s.values[-1:])[0]:
            continue  # no samples, or the series went stale (its source stopped reporting it)
        last = len(s.values) - 1
        labels = dict(s.labels)
        server = labels.pop("server_id", "")
        name = labels.pop(METRIC_NAME, "")
        ts = float(s.ts_ms[last]) / 1000.0
        value = float(s.values[last])
        servers.setdefault(server, []).append(
            {"metric": name, "labels": labels, "value": value, "timestamp": ts}
        )
        last_seen[server] = max(last_seen.get(server, ts), ts)
    out: list[dict[str, object]] = []
    for server in sorted(servers):
        metrics = sorted(servers[server], key=lambda m: (str(m["metric"]), str(m["labels"])))
        out.append({"server_id": server, "last_seen": last_seen[server], "metrics": metrics})
    return out


@router.get("/api/v1/monitoring/metrics")
async def monitoring_metrics(
    request: Request,
    _principal: Annotated[Principal, Depends(require_scope(Scope.READ))],
    server_id: Annotated[str, Query(description="comma list of server ids")] = "",
    lookback: Annotated[str, Query(description="how far back to look, e.g. 10m")] = "",
) -> Response:
    comps = components(request)
    now_ms = int(comps.clock() * 1000)
    window_ms = (
        parse_duration_ms(lookback) if lookback else int(comps.limits.latest_lookback_s * 1000)
    )
    ids = [s.strip() for s in server_id.split(",") if s.strip()]
    servers = await asyncio.to_thread(
        latest_per_server, comps.querier, ids, now_ms - window_ms, now_ms
    )
    # msgspec writes NaN as null where the standard library would refuse it
    body = msgspec.json.encode({"status": "success", "data": {"servers": servers}})
    return Response(body, media_type="application/json")
