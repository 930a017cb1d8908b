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
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from fastapi import APIRouter
from numpy.typing import NDArray
from starlette.requests import Request
from starlette.responses import Response

from monitoringserver.auth.api import Scope
from monitoringserver.errors import MonitoringError
from monitoringserver.ingest.decode_worker import DecodeWorker
from monitoringserver.ingest.remote_write import KeyedDecode, RemoteWriteDecoder
from monitoringserver.metrics.api import AppendResult, SeriesIdAppender
from monitoringserver.web.app import WebComponents
from monitoringserver.web.deps import components, require
from monitoringserver.web.direct_routes import DirectRoute
from monitoringserver.web.errors import error_response
from monitoringserver.web.routers.ingest_common import (
    append_counted,
    count_error,
    count_result,
    prom_ingest_options,
)

__all__ = ["RemoteWrite", "create_remote_write_router", "remote_write_router"]

_log = logging.getLogger("monitoringserver.web.remote_write")
_FORMAT = "remote_write"
_V1 = "prometheus.WriteRequest"
_V2 = "io.prometheus.write.v2.Request"
#: Bodies larger than this are decoded on a worker thread (keeps the event loop responsive).
_THREAD_BYTES = 64 * 1024
#: Most requests decoded in-process after a decode worker declined one.
_MAX_SKIP = 63


def _proto_of(content_type: str) -> str:
    """The ``proto=`` parameter of a Content-Type (1.0's message name when absent)."""
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "proto":
            return value.strip().strip('"')
    return _V1


class _StoreIds:
    """Encoded label fields of a series → its store series id, for one appender (a new
    appender starts an empty map). Learnt only for series known to exist: an id stays
    valid for the life of the open store (``SeriesIdAppender``). At most ``max_series``
    entries; it starts over when full. A decode ``worker`` gets every change too, in order,
    so its copy maps a key to the same id or not at all. Series of the worker's labelled
    replies are learnt by the worker only (it kept their keys): the map here holds what
    was decoded in-process, ``size`` counts both for the limit.

    Requests go to a ready worker unless it declined lately: after a decline the next
    ``skip`` requests (1, 3, 7, ... up to :data:`_MAX_SKIP`) decode in-process, so a sender
    whose requests the worker cannot take costs few extra round trips; an answer resets it.
    """

    def __init__(self, max_series: int, worker: DecodeWorker | None = None) -> None:
        self.max_series = max_series
        self.ids: dict[bytes, int] = {}
        self.size = 0  # entries learnt since the maps started over (here and the worker's)
        self.owner: SeriesIdAppender | None = None
        self.worker = worker
        self.skip = 0  # requests to decode in-process after the last decline
        self.skip_left = 0

    def use_worker(self) -> bool:
        """Whether this request goes to the worker (see the class docstring)."""
        if self.worker is None or not self.worker.ready:
            return False
        if self.skip_left:
            self.skip_left -= 1
            return False
        return True

    def worker_answered(self, answered: bool) -> None:
        """Record whether the worker answered the request :meth:`use_worker` sent it."""
        if answered:
            self.skip = 0
        else:
            self.skip = self.skip_left = min(2 * self.skip + 1, _MAX_SKIP)

    def for_appender(self, appender: object) -> dict[bytes, int] | None:
        """The map to decode against for ``appender`` (``None`` unless it takes ids)."""
        if appender is self.owner:
            return self.ids
        if not isinstance(appender, SeriesIdAppender):  # a Protocol check: slow, so once
            return None
        self.ids, self.owner, self.size = {}, appender, 0
        if self.worker is not None:
            self.worker.forget()
        return self.ids

    def _make_room(self, n: int) -> None:
        if self.size + n > self.max_series:
            self.ids, self.size = {}, 0
            if self.worker is not None:
                self.worker.forget()
        self.size += n

    def learn(self, keys: list[bytes], ids: NDArray[np.uint64]) -> None:
        """Learn series decoded in-process: here and in the worker."""
        self._make_room(len(keys))
        self.ids.update(zip(keys, ids.tolist(), strict=True))
        if self.worker is not None:
            self.worker.learn(keys, ids)

    def learn_reply(self, reply_id: int, ids: NDArray[np.uint64]) -> None:
        """Learn the series of the worker's labelled reply ``reply_id`` (in the worker)."""
        self._make_room(len(ids))
        if self.worker is not None:
            self.worker.learn_reply(reply_id, ids)


async def _append_ids(
    comps: WebComponents, appender: SeriesIdAppender, decoded: KeyedDecode
) -> AppendResult:
    """``append_ids`` of a request whose series were all known, counted like
    :func:`append_counted` counts a batch."""
    assert decoded.series_ids is not None
    assert decoded.ts_ms is not None
    assert decoded.values is not None
    try:
        result = await appender.append_ids(decoded.series_ids, decoded.ts_ms, decoded.values)
    except MonitoringError:
        count_error(comps, _FORMAT)
        raise
    count_result(comps, _FORMAT, result)
    return result


def create_remote_write_router(
    *, max_decoded_bytes: int, decode_worker: DecodeWorker | None = None
) -> APIRouter:
    """The router serving ``POST /api/v1/write``.

    Series the store already knows skip label work: once a request's series are stored,
    the route remembers each one's encoded label fields → store series id (when the
    appender is a :class:`SeriesIdAppender`), and a later request made only of such
    series goes to ``append_ids`` without building a label set; anything else takes the
    label path (``append``) with the same limits and errors.

    With a started ``decode_worker``, remote-write 1.0 requests are decoded in that
    process: the event loop gets store ids for known series, and for new ones their
    label sets ready to use (:mod:`~monitoringserver.ingest.decode_labels`); whatever
    it declines is decoded here, with the same results and errors."""
    router = APIRouter()
    decoder = RemoteWriteDecoder()
    store_ids = _StoreIds(decoder.max_series, decode_worker)
    if decode_worker is not None:  # one pair object per label pair, however decoded
        decode_worker.pairs_of = decoder.pairs_of

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
        if decode_worker is not None and proto == _V1:
            await decode_worker.ensure_started()  # before the first learn
        appender = comps.appender
        known = store_ids.for_appender(appender) if proto == _V1 else None
        id_appender = store_ids.owner if known is not None else None
        compressed = encoding != "identity"

        def run() -> KeyedDecode:
            if proto == _V1:
                return decoder.decode_keyed(
                    body, known, compressed=compressed, max_bytes=max_decoded_bytes
                )
            batch = decoder.decode_v2(body, compressed=compressed, max_bytes=max_decoded_bytes)
            return KeyedDecode(batch, None)

        decoded: KeyedDecode | None = None
        if known is not None and decode_worker is not None and store_ids.use_worker():
            decoded = await decode_worker.decode(
                body, compressed=compressed, max_bytes=max_decoded_bytes
            )
            store_ids.worker_answered(decoded is not None)
        if decoded is None:
            try:
                decoded = await asyncio.to_thread(run) if len(body) > _THREAD_BYTES else run()
            except MonitoringError:
                count_error(comps, _FORMAT)
                raise
        if decoded.batch is None:
            assert id_appender is not None
            result = await _append_ids(comps, id_appender, decoded)
        else:
            source = request.client.host if request.client else _FORMAT
            result = await append_counted(comps, decoded.batch, fmt=_FORMAT, source=source)
            if (
                id_appender is not None
                and (decoded.keys is not None or decoded.reply_id is not None)
                and not result.rejected
                and len(decoded.batch)
                and store_ids.owner is id_appender
            ):
                # Every series of the batch is stored now: these are lookups, no creation.
                # Learning is optional: a store that began closing meanwhile is no error.
                with contextlib.suppress(MonitoringError):
                    ids = id_appender.resolve_series(decoded.batch.series, source=source)
                    if decoded.keys is not None:
                        store_ids.learn(decoded.keys, ids)
                    elif decoded.reply_id is not None:
                        store_ids.learn_reply(decoded.reply_id, ids)
        if proto == _V2:
            return Response(status_code=204, headers=_v2_headers(result.accepted))
        return Response(status_code=204)

    # A direct route: one dict lookup ahead of FastAPI's route scan (``write`` checks the
    # scope itself and raises only project errors).
    router.routes.append(DirectRoute("/api/v1/write", write, methods=["POST"]))
    return router


def _v2_headers(accepted: int) -> dict[str, str]:
    return {
        "X-Prometheus-Remote-Write-Samples-Written": str(accepted),
        "X-Prometheus-Remote-Write-Histograms-Written": "0",
        "X-Prometheus-Remote-Write-Exemplars-Written": "0",
    }


def remote_write_router(server: object) -> APIRouter:
    """Factory for ``Server.router_factories`` (reads ``config.prometheus_ingest``);
    decodes in-process (:class:`RemoteWrite` adds the decode worker)."""
    opts = prom_ingest_options(server)
    return create_remote_write_router(max_decoded_bytes=opts.remote_write_max_decoded_bytes)


class RemoteWrite:
    """The remote-write route and, when ``prometheus_ingest.remote_write_decode_worker``
    is on, its decode worker process: :meth:`router` for ``Server.router_factories``,
    :meth:`service` (``(name, run, stop)``) for ``Server.service_factories``. The route
    spawns the worker on the first remote write (a failure is logged and decoding stays
    in-process); ``run`` waits, ``stop`` closes the worker and waits for it to exit."""

    def __init__(self) -> None:
        self.worker: DecodeWorker | None = None
        self._stopped = asyncio.Event()

    def router(self, server: object) -> APIRouter:
        opts = prom_ingest_options(server)
        if opts.remote_write_decode_worker:
            self.worker = DecodeWorker()
        return create_remote_write_router(
            max_decoded_bytes=opts.remote_write_max_decoded_bytes, decode_worker=self.worker
        )

    def service(
        self, _server: object
    ) -> tuple[
        str, Callable[[], Coroutine[Any, Any, None]], Callable[[], Coroutine[Any, Any, None]]
    ]:
        return "remote-write-decode", self._run, self._stop

    async def _run(self) -> None:
        if self.worker is not None:  # the route spawns it on the first request
            await self._stopped.wait()

    async def _stop(self) -> None:
        self._stopped.set()
        if self.worker is not None:
            await self.worker.aclose()
