"""Prometheus remote write 1.0 and 2.0: a snappy-compressed request in, a SampleBatch out.

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
* remote write 2.0 (:meth:`RemoteWriteDecoder.decode_v2`): labels are references into the
  request's ``symbols`` (a reference outside them, or an odd count, is an error); the
  same label rules and sample handling apply;
* any problem raises :class:`BadDataError` ``cannot parse remote write body: <cause>``
  and nothing of the request is stored.

Per-series work is one dictionary lookup by the series' encoded label fields; samples
are found and decoded all at once with numpy (:mod:`.rw_wire`). A layout other than
Prometheus' falls back to a per-series split (a decode-only ``TimeSeriesRaw`` view
keeps samples as byte strings, decoded together), then to the protobuf runtime.
"""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import accumulate, compress, repeat
from typing import Any

import cramjam
import numpy as np
from google.protobuf.message import DecodeError
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError, PayloadTooLargeError
from monitoringserver.ingest.rw_wire import (
    KeyedDecode,
    WireSplit,
    decode_sample_fields,
    known_series_ids,
    split_write_request,
)
from monitoringserver.model.labels import METRIC_NAME, Labels, sorted_within
from monitoringserver.model.samples import SampleBatch
from monitoringserver.proto.prompb import remote_pb2, write_v2_pb2

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "KeyedDecode",
    "RemoteWriteDecoder",
    "decode_write_request",
    "decompress_snappy",
    "field_stops",
]

#: Largest accepted uncompressed WriteRequest (Prometheus sends ≈ 2 000 samples per request).
DEFAULT_MAX_DECODED_BYTES = 64 * 1024 * 1024

_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PREFIX = "cannot parse remote write body"
_NAME = operator.itemgetter(0)
_VALUE = operator.itemgetter(1)


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


def _checked(pairs: list[tuple[str, str]], *, names_checked: bool = False) -> Labels:
    """The sorted label set without empty values; ``names_checked`` when the caller has
    validated every name already. The pair objects are kept as they are."""
    if not names_checked:
        for name, _value in pairs:
            if name != METRIC_NAME and not _LABEL_NAME_RE.fullmatch(name):
                raise BadDataError(f"{_PREFIX}: invalid label name {name!r}")
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for name, _value in pairs:
            if name in seen:
                raise BadDataError(f"{_PREFIX}: duplicate label name {name!r}")
            seen.add(name)
    if not found.get(METRIC_NAME):
        raise BadDataError(f"{_PREFIX}: series without a metric name: {found}")
    if "" in found.values():
        return tuple(sorted(pair for pair in pairs if pair[1] != ""))
    return tuple(sorted(pairs))


def field_stops(encoded: list[bytes], prefixes: list[bytes]) -> list[int] | None:
    """How many of the ``encoded`` labels (parsed from the joined ``prefixes``) end each
    prefix, cumulatively; ``None`` unless every byte was a canonically encoded label field
    (tag ``0x0a``, shortest length varint) and every prefix ends at a field's end."""
    n = len(encoded)
    if not n:
        return None
    sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    ends = sizes.cumsum()
    if sizes.max() < 1 << 7:  # tag and a one-byte length: 2 bytes more per field
        ends += np.arange(2, 2 * n + 2, 2)
    else:
        varint = (sizes >= 1 << 7) + (sizes >= 1 << 14) + (sizes >= 1 << 21) + (sizes >= 1 << 28)
        ends += np.cumsum(2 + varint)
    bounds = np.fromiter(accumulate(map(len, prefixes)), dtype=np.int64, count=len(prefixes))
    if ends[-1] != bounds[-1]:
        return None
    at = ends.searchsorted(bounds)
    if not (ends[at] == bounds).all():
        return None
    stops: list[int] = (at + 1).tolist()
    return stops


def _labels(series: remote_pb2.TimeSeries, cache: dict[tuple[str, ...], Labels]) -> Labels:
    flat = tuple(s for label in series.labels for s in (label.name, label.value))
    found = cache.get(flat)
    if found is None:
        found = _checked([(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)])
        cache[flat] = found
    return found


class RemoteWriteDecoder:
    """Decodes remote-write bodies, remembering label sets across requests.

    The cache maps a series' encoded labels to its label tuple (at most ``max_series``
    entries; it starts over when full), so steady-state traffic creates no label objects.
    Safe to share between threads (dict operations are atomic; a lost insert only costs
    a re-parse).
    """

    def __init__(self, max_series: int = 1_000_000) -> None:
        self.max_series = max_series
        self._cache: dict[tuple[bytes, ...], Labels] = {}
        self._prefix_cache: dict[bytes, Labels] = {}  # encoded label fields -> labels
        self._v2_cache: dict[tuple[str, ...], Labels] = {}
        # One object per distinct label pair (and its strings), so 100 series of a host
        # share their instance pair and the store's index can adopt them without copies.
        self._pairs: dict[bytes, tuple[str, str]] = {}
        self._empty_values = False  # whether a pair in _pairs has an empty value
        self._valid_names: set[str] = {METRIC_NAME}

    def _raw_labels(self, encoded: tuple[bytes, ...]) -> Labels:
        found = self._cache.get(encoded)
        if found is not None:
            return found
        if len(self._cache) >= self.max_series:
            self._cache = {}
            self._pairs = {}
        found = self._labels_of(encoded)
        self._cache[encoded] = found
        return found

    def _labels_of(self, encoded: Sequence[bytes]) -> Labels:
        """The label set of encoded ``Label`` messages (pairs shared through ``_pairs``)."""
        return _checked(self.pairs_of(list(encoded)), names_checked=True)

    def _fast(self, raw: bytes) -> SampleBatch | None:
        request = remote_pb2.WriteRequestRaw()
        request.ParseFromString(raw)
        return _gathered(request.timeseries, lambda s: self._raw_labels(tuple(s.labels)))

    def decode(
        self, body: bytes, *, compressed: bool = True, max_bytes: int = DEFAULT_MAX_DECODED_BYTES
    ) -> SampleBatch:
        """Decode one remote-write body (snappy unless ``compressed`` is false)."""
        decoded = self.decode_keyed(body, None, compressed=compressed, max_bytes=max_bytes)
        assert decoded.batch is not None
        return decoded.batch

    def decode_keyed(
        self,
        body: bytes,
        known: Mapping[bytes, int] | None,
        *,
        compressed: bool = True,
        max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    ) -> KeyedDecode:
        """Decode one body; when ``known`` (encoded label fields → store series id) holds
        every series of the request, answer the samples' series ids instead of a batch
        and make no label objects at all. Otherwise a batch, with the encoded label
        fields of each of its series when the request had Prometheus' layout."""
        raw = decompress_snappy(body, max_bytes=max_bytes) if compressed else body
        try:
            split = split_write_request(raw)
            if split is not None:
                if known is not None:
                    ids = known_series_ids(split, known)
                    if ids is not None:
                        return KeyedDecode(None, None, ids, split.ts_ms, split.values)
                keyed = self._from_split(split)
                if keyed is not None:
                    return KeyedDecode(keyed[0], keyed[1])
            batch = self._fast(raw)
        except DecodeError as exc:
            raise BadDataError(f"{_PREFIX}: invalid protobuf: {exc}") from exc
        return KeyedDecode(batch if batch is not None else _decode_slow(raw), None)

    def _from_split(self, split: WireSplit) -> tuple[SampleBatch, list[bytes]] | None:
        """The batch of a vectorised split (and the encoded label fields of each of its
        series): one dictionary lookup per series by its encoded label fields, the
        series not seen before parsed together; ``None`` when a prefix is not purely
        label fields."""
        keys = split.prefixes
        if len(dict.fromkeys(keys)) == len(keys):  # each series once (as Prometheus sends)
            idx = np.arange(len(keys), dtype=np.uint32)
        else:
            numbers: dict[bytes, int] = {}
            idx = np.asarray([numbers.setdefault(p, len(numbers)) for p in keys], np.uint32)
            keys = list(numbers)
        cache = self._prefix_cache
        series: list[Labels | None] | list[Labels] = list(map(cache.get, keys))
        if None in series:
            missing = list(compress(keys, map(operator.is_, series, repeat(None))))
            parsed = self._labels_of_prefixes(missing)
            if parsed is None:
                return None
            if len(cache) + len(missing) > self.max_series:
                cache.clear()
                self._pairs = {}
                self._empty_values = False
            cache.update(zip(missing, parsed, strict=True))
            series = parsed if len(parsed) == len(keys) else list(map(cache.__getitem__, keys))
        series_idx = np.repeat(idx, split.counts)
        return SampleBatch(series, series_idx, split.ts_ms, split.values), keys  # type: ignore[arg-type]

    def _labels_of_prefixes(self, prefixes: list[bytes]) -> list[Labels] | None:
        """The label sets of series' leading bytes, or ``None`` unless each is complete
        label fields. All of them are parsed as one message: the field sizes (when
        every field is a canonically encoded label) must add up to each prefix's end;
        any other layout parses prefix by prefix."""
        joined = b"".join(prefixes)
        try:
            encoded = list(remote_pb2.TimeSeriesRaw.FromString(joined).labels)
        except DecodeError:
            encoded = []
        stops = field_stops(encoded, prefixes)
        if stops is None:
            each = list(map(self._prefix_labels, prefixes))
            return None if None in each else each  # type: ignore[return-value]
        pairs = self.pairs_of(encoded)
        names = list(map(_NAME, pairs))
        if (
            names.count(METRIC_NAME) == len(stops)
            and not (self._empty_values and "" in map(_VALUE, pairs))
            and sorted_within(names, stops)
        ):  # sorted, unique, named, no empty values: the sets are the slices as they are
            return list(map(tuple, map(pairs.__getitem__, map(slice, [0, *stops[:-1]], stops))))
        starts = [0, *stops[:-1]]
        return [
            _checked(pairs[a:b], names_checked=True) for a, b in zip(starts, stops, strict=True)
        ]

    def pairs_of(self, encoded: list[bytes]) -> list[tuple[str, str]]:
        """The shared pair of each encoded ``Label`` message, parsing unseen ones (a
        label name that is not valid raises :class:`BadDataError`). Other decoders of
        the same traffic (the decode worker's replies) take their pairs from here, so
        every label set shares one object per pair and the series index adopts them.
        At most ``max_series`` pairs are kept; then the table starts over (label sets
        made before keep their pairs)."""
        shared = self._pairs
        pairs = list(map(shared.get, encoded))
        if None in pairs:
            if len(shared) >= self.max_series:
                shared = self._pairs = {}
                self._empty_values = False
                pairs = [None] * len(encoded)
            for item in set(compress(encoded, map(operator.is_, pairs, repeat(None)))):
                label = remote_pb2.Label.FromString(item)
                name = label.name
                if name not in self._valid_names:
                    if not _LABEL_NAME_RE.fullmatch(name):
                        raise BadDataError(f"{_PREFIX}: invalid label name {name!r}")
                    self._valid_names.add(name)
                self._empty_values |= not label.value  # (set before it is shared)
                shared[item] = (sys.intern(name), label.value)
            pairs = list(map(shared.__getitem__, encoded))
        return pairs  # type: ignore[return-value]

    def _prefix_labels(self, prefix: bytes) -> Labels | None:
        """The label set of a series' leading bytes, or ``None`` unless they are
        complete fields without samples (then the split is not trusted)."""
        try:
            fields = remote_pb2.TimeSeriesRaw.FromString(prefix)
        except DecodeError:
            return None
        if fields.samples:
            return None
        return self._labels_of(fields.labels)

    # -- remote write 2.0 ---------------------------------------------------------------

    def _v2_labels(self, symbols: list[str], refs: list[int]) -> Labels:
        if len(refs) % 2:
            raise BadDataError(f"{_PREFIX}: labels_refs has an odd length")
        try:
            pairs = [(symbols[refs[i]], symbols[refs[i + 1]]) for i in range(0, len(refs), 2)]
        except IndexError:
            raise BadDataError(f"{_PREFIX}: a label reference is outside symbols") from None
        key = tuple(s for pair in pairs for s in pair)
        found = self._v2_cache.get(key)
        if found is None:
            found = _checked(pairs)
            if len(self._v2_cache) >= self.max_series:
                self._v2_cache = {}
            self._v2_cache[key] = found
        return found

    def decode_v2(
        self, body: bytes, *, compressed: bool = True, max_bytes: int = DEFAULT_MAX_DECODED_BYTES
    ) -> SampleBatch:
        """Decode an ``io.prometheus.write.v2.Request`` body (float samples only)."""
        raw = decompress_snappy(body, max_bytes=max_bytes) if compressed else body
        request = write_v2_pb2.RequestRaw()
        try:
            request.ParseFromString(raw)
        except DecodeError as exc:
            raise BadDataError(f"{_PREFIX}: invalid protobuf: {exc}") from exc
        symbols = list(request.symbols)
        batch = _gathered(
            request.timeseries,
            lambda s: self._v2_labels(symbols, list(s.labels_refs)),
            _v2_samples_slow,
        )
        assert batch is not None  # the slow sample decoder never gives up
        return batch


def _gathered(
    timeseries: Iterable[Any],
    labels_of: Callable[[Any], Labels],
    slow_samples: Callable[[list[bytes]], tuple[NDArray[np.int64], NDArray[np.float64]]]
    | None = None,
) -> SampleBatch | None:
    """One batch of the float samples of ``timeseries`` (raw protobuf messages with a
    ``samples`` list of serialised samples; series without any are skipped), labels by
    ``labels_of``. The samples' fields are decoded all at once; when that fails they go
    to ``slow_samples``, or without one the result is ``None``."""
    index: dict[Labels, int] = {}
    numbers: list[int] = []
    counts: list[int] = []
    chunks: list[bytes] = []
    for series in timeseries:
        samples = series.samples
        if not samples:
            continue  # e.g. a histogram-only series
        numbers.append(index.setdefault(labels_of(series), len(index)))
        counts.append(len(samples))
        chunks.extend(samples)
    if not counts:
        return SampleBatch.empty()
    lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
    ends = np.cumsum(lengths)
    decoded = decode_sample_fields(np.frombuffer(b"".join(chunks), np.uint8), ends - lengths, ends)
    if decoded is None:
        if slow_samples is None:
            return None
        decoded = slow_samples(chunks)
    ts, values = decoded
    idx = np.repeat(np.asarray(numbers, dtype=np.uint32), counts)
    return SampleBatch(list(index), idx, ts, values)


def _v2_samples_slow(chunks: list[bytes]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    ts: list[int] = []
    values: list[float] = []
    for chunk in chunks:
        try:
            sample = write_v2_pb2.Sample.FromString(chunk)
        except DecodeError as exc:
            raise BadDataError(f"{_PREFIX}: invalid protobuf: {exc}") from exc
        ts.append(sample.timestamp)
        values.append(sample.value)
    return np.asarray(ts, dtype=np.int64), np.asarray(values, dtype=np.float64)


def decode_write_request(
    body: bytes, *, compressed: bool = True, max_bytes: int = DEFAULT_MAX_DECODED_BYTES
) -> SampleBatch:
    """Decode one remote-write body without a cross-request label cache."""
    return RemoteWriteDecoder().decode(body, compressed=compressed, max_bytes=max_bytes)


def _decode_slow(raw: bytes) -> SampleBatch:
    """The protobuf runtime's decode (any valid layout)."""
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
