"""Seed-002 log JSON decoding."""

from __future__ import annotations

import pytest

from monitoringserver.errors import BadDataError
from monitoringserver.ingest.json_logs import decode_json_logs

NOW = 1_767_000_000_000


@pytest.mark.parametrize(
    ("body", "ts", "level"),
    [
        (
            b'{"message": "m", "timestamp": "2026-01-01T00:00:00Z", "type": "warning"}',
            1_767_225_600_000,
            "warning",
        ),
        (b'{"message": "m", "timestamp": 1767225600, "level": "ERR"}', 1_767_225_600_000, "error"),
        (b'{"message": "m", "timestamp": 1767225600123}', 1_767_225_600_123, ""),
        (b'{"message": "m", "timestamp": "1767225600.5"}', 1_767_225_600_500, ""),
        (b'{"message": "m"}', NOW, ""),
    ],
)
def test_one_object(body: bytes, ts: int, level: str) -> None:
    d = decode_json_logs(body, now_ms=NOW)
    assert d.items == 1
    assert d.batch.ts_ms.tolist() == [ts]
    assert d.batch.level == [level]
    assert d.batch.source == ["http"]


def test_list_attrs_unknown_fields_and_bad_timestamps() -> None:
    body = (
        b'[{"server_id": "a", "message": "x", "logger": "L", '
        b'"attrs": {"n": 1, "b": true, "z": null, "f": 1.5}, "unknown": 3, "source": "app"}, '
        b'{"message": "y", "timestamp": "never"}]'
    )
    d = decode_json_logs(body, now_ms=NOW)
    assert d.items == 2
    assert d.bad_timestamps == 1
    assert d.batch.attrs == [{"n": "1", "b": "true", "z": "", "f": "1.5"}, {}]
    assert d.batch.source == ["app", "http"]
    assert d.batch.logger == ["L", ""]
    assert d.batch.ts_ms.tolist()[1] == NOW


def test_invalid_utf8_is_repaired() -> None:
    d = decode_json_logs(b'{"message": "a\xffb"}', now_ms=NOW)
    assert d.invalid_utf8 == 1
    assert d.batch.message == ["a\ufffdb"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[{}]",
        b'{"message": 1}',
        b'"x"',
        b'[{"message": "a\xff',
        b'{"message": "m", "attrs": null}',
        b'{"message": "m", "attrs": []}',
    ],
)
def test_structural_errors(body: bytes) -> None:
    with pytest.raises(BadDataError):
        decode_json_logs(body, now_ms=NOW)


def test_lines_without_attrs_get_empty_dicts() -> None:
    d = decode_json_logs(b'[{"message": "a"}, {"message": "b", "attrs": {}}]', now_ms=NOW)
    assert d.batch.attrs == [{}, {}]
    d = decode_json_logs(b'[{"message": "a"}, {"message": "b"}]', now_ms=NOW)
    assert d.batch.attrs == [{}, {}]
