"""Seed-002 log JSON: one object or a list of
``{"server_id", "timestamp", "message", "type"|"level", "logger"?, "attrs"?, "source"?}``.

``timestamp`` is RFC 3339 or epoch seconds/milliseconds/nanoseconds (by magnitude);
absent means now. ``type`` and ``level`` are synonyms (normalised); when both are absent
the server detects the level from the message. Unknown fields are ignored. A body that
is not valid UTF-8 is repaired (U+FFFD) and counted, never refused for that alone.
"""

from __future__ import annotations

import operator
from typing import cast

import msgspec
import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError
from monitoringserver.logs.timestamps import parse_ts_value
from monitoringserver.model.logs import LogBatch, normalize_level

__all__ = ["DecodedLogs", "decode_json_logs"]

_Scalar = str | int | float | bool | None


class _LogIn(msgspec.Struct, forbid_unknown_fields=False, gc=False):
    # gc=False: a request allocates one of these per line; untracked structs keep the
    # cyclic collector from walking them (they hold only strings, numbers and a dict).
    # ``attrs`` defaults to the UNSET singleton, not ``{}``: a default dict would be a
    # new GC-tracked object per line, and most senders give no attrs.

    message: str
    server_id: str = ""
    timestamp: str | int | float | None = None
    type: str | None = None
    level: str | None = None
    logger: str = ""
    source: str = ""
    attrs: dict[str, _Scalar] | msgspec.UnsetType = msgspec.UNSET


_get_server_id = operator.attrgetter("server_id")
_get_logger = operator.attrgetter("logger")
_get_source = operator.attrgetter("source")
_get_message = operator.attrgetter("message")
_get_attrs = operator.attrgetter("attrs")
_get_timestamp = operator.attrgetter("timestamp")
_get_level = operator.attrgetter("level")
_get_type = operator.attrgetter("type")

_one = msgspec.json.Decoder(_LogIn)
_many = msgspec.json.Decoder(list[_LogIn])


class DecodedLogs(msgspec.Struct, frozen=True):
    batch: LogBatch
    items: int
    invalid_utf8: int
    bad_timestamps: int


def _decode(body: bytes) -> list[_LogIn]:
    start = body.lstrip()[:1]
    if start == b"[":
        return _many.decode(body)
    return [_one.decode(body)]


def _attr(v: _Scalar) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _epoch_ms(t: NDArray[np.int64]) -> NDArray[np.int64]:
    """Epoch s/ms/us/ns (by magnitude, like ``epoch_to_ms``) to ms, vectorised."""
    a = np.abs(t)
    if a.min() >= 10**11 and a.max() < 10**14:  # all milliseconds already: the usual case
        return t
    out: NDArray[np.int64] = np.where(
        a < 10**11,
        t * 1000,
        np.where(a < 10**14, t, np.where(a < 10**17, t // 1000, t // 1_000_000)),
    )
    return out


def decode_json_logs(body: bytes, *, now_ms: int, source: str = "http") -> DecodedLogs:
    """Decode a request body. Raises ``BadDataError`` for structurally invalid JSON.

    Lines with an unparseable ``timestamp`` get ``now_ms`` and are counted in
    ``bad_timestamps``."""
    invalid = 0
    try:
        items = _decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            invalid = 1
            repaired = body.decode("utf-8", "replace").encode("utf-8")
            try:
                items = _decode(repaired)
            except msgspec.DecodeError as exc2:
                raise BadDataError(f"cannot parse log JSON: {exc2}") from exc2
        else:
            raise BadDataError(f"cannot parse log JSON: {exc}") from exc
    n = len(items)
    raw_ts = list(map(_get_timestamp, items))
    bad_ts = 0
    if set(map(type, raw_ts)) <= {int}:
        ts = _epoch_ms(np.asarray(raw_ts, dtype=np.int64)) if n else np.empty(0, np.int64)
    else:
        ts = np.empty(n, dtype=np.int64)
        for i, t in enumerate(raw_ts):
            if t is None:
                ts[i] = now_ms
                continue
            ms = parse_ts_value(t)
            if ms is None:
                bad_ts += 1
                ms = now_ms
            ts[i] = ms
    given = list(map(_get_level, items))
    if not any(given):  # seed 002 names it ``type``
        given = list(map(_get_type, items))
    elif not all(given):
        given = [lv or ty for lv, ty in zip(given, map(_get_type, items), strict=True)]
    # Few distinct spellings per request: normalise each once, then map in C.
    names = {raw: normalize_level(raw) if raw else "" for raw in set(given)}
    levels = list(map(names.__getitem__, given))
    sources = list(map(_get_source, items))
    if not all(sources):
        sources = [s or source for s in sources]
    raw_attrs = list(map(_get_attrs, items))
    # Lines without attrs share one empty dict (batches are read-only once built).
    empty: dict[str, str] = {}
    attrs = (
        [empty] * n
        if raw_attrs.count(msgspec.UNSET) == n
        else [
            {k: _attr(v) for k, v in a.items()} if a else empty
            for a in cast(list[dict[str, _Scalar]], raw_attrs)
        ]
    )
    batch = LogBatch(
        ts_ms=ts,
        server_id=list(map(_get_server_id, items)),
        level=levels,
        logger=list(map(_get_logger, items)),
        source=sources,
        message=list(map(_get_message, items)),
        attrs=attrs,
    )
    return DecodedLogs(batch, n, invalid, bad_ts)
