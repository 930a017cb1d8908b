"""Fast JSON encoding of query results in Prometheus' wire shape.

``encode_data(result)`` returns the bytes of the ``data`` object of a ``/api/v1/query``
or ``/api/v1/query_range`` response, identical in content to
``msgspec.json.encode(encode_result(result))`` but built from whole columns: sample
values of all series are formatted in one call (shortest round-trip digits, the same
digits Go's ``strconv.FormatFloat(v, 'f', -1, 64)`` chooses) and only the few values
outside the positional range or not finite go through the slow formatter; each
distinct timestamp is formatted once.
"""

from __future__ import annotations

import math
from decimal import Decimal
from itertools import chain
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from monitoringserver.promql import Result, ResultSeries
from monitoringserver.web.routers.prometheus_params import encode_result, format_sample_value

__all__ = ["encode_data", "format_times", "format_values"]

_encoder = msgspec.json.Encoder()

#: ``repr`` switches to an exponent outside ``[1e-4, 1e16)``; Go's 'f' format never does.
_POSITIONAL_MIN = 1e-4
_POSITIONAL_MAX = 1e16
#: Up to this many values are checked in Python rather than with numpy masks.
_SMALL = 256


def format_values(values: NDArray[np.float64]) -> list[str]:
    """Each value as Go's ``strconv.FormatFloat(v, 'f', -1, 64)`` (``NaN``, ``+Inf``, ...).

    msgspec writes the whole list in C with the shortest round-trip digits (as Python's
    ``repr`` and Go do); in ``[1e-4, 1e16)`` that is Go's positional text except that
    whole numbers keep a ``.0``, removed here. Values outside that range and
    non-finite ones are formatted one by one.
    """
    if not len(values):
        return []
    text = _encoder.encode(values.tolist()).decode()[1:-1].replace(".0,", ",")
    if text.endswith(".0"):
        text = text[:-2]
    out = text.split(",")
    if len(out) <= _SMALL:
        # Few values: finding the odd ones in the text beats a dozen numpy calls. msgspec
        # writes non-finite values as ``null`` and uses an exponent only where Go's
        # positional text would differ from its own.
        for i, v in enumerate(out):
            if "e" in v or v == "null":
                out[i] = _positional(float(values[i]))
        return out
    with np.errstate(invalid="ignore"):
        mag = np.abs(values)
        odd = ~((mag < _POSITIONAL_MAX) & ((mag >= _POSITIONAL_MIN) | (mag == 0)))
    for i in np.flatnonzero(odd).tolist():
        if "e" in out[i] or out[i] == "null":  # msgspec stays positional down to ~1e-5
            out[i] = _positional(float(values[i]))
    return out


def _positional(v: float) -> str:
    """Go's positional text of a value whose shortest ``repr`` has an exponent (or is not
    finite): the same digits, the decimal point moved (``Decimal`` adds no digits)."""
    if not math.isfinite(v):
        return format_sample_value(v)
    text = format(Decimal(repr(v)), "f")
    return text[:-2] if text.endswith(".0") else text


def format_times(ts_ms: NDArray[np.int64]) -> list[str]:
    """Unix seconds as JSON numbers: integers when whole, else the shortest float.

    Each distinct timestamp is formatted once (a range result repeats its step grid).
    """
    if len(ts_ms) <= _SMALL:
        return [
            str(t // 1000) if t % 1000 == 0 else _encoder.encode(t / 1000).decode()
            for t in ts_ms.tolist()
        ]
    uniq, inverse = np.unique(ts_ms, return_inverse=True)
    text = [
        str(t // 1000) if t % 1000 == 0 else _encoder.encode(t / 1000).decode()
        for t in uniq.tolist()
    ]
    return [text[i] for i in inverse.tolist()]


def _points(series: list[ResultSeries]) -> list[str]:
    """Per series, its ``[ts,"value"]`` pairs joined by commas (all series formatted at once)."""
    if not series:
        return []
    lengths = [len(s.values) for s in series]
    # Series sharing one timestamp array (fully present rows of a range result) have it
    # formatted once.
    distinct = {id(s.ts_ms): s.ts_ms for s in series}
    text = format_times(np.concatenate(list(distinct.values())))
    by_id: dict[int, list[str]] = {}
    at = 0
    for key, ts in distinct.items():
        by_id[key] = text[at : at + len(ts)]
        at += len(ts)
    times = list(chain.from_iterable(by_id[id(s.ts_ms)] for s in series))
    values = format_values(np.concatenate([s.values for s in series]))
    pairs = [f'[{t},"{v}"]' for t, v in zip(times, values, strict=True)]
    out = []
    at = 0
    for n in lengths:
        out.append(",".join(pairs[at : at + n]))
        at += n
    return out


def encode_data(result: Result, extra: dict[str, Any] | None = None) -> bytes:
    """The ``data`` object of a query response as JSON bytes; ``extra`` keys are appended."""
    if result.result_type not in ("vector", "matrix"):
        data = encode_result(result)
        data.update(extra or {})
        return _encoder.encode(data)
    parts: list[bytes] = [b'{"resultType":"', result.result_type.encode(), b'","result":[']
    matrix = result.result_type == "matrix"
    head, tail = (b'"values":[', b"]}") if matrix else (b'"value":', b"}")
    for k, (s, points) in enumerate(zip(result.series, _points(result.series), strict=True)):
        if k:
            parts.append(b",")
        metric = _encoder.encode(dict(s.labels))
        parts += (b'{"metric":', metric, b",", head, points.encode(), tail)
    parts.append(b"]")
    for name, value in (extra or {}).items():
        parts += (b",", _encoder.encode(name), b":", _encoder.encode(value))
    parts.append(b"}")
    return b"".join(parts)
