"""Fast JSON encoding of query results in Prometheus' wire shape.

``encode_data(result)`` returns the bytes of the ``data`` object of a ``/api/v1/query``
or ``/api/v1/query_range`` response, identical in content to
``msgspec.json.encode(encode_result(result))`` but built from whole columns: sample
values are formatted per series with ``float.__repr__`` (Python's shortest round-trip
digits, the same digits Go's ``strconv.FormatFloat(v, 'f', -1, 64)`` chooses) and only
the few values whose ``repr`` differs from Go's positional form (exponents, ``nan``,
``inf``) go through the slow formatter. Timestamps shared by several series (every
fully present series of a range result shares one array) are formatted once.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from monitoringserver.promql import Result, ResultSeries
from monitoringserver.web.routers.prometheus_params import encode_result, format_sample_value

__all__ = ["encode_data", "format_values"]

_encoder = msgspec.json.Encoder()

#: ``repr`` switches to an exponent outside ``[1e-4, 1e16)``; Go's 'f' format never does.
_POSITIONAL_MIN = 1e-4
_POSITIONAL_MAX = 1e16


def format_values(values: NDArray[np.float64]) -> list[str]:
    """Each value as Go's ``strconv.FormatFloat(v, 'f', -1, 64)`` (``NaN``, ``+Inf``, ...).

    ``repr`` of the whole list runs in C; whole numbers lose their ``.0`` there too
    (only an integer-valued float's shortest ``repr`` ends in ``.0``).
    """
    if not len(values):
        return []
    text = repr(values.tolist())[1:-1].replace(".0, ", ", ")
    if text.endswith(".0"):
        text = text[:-2]
    out = text.split(", ")
    with np.errstate(invalid="ignore"):
        mag = np.abs(values)
        odd = ~((mag < _POSITIONAL_MAX) & ((mag >= _POSITIONAL_MIN) | (mag == 0)))
    for i in np.flatnonzero(odd).tolist():
        out[i] = format_sample_value(float(values[i]))
    return out


def format_times(ts_ms: NDArray[np.int64]) -> list[str]:
    """Unix seconds as JSON numbers: integers when whole, else the shortest float."""
    if not len(ts_ms):
        return []
    whole = ts_ms % 1000 == 0
    if whole.all():
        return repr((ts_ms // 1000).tolist())[1:-1].split(", ")
    out = repr((ts_ms / 1000).tolist())[1:-1].split(", ")
    for i in np.flatnonzero(whole).tolist():
        out[i] = str(int(ts_ms[i]) // 1000)
    for i in np.flatnonzero(~whole).tolist():
        if "e" in out[i]:
            out[i] = _encoder.encode(float(ts_ms[i]) / 1000).decode()
    return out


def _points(series: list[ResultSeries]) -> list[str]:
    """Per series, its ``[ts,"value"]`` pairs joined by commas (all series formatted at once)."""
    if not series:
        return []
    lengths = [len(s.values) for s in series]
    times = format_times(np.concatenate([s.ts_ms for s in series]))
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
