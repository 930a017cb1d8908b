"""/api/v1/write over a real metric store: known series go by store id (``append_ids``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cramjam
import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry

from monitoringserver.auth.tokens import TokenStore
from monitoringserver.errors import UnavailableError
from monitoringserver.ingest.remote_write import RemoteWriteDecoder
from monitoringserver.metrics.api import AppendResult, DedupKey
from monitoringserver.model.labels import Labels
from monitoringserver.model.samples import STALE_NAN, SampleBatch, is_stale_nan
from monitoringserver.pipeline.metric_store import MetricStoreHandle, open_metric_store
from monitoringserver.pipeline.metric_writer import MetricWriter
from monitoringserver.proto.prompb import remote_pb2
from monitoringserver.storage.db import Database
from monitoringserver.storage.options import StorageOptions
from monitoringserver.web.app import WebComponents, create_app
from monitoringserver.web.routers.remote_write import create_remote_write_router
from tests.ingest.promhelp import write_request

NOW_S = 1_750_000_000.0
NOW_MS = int(NOW_S * 1000)
UP = (("__name__", "up"), ("job", "a"))
CPU = (("__name__", "cpu"), ("instance", "h1"), ("mode", "idle"))
MEM = (("__name__", "mem"), ("instance", "h1"))


class CountingWriter:
    """A :class:`MetricWriter` facade that counts which append method each request used."""

    def __init__(self, writer: MetricWriter) -> None:
        self.writer = writer
        self.calls: list[str] = []

    async def append(
        self, batch: SampleBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> AppendResult:
        self.calls.append("append")
        return await self.writer.append(batch, source=source, dedup=dedup)

    def resolve_series(self, series: Sequence[Labels], *, source: str = "") -> NDArray[np.uint64]:
        self.calls.append("resolve")
        return self.writer.resolve_series(series, source=source)

    async def append_ids(
        self,
        series_ids: NDArray[np.uint64],
        ts_ms: NDArray[np.int64],
        values: NDArray[np.float64],
        *,
        source: str = "",
        dedup: DedupKey | None = None,
    ) -> AppendResult:
        self.calls.append("append_ids")
        return await self.writer.append_ids(series_ids, ts_ms, values, source=source, dedup=dedup)


@dataclass
class Env:
    client: httpx.AsyncClient
    handle: MetricStoreHandle
    comps: WebComponents
    appender: CountingWriter
    headers: dict[str, str]


@asynccontextmanager
async def env(tmp_path: Path, **options: Any) -> AsyncIterator[Env]:
    handle = await open_metric_store(
        tmp_path / "data",
        StorageOptions(**options),
        registry=CollectorRegistry(),
        clock=lambda: NOW_S,
    )
    db = Database(":memory:")
    tokens = TokenStore(db)
    tokens.open()
    writer = handle.writer
    counting = CountingWriter(writer)
    comps = WebComponents(
        appender=counting,
        querier=handle.querier,
        tokens=tokens,
        registry=CollectorRegistry(),
        auth_enabled=True,
    )
    app = create_app(comps, [create_remote_write_router(max_decoded_bytes=1 << 20)])
    token = tokens.create("w", ["monitoring:write"])[1]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Env(client, handle, comps, counting, {"Authorization": f"Bearer {token}"})
    finally:
        await handle.aclose()
        db.close()


async def _post(e: Env, body: bytes) -> httpx.Response:
    return await e.client.post("/api/v1/write", content=body, headers=e.headers)


async def _samples(e: Env) -> dict[Labels, list[tuple[int, float]]]:
    await e.handle.writer.commit_pending()
    found = e.handle.querier.select([], 0, NOW_MS * 2)
    return {
        s.labels: list(zip(s.ts_ms.tolist(), np.asarray(s.values).tolist(), strict=True))
        for s in found
    }


async def test_known_series_go_by_id_with_the_same_store_semantics(tmp_path: Path) -> None:
    async with env(tmp_path) as e:
        first = write_request([(UP, [(NOW_MS, 1.0), (NOW_MS - 5000, 0.0)]), (CPU, [(NOW_MS, 2.0)])])
        assert (await _post(e, first)).status_code == 204
        assert e.appender.calls == ["append", "resolve"]
        # Same series again: out of order, a duplicate timestamp and a stale marker.
        again = write_request(
            [(CPU, [(NOW_MS - 1000, 3.0)]), (UP, [(NOW_MS, 7.0), (NOW_MS + 1000, STALE_NAN)])]
        )
        assert (await _post(e, again)).status_code == 204
        assert e.appender.calls[2:] == ["append_ids"]
        data = await _samples(e)
        assert data[UP][:2] == [(NOW_MS - 5000, 0.0), (NOW_MS, 7.0)]
        assert data[UP][2][0] == NOW_MS + 1000
        assert is_stale_nan(np.array([data[UP][2][1]]))[0]
        assert data[CPU] == [(NOW_MS - 1000, 3.0), (NOW_MS, 2.0)]
        counted = e.comps.registry.get_sample_value(
            "monitoring_ingest_samples_total", {"format": "remote_write"}
        )
        assert counted == 6


async def test_a_new_series_takes_the_label_path_and_the_limits(tmp_path: Path) -> None:
    async with env(tmp_path, max_series=2) as e:
        assert (await _post(e, write_request([(UP, [(NOW_MS, 1.0)])]))).status_code == 204
        mixed = write_request([(UP, [(NOW_MS + 1, 1.0)]), (CPU, [(NOW_MS, 1.0)])])
        assert (await _post(e, mixed)).status_code == 204
        assert e.appender.calls == ["append", "resolve", "append", "resolve"]
        over = write_request([(UP, [(NOW_MS + 2, 1.0)]), (MEM, [(NOW_MS, 1.0)])])
        r = await _post(e, over)
        assert r.status_code == 429
        assert r.json()["error"].startswith("cannot create 1 series")
        assert MEM not in (await _samples(e))
        # Known series still go by id after the refusal.
        known = write_request([(CPU, [(NOW_MS + 3, 4.0)]), (UP, [(NOW_MS + 3, 5.0)])])
        assert (await _post(e, known)).status_code == 204
        assert e.appender.calls[-1] == "append_ids"


async def test_rejected_samples_are_not_learnt_and_create_no_series(tmp_path: Path) -> None:
    async with env(tmp_path, max_sample_age_s=3600) as e:
        old = NOW_MS - 7200 * 1000
        body = write_request([(UP, [(old, 1.0)]), (CPU, [(NOW_MS, 1.0)])])
        assert (await _post(e, body)).status_code == 204
        assert e.appender.calls == ["append"]  # something was refused: nothing learnt
        assert set(await _samples(e)) == {CPU}
        assert len(e.handle.querier.series([], 0, NOW_MS * 2)) == 1
        # The old sample again: still refused, still no series, counted as rejected.
        assert (await _post(e, write_request([(UP, [(old, 1.0)])]))).status_code == 204
        assert set(await _samples(e)) == {CPU}
        rejected = e.comps.registry.get_sample_value(
            "monitoring_ingest_rejected_samples_total",
            {"format": "remote_write", "reason": "too_old"},
        )
        assert rejected == 2


async def test_a_known_series_with_a_rejected_sample_keeps_the_window(tmp_path: Path) -> None:
    async with env(tmp_path, max_sample_age_s=3600) as e:
        assert (await _post(e, write_request([(UP, [(NOW_MS, 1.0)])]))).status_code == 204
        future = NOW_MS + 3600 * 1000
        body = write_request([(UP, [(NOW_MS + 1, 2.0), (future, 3.0)])])
        assert (await _post(e, body)).status_code == 204
        assert e.appender.calls[-1] == "append_ids"
        assert (await _samples(e))[UP] == [(NOW_MS, 1.0), (NOW_MS + 1, 2.0)]


async def test_a_new_appender_starts_an_empty_id_map(tmp_path: Path) -> None:
    async with env(tmp_path) as e:
        body = write_request([(UP, [(NOW_MS, 1.0)])])
        assert (await _post(e, body)).status_code == 204
        other = CountingWriter(e.appender.writer)
        e.comps.appender = other
        assert (await _post(e, write_request([(UP, [(NOW_MS + 1, 1.0)])]))).status_code == 204
        assert other.calls == ["append", "resolve"]


def test_decode_keyed_shapes() -> None:
    decoder = RemoteWriteDecoder()
    body = write_request([(UP, [(NOW_MS, 1.0), (NOW_MS + 1, 2.0)]), (CPU, [(NOW_MS, 3.0)])])
    miss = decoder.decode_keyed(body, {})
    assert miss.batch is not None
    assert miss.keys is not None
    assert [dict(s)["__name__"] for s in miss.batch.series] == ["up", "cpu"]
    known = dict(zip(miss.keys, [7, 9], strict=True))
    hit = decoder.decode_keyed(body, known)
    assert hit.batch is None
    assert hit.series_ids is not None
    assert hit.ts_ms is not None
    assert hit.values is not None
    assert hit.series_ids.tolist() == [7, 7, 9]
    assert hit.ts_ms.tolist() == [NOW_MS, NOW_MS + 1, NOW_MS]
    assert hit.values.tolist() == [1.0, 2.0, 3.0]
    partial = decoder.decode_keyed(body, {miss.keys[0]: 7})
    assert partial.batch is not None
    assert partial.series_ids is None


@pytest.mark.parametrize("layout", ["histogram_after_samples", "uncompressed_identity"])
def test_decode_keyed_without_keys_for_other_layouts(layout: str) -> None:
    req = remote_pb2.WriteRequest()
    ts = req.timeseries.add()
    for name, value in UP:
        ts.labels.add(name=name, value=value)
    ts.samples.add(timestamp=NOW_MS, value=1.0)
    if layout == "histogram_after_samples":
        ts.exemplars.add(value=1.0, timestamp=NOW_MS)
    raw = req.SerializeToString()
    decoder = RemoteWriteDecoder()
    if layout == "uncompressed_identity":
        decoded = decoder.decode_keyed(raw, {}, compressed=False)
        assert decoded.keys is not None
    else:
        decoded = decoder.decode_keyed(bytes(cramjam.snappy.compress_raw(raw)), {})
        assert decoded.keys is None
    assert decoded.batch is not None
    assert decoded.batch.values.tolist() == [1.0]


async def test_the_direct_route_leaves_other_methods_to_routing(tmp_path: Path) -> None:
    async with env(tmp_path) as e:
        r = await e.client.get("/api/v1/write", headers=e.headers)
        assert r.status_code == 405
        assert r.json()["errorType"] == "method_not_allowed"
        assert (await _post(e, write_request([(UP, [(NOW_MS, 1.0)])]))).status_code == 204
        observed = e.comps.registry.get_sample_value(
            "monitoring_http_request_duration_seconds_count",
            {"method": "POST", "route": "/api/v1/write", "code": "204"},
        )
        assert observed == 1


class ClosingWriter(CountingWriter):
    """Begins closing between the append and the id lookup that follows it."""

    def resolve_series(self, series: Sequence[Labels], *, source: str = "") -> NDArray[np.uint64]:
        self.calls.append("resolve")
        raise UnavailableError("cannot resolve series: the metric store is shutting down")


async def test_an_acknowledged_request_is_not_failed_by_the_id_lookup(tmp_path: Path) -> None:
    async with env(tmp_path) as e:
        closing = ClosingWriter(e.appender.writer)
        e.comps.appender = closing
        body = write_request([(UP, [(NOW_MS, 1.0)])])
        assert (await _post(e, body)).status_code == 204
        assert (await _post(e, body)).status_code == 204  # nothing learnt: labels again
        assert closing.calls == ["append", "resolve", "append", "resolve"]
        assert (await _samples(e))[UP] == [(NOW_MS, 1.0)]
