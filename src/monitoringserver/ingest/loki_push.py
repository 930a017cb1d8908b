"""Loki push API bodies (``POST /loki/api/v1/push``) → :class:`LogBatch`.

Two encodings: snappy-compressed protobuf ``PushRequest`` (Promtail, Alloy, Fluent Bit's
``loki`` output) and JSON ``{"streams": [{"stream": {labels}, "values": [["<ns>",
"<line>", {metadata}?], ...]}]}`` (optionally gzip, handled by the web layer).

Stream labels map onto columns: ``server_id`` from ``server_id``/``host``/``hostname``/
``instance``/``node``; ``level`` from ``level``/``detected_level``/``severity``/``lvl``
(normalised; absent → detected from the line's words); ``logger`` from ``logger``;
``source`` from ``source``/``filename`` (else ``"loki"``). Every label except the four
column names themselves, and the entry's structured metadata, go into ``attrs``, so
selectors on any pushed label work. Lines are stored verbatim.
"""

from __future__ import annotations

import re

import cramjam
import msgspec
import numpy as np
from google.protobuf.message import DecodeError

from monitoringserver.errors import BadDataError, PayloadTooLargeError
from monitoringserver.logs.formats import detect_level
from monitoringserver.model.logs import LogBatch, normalize_level
from monitoringserver.proto.loki import push_pb2

__all__ = ["DecodedPush", "decode_push_json", "decode_push_protobuf", "parse_label_string"]

_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_HOST_KEYS = ("server_id", "host", "hostname", "instance", "node", "nodename")
_LEVEL_KEYS = ("level", "detected_level", "severity", "lvl")
_COLUMNS = ("server_id", "level", "logger", "source")


class DecodedPush(msgspec.Struct, frozen=True):
    batch: LogBatch
    streams: int
    invalid_utf8: int


def parse_label_string(text: str) -> dict[str, str]:
    """``{a="b", c="d\\"e"}`` → dict; raises ``BadDataError`` when malformed."""
    s = text.strip()
    if not (s.startswith("{") and s.endswith("}")):
        raise BadDataError(f"cannot parse stream labels {text!r}: expected {{...}}")
    body = s[1:-1].strip()
    out: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        m = _LABEL.match(body, pos)
        if m is None:
            raise BadDataError(
                f"cannot parse stream labels {text!r}: near {body[pos : pos + 20]!r}"
            )
        out[m.group(1)] = re.sub(
            r"\\(.)", lambda x: {"n": "\n"}.get(x.group(1), x.group(1)), m.group(2)
        )
        pos = m.end()
    return out


class _Columns:
    """Accumulates columns stream by stream."""

    def __init__(self) -> None:
        self.ts: list[int] = []
        self.server_id: list[str] = []
        self.level: list[str] = []
        self.logger: list[str] = []
        self.source: list[str] = []
        self.message: list[str] = []
        self.attrs: list[dict[str, str]] = []

    def add_stream(
        self, labels: dict[str, str], entries: list[tuple[int, str, dict[str, str]]]
    ) -> None:
        host = next((labels[k] for k in _HOST_KEYS if labels.get(k)), "")
        lvl_raw = next((labels[k] for k in _LEVEL_KEYS if labels.get(k)), "")
        level = normalize_level(lvl_raw) if lvl_raw else ""
        logger = labels.get("logger", "")
        source = labels.get("source") or labels.get("filename") or "loki"
        base = {k: v for k, v in labels.items() if k not in _COLUMNS}
        n = len(entries)
        if not n:
            return
        self.server_id += [host] * n
        self.logger += [logger] * n
        self.source += [source] * n
        ts, lines, metas = zip(*entries, strict=True)
        self.ts += ts
        self.message += lines
        self.level += [level] * n if level else list(map(detect_level, lines))
        if any(metas):
            self.attrs += [{**base, **meta} if meta else base for meta in metas]
        else:
            self.attrs += [base] * n

    def build(self) -> LogBatch:
        return LogBatch(
            np.asarray(self.ts, dtype=np.int64),
            self.server_id,
            self.level,
            self.logger,
            self.source,
            self.message,
            self.attrs,
        )


def _text(raw: bytes) -> tuple[str, int]:
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), 1


def decode_push_protobuf(
    body: bytes, *, compressed: bool = True, max_bytes: int = 256 << 20
) -> DecodedPush:
    """Snappy (block format) protobuf ``PushRequest``; ``compressed=False`` for raw.
    A body that would decompress past ``max_bytes`` is refused (413)."""
    try:
        if compressed and cramjam.snappy.decompress_raw_len(body) > max_bytes:
            raise PayloadTooLargeError(
                f"cannot decompress Loki push body: over {max_bytes} bytes decompressed"
            )
        raw = bytes(cramjam.snappy.decompress_raw(body)) if compressed else body
    except PayloadTooLargeError:
        raise
    except Exception as exc:  # cramjam raises its own DecompressionError type
        raise BadDataError(f"cannot decompress Loki push body (snappy): {exc}") from exc
    req = push_pb2.PushRequest()
    try:
        req.ParseFromString(raw)
    except DecodeError as exc:
        raise BadDataError(f"cannot parse Loki push protobuf: {exc}") from exc
    cols = _Columns()
    invalid = 0
    for stream in req.streams:
        label_text, bad = _text(stream.labels)
        invalid += bad
        labels = parse_label_string(label_text)
        entries: list[tuple[int, str, dict[str, str]]] = []
        for e in stream.entries:
            line, bad = _text(e.line)
            invalid += bad
            ts_ms = e.timestamp.seconds * 1000 + e.timestamp.nanos // 1_000_000
            meta = {p.name: p.value for p in e.structuredMetadata}
            entries.append((ts_ms, line, meta))
        cols.add_stream(labels, entries)
    return DecodedPush(cols.build(), len(req.streams), invalid)


class _JsonStream(msgspec.Struct):
    stream: dict[str, str] = {}
    values: list[list[str | dict[str, str]]] = []


class _JsonPush(msgspec.Struct):
    streams: list[_JsonStream] = []


_json_push = msgspec.json.Decoder(_JsonPush)


def decode_push_json(body: bytes) -> DecodedPush:
    invalid = 0
    try:
        req = _json_push.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        text, invalid = _text(body)
        if not invalid:
            raise BadDataError(f"cannot parse Loki push JSON: {exc}") from exc
        try:
            req = _json_push.decode(text.encode("utf-8"))
        except msgspec.DecodeError as exc2:
            raise BadDataError(f"cannot parse Loki push JSON: {exc2}") from exc2
    cols = _Columns()
    for stream in req.streams:
        entries: list[tuple[int, str, dict[str, str]]] = []
        for value in stream.values:
            if (
                len(value) not in (2, 3)
                or not isinstance(value[0], str)
                or not isinstance(value[1], str)
            ):
                raise BadDataError(
                    'cannot parse Loki push JSON: each value must be ["<unix ns>", "<line>"]'
                )
            try:
                ts_ms = int(value[0]) // 1_000_000
            except ValueError as exc:
                raise BadDataError(f"cannot parse Loki timestamp {value[0]!r}") from exc
            meta = value[2] if len(value) == 3 and isinstance(value[2], dict) else {}
            entries.append((ts_ms, value[1], meta))
        cols.add_stream(stream.stream, entries)
    return DecodedPush(cols.build(), len(req.streams), invalid)
