"""Remote write 1.0 decoding and the /api/v1/write route (over the in-memory store)."""

from __future__ import annotations

import math
import struct

import cramjam
import numpy as np
import pytest

from monitoringserver.errors import BadDataError, PayloadTooLargeError
from monitoringserver.ingest.remote_write import RemoteWriteDecoder, decode_write_request
from monitoringserver.model.samples import STALE_NAN, is_stale_nan
from monitoringserver.proto.prompb import remote_pb2
from monitoringserver.web.routers.remote_write import (
    create_remote_write_router,
    remote_write_router,
)
from tests.ingest.promhelp import prom_web, write_request

UP = (("__name__", "up"), ("job", "a"))
CPU = (("__name__", "cpu"), ("instance", "h1"), ("mode", "idle"))


def test_decode_columns_and_stale_marker() -> None:
    body = write_request([(UP, [(1000, 1.0), (2000, STALE_NAN)]), (CPU, [(1500, 3.5)])])
    batch = decode_write_request(body)
    assert list(batch.series) == [UP, CPU]
    assert batch.series_idx.tolist() == [0, 0, 1]
    assert batch.ts_ms.tolist() == [1000, 2000, 1500]
    assert batch.values[0] == 1.0
    assert batch.values[2] == 3.5
    assert is_stale_nan(batch.values).tolist() == [False, True, False]


def test_decode_sorts_labels_drops_empty_and_merges_same_series() -> None:
    labels = (("job", "x"), ("__name__", "m"), ("empty", ""))
    body = write_request([(labels, [(1, 1.0)]), ((("__name__", "m"), ("job", "x")), [(2, 2.0)])])
    batch = decode_write_request(body)
    assert list(batch.series) == [(("__name__", "m"), ("job", "x"))]
    assert batch.series_idx.tolist() == [0, 0]


def test_decode_empty_and_sampleless_series() -> None:
    assert len(decode_write_request(write_request([]))) == 0
    assert len(decode_write_request(write_request([(UP, [])]))) == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff\xff\xff\xff\xff\xff", "invalid snappy data"),
        (bytes(cramjam.snappy.compress_raw(b"\x0a\x05\xff\xff")), "invalid protobuf"),
        (write_request([((("__name__", "m"), ("bad-name", "x")), [(1, 1.0)])]), "label name"),
        (write_request([((("job", "x"),), [(1, 1.0)])]), "without a metric name"),
        (write_request([((("__name__", "m"), ("a", "1"), ("a", "2")), [(1, 1.0)])]), "duplicate"),
    ],
)
def test_decode_errors(body: bytes, message: str) -> None:
    with pytest.raises(BadDataError, match=f"cannot parse remote write body: .*{message}"):
        decode_write_request(body)


def test_decode_size_limit_and_uncompressed() -> None:
    body = write_request([(UP, [(i, float(i)) for i in range(100)])])
    with pytest.raises(PayloadTooLargeError, match="over the limit"):
        decode_write_request(body, max_bytes=10)
    raw = bytes(cramjam.snappy.decompress_raw(body))
    assert len(decode_write_request(raw, compressed=False)) == 100


def test_decode_ignores_metadata_and_exemplars() -> None:
    req = remote_pb2.WriteRequest()
    ts = req.timeseries.add()
    ts.labels.add(name="__name__", value="m")
    ts.samples.add(timestamp=5, value=-math.inf)
    ex = ts.exemplars.add(value=1.0, timestamp=5)
    ex.labels.add(name="trace_id", value="t")
    req.metadata.add(type=1, metric_family_name="m", help="h")
    batch = decode_write_request(bytes(cramjam.snappy.compress_raw(req.SerializeToString())))
    assert batch.values.tolist() == [-math.inf]


async def test_route_stores_out_of_order_and_duplicates_last_write_wins() -> None:
    now_ms = 1_750_000_000_000
    async with prom_web([create_remote_write_router(max_decoded_bytes=1 << 20)]) as w:
        first = write_request([(UP, [(now_ms, 1.0), (now_ms - 5000, 0.0)])])
        second = write_request([(UP, [(now_ms, 7.0), (now_ms + 1000, STALE_NAN)])])
        for body in (first, second):
            r = await w.client.post(
                "/api/v1/write",
                content=body,
                headers={**w.write, "Content-Encoding": "snappy"},
            )
            assert r.status_code == 204, r.text
        (series,) = w.store.select([], 0, now_ms * 2)
        assert series.ts_ms.tolist() == [now_ms - 5000, now_ms, now_ms + 1000]
        assert series.values[:2].tolist() == [0.0, 7.0]
        assert is_stale_nan(np.asarray(series.values))[2]


async def test_route_errors_and_auth() -> None:
    async with prom_web([remote_write_router(object())]) as w:
        r = await w.client.post("/api/v1/write", content=b"\xff\xff\xff", headers=w.write)
        assert r.status_code == 400
        assert r.json()["error"].startswith("cannot parse remote write body: ")
        r = await w.client.post("/api/v1/write", content=write_request([]), headers=w.read)
        assert r.status_code == 403
        r = await w.client.post("/api/v1/write", content=write_request([]))
        assert r.status_code == 401
        w.store.overloaded = True
        body = write_request([(UP, [(1_750_000_000_000, 1.0)])])
        r = await w.client.post("/api/v1/write", content=body, headers=w.write)
        assert r.status_code == 429
        assert "retry-after" in r.headers
        counted = w.components.registry.get_sample_value(
            "monitoring_ingest_requests_total", {"format": "remote_write", "outcome": "error"}
        )
        assert counted == 2


async def test_route_large_body_decodes_on_thread() -> None:
    now_ms = 1_750_000_000_000
    series = [
        ((("__name__", "m"), ("i", str(i))), [(now_ms + j, float(j) * 1.37 + i) for j in range(60)])
        for i in range(2000)
    ]
    async with prom_web([create_remote_write_router(max_decoded_bytes=1 << 24)]) as w:
        body = write_request(series)
        assert len(body) > 64 * 1024
        r = await w.client.post("/api/v1/write", content=body, headers=w.write)
        assert r.status_code == 204
        assert len(w.store.series([], 0, now_ms * 2)) == 2000


def _raw_body(samples: list[bytes]) -> bytes:
    req = remote_pb2.WriteRequestRaw()
    ts = req.timeseries.add()
    ts.labels.append(remote_pb2.Label(name="__name__", value="m").SerializeToString())
    ts.samples.extend(samples)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


@pytest.mark.parametrize(
    "samples",
    [
        # zero value and zero timestamp are omitted on the wire (proto3 defaults)
        [(0, 0.0), (-5, 1.5), (2**62, -2.5), (1, 0.0), (0, 7.0)],
        [(t, float(t % 3)) for t in range(1_700_000_000_000, 1_700_000_000_100)],
    ],
)
def test_fast_path_edge_values(samples: list[tuple[int, float]]) -> None:
    body = write_request([(UP, samples)])
    batch = decode_write_request(body)
    assert list(zip(batch.ts_ms.tolist(), batch.values.tolist(), strict=True)) == samples


def test_unusual_sample_layout_falls_back_to_protobuf_runtime() -> None:
    value = struct.pack("<d", 2.5)
    reversed_fields = b"\x10\x05\x09" + value  # timestamp before value: valid protobuf
    normal = b"\x09" + value + b"\x10\x06"
    batch = decode_write_request(_raw_body([normal, reversed_fields]))
    assert batch.ts_ms.tolist() == [6, 5]
    assert batch.values.tolist() == [2.5, 2.5]
    with pytest.raises(BadDataError, match="invalid protobuf"):
        decode_write_request(_raw_body([b"\x09\x00"]))


def test_decoder_caches_label_sets_across_requests_and_resets() -> None:
    decoder = RemoteWriteDecoder(max_series=1)
    a = decoder.decode(write_request([(UP, [(1, 1.0)])]))
    b = decoder.decode(write_request([(UP, [(2, 2.0)])]))
    assert a.series[0] is b.series[0]
    c = decoder.decode(write_request([(CPU, [(3, 3.0)])]))
    assert list(c.series) == [CPU]
    assert len(decoder._cache) == 1
    with pytest.raises(BadDataError, match="label name"):
        decoder.decode(write_request([((("__name__", "m"), ("a-b", "x")), [(1, 1.0)])]))


def _sample(ts: int, value: float) -> bytes:
    return remote_pb2.Sample(timestamp=ts, value=value).SerializeToString()


@pytest.mark.parametrize(
    ("samples", "lengths"),
    [
        # every sample 16 bytes (6-byte varint timestamps): the fixed-width path
        ([(1_700_000_000_000 + i, v) for i, v in enumerate([0.5, -1.0, math.inf, 1e300])], {16}),
        # 16 bytes on average but mixed (5- and 7-byte varints): the general path
        ([(2**34, 1.5), (2**43, 2.5)], {15, 17}),
    ],
)
def test_fixed_width_and_mixed_samples_decode_alike(
    samples: list[tuple[int, float]], lengths: set[int]
) -> None:
    chunks = [_sample(t, v) for t, v in samples]
    assert {len(c) for c in chunks} == lengths
    batch = decode_write_request(_raw_body(chunks))
    assert list(zip(batch.ts_ms.tolist(), batch.values.tolist(), strict=True)) == samples


def test_fixed_width_keeps_nan_bits_and_rejects_other_16_byte_layouts() -> None:
    ts = 1_700_000_000_000
    batch = decode_write_request(_raw_body([_sample(ts, STALE_NAN), _sample(ts + 1, math.nan)]))
    assert is_stale_nan(batch.values).tolist() == [True, False]
    assert math.isnan(batch.values[1])
    # Same 16 bytes, fields swapped: valid protobuf the fixed-width path must not misread.
    swapped = _sample(ts, 0.0) + b"\x09" + struct.pack("<d", 4.0)
    assert len(swapped) == 16
    batch = decode_write_request(_raw_body([swapped, _sample(ts + 2, 3.0)]))
    assert batch.ts_ms.tolist() == [ts, ts + 2]
    assert batch.values.tolist() == [4.0, 3.0]


def test_decoder_shares_label_pairs_and_the_index_adopts_them() -> None:
    from monitoringserver.metrics.index import SeriesIndex

    a = (("__name__", "cpu"), ("instance", "h1"), ("mode", "idle"))
    b = (("__name__", "cpu"), ("instance", "h1"), ("mode", "user"))
    decoder = RemoteWriteDecoder()
    first = decoder.decode(write_request([(a, [(1, 1.0)]), (b, [(1, 2.0)])]))
    assert list(first.series) == [a, b]
    assert first.series[0][1] is first.series[1][1]  # one ("instance", "h1") object
    index = SeriesIndex()
    ids, created = index.resolve(first.series, "src")
    assert ids.tolist() == [0, 1]
    assert created[0].labels is first.series[0]  # adopted, not copied
    # A label set equal to a known one but built elsewhere maps to the shared objects.
    again, created = index.resolve([tuple((n, v) for n, v in a)], "src")
    assert again.tolist() == [0]
    assert created == []
    fresh = tuple((str(n), str(v)) for n, v in (*a[:2], ("mode", "system")))
    _, created = index.resolve([fresh], "src")
    assert created[0].labels == fresh
    assert created[0].labels is not fresh
    assert created[0].labels[1] is first.series[0][1]  # the shared pair, not a copy
    with pytest.raises(BadDataError, match="invalid label name"):
        decoder.decode(write_request([((("__name__", "x"), ("bad-name", "v")), [(1, 1.0)])]))
