"""``POST /api/v1/write``: Prometheus remote write 1.0 and 2.0 (``monitoring:write``).

The message is chosen by ``Content-Type``: ``application/x-protobuf`` (or with
``;proto=prometheus.WriteRequest``) is 1.0, ``;proto=io.prometheus.write.v2.Request`` is
2.0 (answered with the ``X-Prometheus-Remote-Write-{Samples,Histograms,Exemplars}-Written``
headers); any other ``proto=`` is a 415.

Answers 204 when the request was stored (samples outside the store's time window are
dropped and counted, as Prometheus does), 400 ``cannot parse remote write body: ...`` for
a body that cannot be decoded (the sender drops it), 413 when it is too large, and
429/503 with ``Retry-After`` when the store is overloaded or stopping (the sender retries).
"""

from __future__ import annotations

import asyncio
import functools

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from monitoringserver.auth.api import Scope
from monitoringserver.errors import MonitoringError
from monitoringserver.ingest.remote_write import RemoteWriteDecoder
from monitoringserver.web.deps import components, require
from monitoringserver.web.errors import error_response
from monitoringserver.web.routers.ingest_common import (
    append_counted,
    count_error,
    prom_ingest_options,
)

__all__ = ["create_remote_write_router", "remote_write_router"]

_FORMAT = "remote_write"
_V1 = "prometheus.WriteRequest"
_V2 = "io.prometheus.write.v2.Request"
#: Bodies larger than this are decoded on a worker thread (keeps the event loop responsive).
_THREAD_BYTES = 64 * 1024


def _proto_of(content_type: str) -> str:
    """The ``proto=`` parameter of a Content-Type (1.0's message name when absent)."""
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "proto":
            return value.strip().strip('"')
    return _V1


def create_remote_write_router(*, max_decoded_bytes: int) -> APIRouter:
    """The router serving ``POST /api/v1/write``."""
    router = APIRouter()
    decoder = RemoteWriteDecoder()

    async def write(request: Request) -> Response:
        require(request, Scope.WRITE)
        comps = components(request)
        proto = _proto_of(request.headers.get("content-type", ""))
        if proto not in (_V1, _V2):
            count_error(comps, _FORMAT)
            return error_response(
                415,
                "bad_data",
                f"cannot parse remote write body: unsupported Content-Type proto={proto!r} "
                f"(supported: {_V1}, {_V2})",
            )
        body = await request.body()
        encoding = request.headers.get("content-encoding", "snappy").strip().lower()
        decode = decoder.decode if proto == _V1 else decoder.decode_v2
        run = functools.partial(
            decode, body, compressed=encoding != "identity", max_bytes=max_decoded_bytes
        )
        try:
            batch = await asyncio.to_thread(run) if len(body) > _THREAD_BYTES else run()
        except MonitoringError:
            count_error(comps, _FORMAT)
            raise
        source = request.client.host if request.client else _FORMAT
        result = await append_counted(comps, batch, fmt=_FORMAT, source=source)
        headers = {}
        if proto == _V2:
            headers = {
                "X-Prometheus-Remote-Write-Samples-Written": str(result.accepted),
                "X-Prometheus-Remote-Write-Histograms-Written": "0",
                "X-Prometheus-Remote-Write-Exemplars-Written": "0",
            }
        return Response(status_code=204, headers=headers)

    router.add_route("/api/v1/write", write, methods=["POST"], include_in_schema=False)
    return router


def remote_write_router(server: object) -> APIRouter:
    """Factory for ``Server.router_factories`` (reads ``config.prometheus_ingest``)."""
    opts = prom_ingest_options(server)
    return create_remote_write_router(max_decoded_bytes=opts.remote_write_max_decoded_bytes)
