"""New series of a request are parsed together: the results agree with the protobuf
runtime, and anything the joined parse cannot vouch for is parsed series by series."""

from __future__ import annotations

import pytest

from monitoringserver.errors import BadDataError
from monitoringserver.ingest.remote_write import RemoteWriteDecoder, field_stops
from monitoringserver.model.labels import Labels
from tests.ingest.test_remote_write_wire import T, reference, request, rows


def _host(i: int, extra: Labels = ()) -> list[tuple[Labels, list[tuple[int, float]]]]:
    """A node-exporter-like host: label sets sharing most pairs, as Prometheus sends."""
    out: list[tuple[Labels, list[tuple[int, float]]]] = []
    for cpu in range(3):
        for mode in ("idle", "user"):
            labels = (
                ("__name__", "node_cpu_seconds_total"),
                ("cpu", str(cpu)),
                ("instance", f"host-{i}:9100"),
                ("job", "node"),
                ("mode", mode),
                *extra,
            )
            out.append((labels, [(T, float(cpu)), (T + 10_000, 1.5)]))
    out.append(((("__name__", "node_load1"), ("instance", f"host-{i}:9100")), [(T, 0.25)]))
    return out


LONG = "v" * 200  # a label field with a two-byte length


@pytest.mark.parametrize(
    "series",
    [
        _host(0),
        _host(1) + _host(2),
        _host(3, (("zone", LONG),)),  # long labels: field sizes with two-byte lengths
        [((("job", "x"), ("__name__", "m")), [(T, 1.0)])],  # unsorted: sorted set by set
        [((("__name__", "m"), ("empty", ""), ("job", "x")), [(T, 1.0)])],  # empty: dropped
        [
            ((("__name__", "m"), ("job", "x")), [(T, 1.0)]),
            ((("__name__", "m"), ("job", "x"), ("e", "")), [(T + 1, 2.0)]),
        ],
    ],
)
def test_new_series_decode_like_the_protobuf_runtime(
    series: list[tuple[Labels, list[tuple[int, float]]]],
) -> None:
    raw = request(series)
    decoder = RemoteWriteDecoder()
    assert rows(raw, decoder) == reference(raw)
    assert rows(raw, decoder) == reference(raw)  # and again from the cache


def test_an_empty_value_seen_once_is_dropped_in_later_requests_too() -> None:
    decoder = RemoteWriteDecoder()
    first = request([((("__name__", "m"), ("a", "")), [(T, 1.0)])])
    assert rows(first, decoder) == reference(first)
    later = request([((("__name__", "n"), ("a", ""), ("b", "1")), [(T, 1.0)])])
    assert rows(later, decoder) == reference(later)
    assert rows(later, decoder)[0][0] == (("__name__", "n"), ("b", "1"))


def test_a_repeated_series_in_one_request_is_one_series() -> None:
    labels = (("__name__", "m"), ("job", "x"))
    raw = request(
        [(labels, [(T, 1.0)]), ((("__name__", "n"),), [(T, 2.0)]), (labels, [(T + 1, 3.0)])]
    )
    batch = RemoteWriteDecoder().decode(raw, compressed=False)
    assert list(batch.series) == [labels, (("__name__", "n"),)]
    assert batch.series_idx.tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    ("series", "message"),
    [
        ([((("job", "x"),), [(T, 1.0)])], "without a metric name"),
        ([((("__name__", "m"), ("a", "1"), ("a", "2")), [(T, 1.0)])], "duplicate label name"),
        ([((("__name__", "m"), ("bad-name", "1")), [(T, 1.0)])], "invalid label name"),
    ],
)
def test_errors_among_many_new_series(
    series: list[tuple[Labels, list[tuple[int, float]]]], message: str
) -> None:
    raw = request(_host(0) + series + _host(1))
    with pytest.raises(BadDataError, match=f"^cannot parse remote write body: .*{message}"):
        RemoteWriteDecoder().decode(raw, compressed=False)


def _field(number: int, payload: bytes, *, overlong: bool = False) -> bytes:
    """A length-delimited field; ``overlong`` encodes its (short) length in two bytes."""
    assert len(payload) < 128
    size = bytes([len(payload) | 0x80, 0x00]) if overlong else bytes([len(payload)])
    return bytes([number << 3 | 2]) + size + payload


def _sample(ts: int, value: float) -> bytes:
    sample = request([((("__name__", "x"),), [(ts, value)])])
    # The sample field of the one series: after its tag, length and single label field.
    series = sample[2:]
    return series[len(_field(1, _field(1, b"__name__") + _field(2, b"x"))) :]


def test_a_label_field_with_an_overlong_length_is_parsed_series_by_series() -> None:
    label = _field(1, b"__name__") + _field(2, b"m")
    odd = _field(1, label, overlong=True) + _sample(T, 1.0)
    plain = _field(1, _field(1, b"__name__") + _field(2, b"n")) + _sample(T, 2.0)
    raw = _field(1, odd) + _field(1, plain)
    decoder = RemoteWriteDecoder()
    assert rows(raw, decoder) == reference(raw)
    assert [labels for labels, _, _ in rows(raw, decoder)] == [
        (("__name__", "m"),),
        (("__name__", "n"),),
    ]


@pytest.mark.parametrize(
    ("encoded", "prefixes", "expected"),
    [
        ([b"ab", b"c"], [b"\x0a\x02ab", b"\x0a\x01c"], [1, 2]),
        ([b"ab", b"c"], [b"\x0a\x02ab\x0a\x01c"], [2]),
        ([b"ab", b"c"], [b"\x0a\x02a", b"b\x0a\x01c"], None),  # a boundary inside a field
        ([b"ab"], [b"\x0a\x82\x00ab"], None),  # an overlong length
        ([], [b""], None),
        ([b"x" * 130], [b"\x0a\x82\x01" + b"x" * 130], [1]),  # a two-byte length
    ],
)
def test_field_stops(
    encoded: list[bytes], prefixes: list[bytes], expected: list[int] | None
) -> None:
    assert field_stops(encoded, prefixes) == expected
