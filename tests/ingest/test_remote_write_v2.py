"""Remote write 2.0: symbols, label references, content negotiation, written headers."""

from __future__ import annotations

import struct

import cramjam
import pytest

from monitoringserver.errors import BadDataError
from monitoringserver.ingest.remote_write import RemoteWriteDecoder
from monitoringserver.model.samples import STALE_NAN, is_stale_nan
from monitoringserver.proto.prompb import write_v2_pb2
from monitoringserver.web.routers.remote_write import remote_write_router
from tests.ingest.promhelp import NOW_S, prom_web

V2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
NOW_MS = int(NOW_S * 1000)


def request_v2(
    series: list[tuple[list[int], list[tuple[int, float]]]],
    symbols: list[str] | None = None,
) -> bytes:
    req = write_v2_pb2.Request()
    req.symbols.extend(symbols or ["", "__name__", "up", "job", "a", "b"])
    for refs, samples in series:
        ts = req.timeseries.add()
        ts.labels_refs.extend(refs)
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
        ts.metadata.type = 2
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def test_decode_symbols_and_samples() -> None:
    body = request_v2([([1, 2, 3, 4], [(1, 1.0), (2, STALE_NAN)]), ([1, 2, 3, 5], [(3, 0.0)])])
    batch = RemoteWriteDecoder().decode_v2(body)
    assert list(batch.series) == [
        (("__name__", "up"), ("job", "a")),
        (("__name__", "up"), ("job", "b")),
    ]
    assert batch.ts_ms.tolist() == [1, 2, 3]
    assert is_stale_nan(batch.values).tolist() == [False, True, False]


def test_decode_histogram_only_series_is_skipped_and_slow_path() -> None:
    req = write_v2_pb2.Request()
    req.symbols.extend(["", "__name__", "h"])
    ts = req.timeseries.add()
    ts.labels_refs.extend([1, 2])
    ts.histograms.append(b"\x08\x01")
    body = bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
    assert len(RemoteWriteDecoder().decode_v2(body)) == 0
    raw = write_v2_pb2.RequestRaw()
    raw.symbols.extend(["", "__name__", "m"])
    series = raw.timeseries.add()
    series.labels_refs.extend([1, 2])
    series.samples.append(b"\x10\x07\x09" + struct.pack("<d", 4.5))  # fields reversed
    batch = RemoteWriteDecoder().decode_v2(raw.SerializeToString(), compressed=False)
    assert list(batch.rows()) == [((("__name__", "m"),), 7, 4.5)]


@pytest.mark.parametrize(
    ("refs", "message"),
    [([1, 2, 3], "odd length"), ([1, 99], "outside symbols"), ([3, 4], "metric name")],
)
def test_decode_errors(refs: list[int], message: str) -> None:
    with pytest.raises(BadDataError, match=message):
        RemoteWriteDecoder().decode_v2(request_v2([(refs, [(1, 1.0)])]))
    with pytest.raises(BadDataError, match="invalid protobuf"):
        RemoteWriteDecoder().decode_v2(b"\x0a\x05\xff", compressed=False)


async def test_route_negotiates_v2_and_reports_written() -> None:
    async with prom_web([remote_write_router(object())]) as w:
        body = request_v2([([1, 2, 3, 4], [(NOW_MS, 1.0), (NOW_MS + 1000, 2.0)])])
        r = await w.client.post(
            "/api/v1/write",
            content=body,
            headers={**w.write, "Content-Type": V2, "Content-Encoding": "snappy"},
        )
        assert r.status_code == 204, r.text
        assert r.headers["x-prometheus-remote-write-samples-written"] == "2"
        assert r.headers["x-prometheus-remote-write-histograms-written"] == "0"
        (series,) = w.store.select([], 0, 2**62)
        assert series.values.tolist() == [1.0, 2.0]
        r = await w.client.post(
            "/api/v1/write",
            content=body,
            headers={**w.write, "Content-Type": "application/x-protobuf;proto=foo.Bar"},
        )
        assert r.status_code == 415
        assert r.json()["error"].startswith("cannot parse remote write body: unsupported")
