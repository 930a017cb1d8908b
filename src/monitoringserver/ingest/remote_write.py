"""Prometheus remote write 1.0: a snappy-compressed ``WriteRequest`` in, a SampleBatch out.

Contract (what the ``/api/v1/write`` route relies on):

* the body is snappy *block* format (``Content-Encoding: snappy``), holding a protobuf
  ``prometheus.WriteRequest`` (vendored as ``monitoringserver.vendor.prompb``);
* every ``TimeSeries`` becomes one label set; labels with empty values are dropped,
  label names must match ``[a-zA-Z_][a-zA-Z0-9_]*`` (or be ``__name__``), a series must
  have a ``__name__``; duplicate label names are refused;
* sample timestamps are int milliseconds; values keep their exact bits, so the staleness
  marker (``STALE_NAN``) arrives as such;
* out-of-order samples and duplicates are accepted as they are: the store keeps the
  last write per ``(series, timestamp)``;
* metadata, exemplars and native histograms are ignored;
* any problem raises :class:`BadDataError` ``cannot parse remote write body: <cause>``
  and nothing of the request is stored.

Per-series work is done once per request (label tuples); samples go straight from the
protobuf repeated fields into numpy arrays.
"""

from __future__ import annotations

import re

import cramjam
import numpy as np
from google.protobuf.message import DecodeError

from monitoringserver.errors import BadDataError, PayloadTooLargeError
from monitoringserver.model.labels import METRIC_NAME, Labels
from monitoringserver.model.samples import SampleBatch
from monitoringserver.proto.prompb import remote_pb2

__all__ = ["DEFAULT_MAX_DECODED_BYTES", "decode_write_request", "decompress_snappy"]

#: Largest accepted uncompressed WriteRequest (Prometheus sends ≈ 2 000 samples per request).
DEFAULT_MAX_DECODED_BYTES = 64 * 1024 * 1024

_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PREFIX = "cannot parse remote write body"


def decompress_snappy(body: bytes, *, max_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> bytes:
    """Snappy block-format ``body`` → bytes, refusing outputs larger than ``max_bytes``."""
    try:
        size = int(cramjam.snappy.decompress_raw_len(body))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise BadDataError(f"{_PREFIX}: invalid snappy data: {exc}") from exc
    if size > max_bytes:
        raise PayloadTooLargeError(
            f"{_PREFIX}: uncompressed size {size} B is over the limit of {max_bytes} B"
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:
        raise BadDataError(f"{_PREFIX}: invalid snappy data: {exc}") from exc


def _labels(series: remote_pb2.TimeSeries, cache: dict[tuple[str, ...], Labels]) -> Labels:
    flat = tuple(s for label in series.labels for s in (label.name, label.value))
    found = cache.get(flat)
    if found is not None:
        return found
    pairs: dict[str, str] = {}
    for i in range(0, len(flat), 2):
        name, value = flat[i], flat[i + 1]
        if name != METRIC_NAME and not _LABEL_NAME_RE.fullmatch(name):
            raise BadDataError(f"{_PREFIX}: invalid label name {name!r}")
        if name in pairs:
            raise BadDataError(f"{_PREFIX}: duplicate label name {name!r}")
        pairs[name] = value
    if not pairs.get(METRIC_NAME):
        raise BadDataError(f"{_PREFIX}: series without a metric name: {pairs}")
    labels = tuple(sorted((k, v) for k, v in pairs.items() if v != ""))
    cache[flat] = labels
    return labels


def decode_write_request(
    body: bytes, *, compressed: bool = True, max_bytes: int = DEFAULT_MAX_DECODED_BYTES
) -> SampleBatch:
    """Decode one remote-write body (snappy unless ``compressed`` is false)."""
    raw = decompress_snappy(body, max_bytes=max_bytes) if compressed else body
    request = remote_pb2.WriteRequest()
    try:
        request.ParseFromString(raw)
    except DecodeError as exc:
        raise BadDataError(f"{_PREFIX}: invalid protobuf: {exc}") from exc
    cache: dict[tuple[str, ...], Labels] = {}
    index: dict[Labels, int] = {}
    counts: list[int] = []
    numbers: list[int] = []
    ts_parts: list[list[int]] = []
    value_parts: list[list[float]] = []
    for series in request.timeseries:
        samples = series.samples
        if not samples:
            continue
        labels = _labels(series, cache)
        number = index.setdefault(labels, len(index))
        numbers.append(number)
        counts.append(len(samples))
        ts_parts.append([s.timestamp for s in samples])
        value_parts.append([s.value for s in samples])
    if not counts:
        return SampleBatch.empty()
    total = sum(counts)
    ts = np.fromiter((t for part in ts_parts for t in part), dtype=np.int64, count=total)
    values = np.fromiter((v for part in value_parts for v in part), dtype=np.float64, count=total)
    idx = np.repeat(np.asarray(numbers, dtype=np.uint32), counts)
    return SampleBatch(list(index), idx, ts, values)
