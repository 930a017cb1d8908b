"""``POST /api/v1/write``: Prometheus remote write 1.0 (``monitoring:write``).

Answers 204 when the request was stored (samples outside the store's time window are
dropped and counted, as Prometheus does), 400 ``cannot parse remote write body: ...`` for
a body that cannot be decoded (the sender drops it), 413 when it is too large, and
429/503 with ``Retry-After`` when the store is overloaded or stopping (the sender retries).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from monitoringserver.auth.api import Scope
from monitoringserver.errors import MonitoringError
from monitoringserver.ingest.remote_write import RemoteWriteDecoder
from monitoringserver.web.deps import components, require
from monitoringserver.web.routers.ingest_common import (
    append_counted,
    count_error,
    prom_ingest_options,
)

__all__ = ["create_remote_write_router", "remote_write_router"]

_FORMAT = "remote_write"
#: Bodies larger than this are decoded on a worker thread (keeps the event loop responsive).
_THREAD_BYTES = 64 * 1024


def create_remote_write_router(*, max_decoded_bytes: int) -> APIRouter:
    """The router serving ``POST /api/v1/write``."""
    router = APIRouter()
    decoder = RemoteWriteDecoder()

    async def write(request: Request) -> Response:
        require(request, Scope.WRITE)
        comps = components(request)
        body = await request.body()
        encoding = request.headers.get("content-encoding", "snappy").strip().lower()
        compressed = encoding != "identity"
        try:
            if len(body) > _THREAD_BYTES:
                batch = await asyncio.to_thread(
                    decoder.decode,
                    body,
                    compressed=compressed,
                    max_bytes=max_decoded_bytes,
                )
            else:
                batch = decoder.decode(body, compressed=compressed, max_bytes=max_decoded_bytes)
        except MonitoringError:
            count_error(comps, _FORMAT)
            raise
        source = request.client.host if request.client else _FORMAT
        await append_counted(comps, batch, fmt=_FORMAT, source=source)
        return Response(status_code=204)

    router.add_route("/api/v1/write", write, methods=["POST"], include_in_schema=False)
    return router


def remote_write_router(server: object) -> APIRouter:
    """Factory for ``Server.router_factories`` (reads ``config.prometheus_ingest``)."""
    opts = prom_ingest_options(server)
    return create_remote_write_router(max_decoded_bytes=opts.remote_write_max_decoded_bytes)
