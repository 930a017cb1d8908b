"""Loki push decoding: snappy protobuf and JSON, label mapping, bad input."""

from __future__ import annotations

import cramjam
import pytest

from monitoringserver.errors import BadDataError, PayloadTooLargeError
from monitoringserver.ingest.loki_push import (
    decode_push_json,
    decode_push_protobuf,
    parse_label_string,
)
from monitoringserver.proto.loki import push_pb2


def push_body(streams: list[tuple[str, list[tuple[int, bytes, dict[str, str]]]]]) -> bytes:
    req = push_pb2.PushRequest()
    for labels, entries in streams:
        s = req.streams.add()
        s.labels = labels.encode()
        for ns, line, meta in entries:
            e = s.entries.add()
            e.timestamp.seconds = ns // 1_000_000_000
            e.timestamp.nanos = ns % 1_000_000_000
            e.line = line
            for k, v in meta.items():
                p = e.structuredMetadata.add()
                p.name = k
                p.value = v
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ('{job="x"}', {"job": "x"}),
        ('{ a = "1", b="q\\"uote" , c="n\\nl"}', {"a": "1", "b": 'q"uote', "c": "n\nl"}),
        ("{}", {}),
    ],
)
def test_label_strings(text: str, labels: dict[str, str]) -> None:
    assert parse_label_string(text) == labels


@pytest.mark.parametrize("text", ["job=x", "{job=x}", '{job="x" y}', '{1a="b"}'])
def test_bad_label_strings(text: str) -> None:
    with pytest.raises(BadDataError):
        parse_label_string(text)


def test_protobuf_mapping() -> None:
    body = push_body(
        [
            (
                '{job="varlogs", host="web-1", filename="/var/log/syslog", level="warn"}',
                [(1_767_000_000_123_456_789, b"disk slow", {"trace_id": "abc"})],
            ),
            (
                '{job="app", server_id="s2", logger="api"}',
                [(1_767_000_001_000_000_000, b"ERROR x \xff", {})],
            ),
        ]
    )
    d = decode_push_protobuf(body)
    assert (d.streams, d.invalid_utf8) == (2, 1)
    b = d.batch
    assert b.ts_ms.tolist() == [1_767_000_000_123, 1_767_000_001_000]
    assert b.server_id == ["web-1", "s2"]
    assert b.level == ["warning", "error"]
    assert b.logger == ["", "api"]
    assert b.source == ["/var/log/syslog", "loki"]
    assert b.message == ["disk slow", "ERROR x \ufffd"]
    assert b.attrs[0] == {
        "job": "varlogs",
        "host": "web-1",
        "filename": "/var/log/syslog",
        "trace_id": "abc",
    }
    assert b.attrs[1] == {"job": "app"}


def test_protobuf_errors() -> None:
    with pytest.raises(BadDataError, match="snappy"):
        decode_push_protobuf(b"\xff\xff\xff\xff not snappy")
    with pytest.raises(BadDataError, match="protobuf"):
        decode_push_protobuf(bytes(cramjam.snappy.compress_raw(b"\x0a\xff")))
    with pytest.raises(PayloadTooLargeError):
        decode_push_protobuf(bytes(cramjam.snappy.compress_raw(b"\x00" * 2000)), max_bytes=1000)
    raw = push_pb2.PushRequest()
    raw.streams.add().labels = b'{a="b"}'
    assert decode_push_protobuf(raw.SerializeToString(), compressed=False).streams == 1


def test_json_push() -> None:
    body = (
        b'{"streams": [{"stream": {"job": "j", "detected_level": "error"}, "values": '
        b'[["1767000000000000000", "boom"], ["1767000001000000000", "x", {"k": "v"}]]}]}'
    )
    d = decode_push_json(body)
    assert d.batch.ts_ms.tolist() == [1_767_000_000_000, 1_767_000_001_000]
    assert d.batch.level == ["error", "error"]
    assert d.batch.attrs == [
        {"job": "j", "detected_level": "error"},
        {"job": "j", "detected_level": "error", "k": "v"},
    ]
    d = decode_push_json(b'{"streams": [{"stream": {"a": "b"}, "values": [["1", "bad \xff"]]}]}')
    assert d.invalid_utf8 == 1


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"streams": [{"stream": {}, "values": [["1"]]}]}',
        b'{"streams": [{"stream": {}, "values": [[{"a": "b"}, "x"]]}]}',
        b'{"streams": [{"stream": {}, "values": [["soon", "x"]]}]}',
        b'{"streams": 5}',
        b'{"streams": [{"values": [["1", "x\xff"]], "stream": 3}]}',
    ],
)
def test_json_push_errors(body: bytes) -> None:
    with pytest.raises(BadDataError):
        decode_push_json(body)
