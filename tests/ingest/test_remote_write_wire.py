"""The vectorised WriteRequest split agrees with the protobuf runtime, or declines."""

from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest

from monitoringserver.errors import BadDataError
from monitoringserver.ingest.remote_write import RemoteWriteDecoder, _decode_slow
from monitoringserver.ingest.rw_wire import WireSplit, _split_walk, split_write_request
from monitoringserver.model.labels import Labels
from monitoringserver.model.samples import STALE_NAN
from monitoringserver.proto.prompb import remote_pb2

T = 1_700_000_000_000
UP = (("__name__", "up"), ("job", "a"))


def request(series: list[tuple[Labels, list[tuple[int, float]]]]) -> bytes:
    req = remote_pb2.WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for name, value in labels:
            ts.labels.add(name=name, value=value)
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
    return req.SerializeToString()


def rows(raw: bytes, decoder: RemoteWriteDecoder) -> list[tuple[Labels, int, int]]:
    """``(labels, ts, value bits)`` per sample, as ``decoder`` reads ``raw``."""
    batch = decoder.decode(raw, compressed=False)
    bits = batch.values.view(np.uint64).tolist()
    return [
        (batch.series[i], t, b)
        for i, t, b in zip(batch.series_idx.tolist(), batch.ts_ms.tolist(), bits, strict=True)
    ]


def reference(raw: bytes) -> list[tuple[Labels, int, int]]:
    batch = _decode_slow(raw)
    bits = batch.values.view(np.uint64).tolist()
    return [
        (batch.series[i], t, b)
        for i, t, b in zip(batch.series_idx.tolist(), batch.ts_ms.tolist(), bits, strict=True)
    ]


# A float whose bytes contain what looks like the start of a sample field.
TRICKY = struct.unpack("<d", b"\x01\x12\x10\x09\x02\x03\x04\x40")[0]


@pytest.mark.parametrize("seed", range(8))
def test_random_requests_split_like_the_protobuf_runtime(seed: int) -> None:
    rng = random.Random(seed)
    pool = [0.0, 1.0, -2.5, math.inf, math.nan, STALE_NAN, TRICKY, 1e-300, 12.0]
    series: list[tuple[Labels, list[tuple[int, float]]]] = []
    for s in range(rng.randint(1, 40)):
        labels = (("__name__", f"m{s % 3}"), ("i", str(s)), ("job", rng.choice(["a", "b"])))
        samples = [(T + rng.randint(0, 10**9), rng.choice(pool)) for _ in range(rng.randint(1, 30))]
        series.append((labels, samples))
    raw = request(series)
    split = split_write_request(raw)
    assert split is not None
    assert split.counts.tolist() == [len(s) for _, s in series]
    decoder = RemoteWriteDecoder()
    assert rows(raw, decoder) == reference(raw)
    assert rows(raw, decoder) == reference(raw)  # again from the label cache


@pytest.mark.parametrize(
    "series",
    [
        [(UP, [(5, 1.0)])],  # a 1-byte varint timestamp
        [(UP, [(-T, 1.0)])],  # a negative timestamp (10-byte varint)
        [(UP, [(0, 0.0)])],  # an empty sample
        [(UP, [(T, 1.0)]), (UP, [])],  # a series without samples
        [(UP, [(T, 1.0), (2**43, 2.0)])],  # a 7-byte varint
        [(UP, [(T, 1.0), (5, 2.0), (T, 3.0)])],  # a short field breaks the chain
    ],
)
def test_other_layouts_are_declined_and_decoded_by_the_general_path(
    series: list[tuple[Labels, list[tuple[int, float]]]],
) -> None:
    raw = request(series)
    assert split_write_request(raw) is None
    assert rows(raw, RemoteWriteDecoder()) == reference(raw)


def test_fields_after_the_samples_or_an_empty_request_are_declined() -> None:
    req = remote_pb2.WriteRequest()
    ts = req.timeseries.add()
    ts.labels.add(name="__name__", value="up")
    ts.samples.add(timestamp=T, value=1.0)
    ts.exemplars.add(value=1.0, timestamp=T)
    raw = req.SerializeToString()
    assert split_write_request(raw) is None
    assert rows(raw, RemoteWriteDecoder()) == reference(raw)
    assert split_write_request(b"") is None


def test_a_label_value_that_looks_like_a_sample_is_not_trusted() -> None:
    # The value's bytes read as a sample field: the split cuts inside the label, the
    # prefix does not parse as whole label fields, and the general path decodes.
    # UTF-8 "\u0800\u0080a" is e0 a0 80 c2 80 61: a 6-byte varint.
    fake = "\x09abcdefgh\x10\u0800\u0080a"
    assert len(fake.encode()) == 16
    raw = request([((("__name__", "m"), ("v", fake)), [(T, 1.0), (T + 1, 0.0)])])
    split = split_write_request(raw)
    assert split is not None
    decoder = RemoteWriteDecoder()
    assert decoder._from_split(split) is None
    assert rows(raw, decoder) == reference(raw)


def test_labels_after_samples_are_not_misread() -> None:
    # Valid protobuf, not Prometheus' order: a label field after the samples.
    sample = remote_pb2.Sample(timestamp=T, value=3.0).SerializeToString()
    label = remote_pb2.Label(name="__name__", value="m").SerializeToString()
    late = remote_pb2.Label(name="z", value="1").SerializeToString()
    body = b"\x0a" + bytes([len(label)]) + label + b"\x12\x10" + sample
    body += b"\x0a" + bytes([len(late)]) + late
    raw = b"\x0a" + bytes([len(body)]) + body
    assert split_write_request(raw) is None
    assert rows(raw, RemoteWriteDecoder()) == [((("__name__", "m"), ("z", "1")), T, 0x4008 << 48)]


def test_a_sample_with_an_unknown_field_is_declined() -> None:
    # 7-byte payload: timestamp tag, a 4-byte varint, then unknown field 3 (varint 1).
    payload = b"\x10\x80\x80\x80\x01\x18\x01"
    label = remote_pb2.Label(name="__name__", value="m").SerializeToString()
    body = b"\x0a" + bytes([len(label)]) + label + b"\x12\x07" + payload
    raw = b"\x0a" + bytes([len(body)]) + body
    assert split_write_request(raw) is None
    assert rows(raw, RemoteWriteDecoder()) == [((("__name__", "m"),), 1 << 21, 0)]


def test_label_cache_is_bounded_and_names_are_checked() -> None:
    decoder = RemoteWriteDecoder(max_series=1)
    first = decoder.decode(request([(UP, [(T, 1.0)])]), compressed=False)
    again = decoder.decode(request([(UP, [(T + 1, 2.0)])]), compressed=False)
    assert first.series[0] is again.series[0]
    other = (("__name__", "down"),)
    assert list(decoder.decode(request([(other, [(T, 1.0)])]), compressed=False).series) == [other]
    assert len(decoder._prefix_cache) == 1
    bad = (("__name__", "m"), ("bad-name", "x"))
    with pytest.raises(BadDataError, match="invalid label name"):
        decoder.decode(request([(bad, [(T, 1.0)])]), compressed=False)


def _walk(raw: bytes) -> WireSplit | None:
    series = remote_pb2.TimeSeriesRaw.FromString(raw).labels
    lengths = np.array([len(s) for s in series], dtype=np.int64)
    ends = np.cumsum(lengths)
    buf = np.frombuffer(b"".join([*series, bytes(256)]), dtype=np.uint8)
    return _split_walk(series, buf, ends - lengths, ends)


@pytest.mark.parametrize("seed", range(4))
def test_the_label_walk_reads_requests_with_values_like_the_runtime(seed: int) -> None:
    rng = random.Random(seed)
    pool = [1.0, -2.5, math.inf, -math.inf, math.nan, STALE_NAN, TRICKY, 1e-300, -0.0]
    series: list[tuple[Labels, list[tuple[int, float]]]] = []
    for s in range(rng.randint(1, 40)):
        extra = tuple((f"l{k}", "x" * rng.randint(0, 100)) for k in range(rng.randint(0, 20)))
        labels = (("__name__", f"m{s % 3}"), *extra)
        samples = [(T + rng.randint(0, 10**9), rng.choice(pool)) for _ in range(rng.randint(1, 30))]
        series.append((labels, samples))
    raw = request(series)
    walked = _walk(raw)
    assert walked is not None
    scanned = split_write_request(raw)
    assert scanned is not None
    assert walked.prefixes == scanned.prefixes
    assert walked.counts.tolist() == [len(s) for _, s in series]
    assert rows(raw, RemoteWriteDecoder()) == reference(raw)


@pytest.mark.parametrize(
    "labels",
    [
        (("__name__", "m"), ("long", "y" * 200)),  # a label field with a 2-byte length
        (("__name__", "m"), *((f"l{k:02d}", "v") for k in range(70))),  # over _MAX_WALK
    ],
)
def test_the_label_walk_declines_and_the_scan_decides(labels: Labels) -> None:
    raw = request([(labels, [(T, 1.0), (T + 1, 2.0)]), (UP, [(T, 3.0)])])
    assert _walk(raw) is None
    assert rows(raw, RemoteWriteDecoder()) == reference(raw)


def test_a_label_field_running_past_its_series_is_bad_data() -> None:
    sample = b"\x12\x10" + remote_pb2.Sample(timestamp=T, value=3.0).SerializeToString()
    label = remote_pb2.Label(name="__name__", value="m").SerializeToString()
    # The second label field claims 100 bytes; the series holds far fewer after it.
    body = b"\x0a" + bytes([len(label)]) + label + b"\x0a\x64" + label + sample
    raw = b"\x0a" + bytes([len(body)]) + body
    assert _walk(raw) is None
    with pytest.raises(BadDataError, match=r"^cannot parse remote write body: "):
        RemoteWriteDecoder().decode(raw, compressed=False)
