"""Vectorised split of a remote-write 1.0 ``WriteRequest`` as Prometheus lays it out.

Prometheus encodes each ``TimeSeries`` as its label fields followed by its sample
fields, and each sample as ``0x12 len | 0x09 f64 | 0x10 varint`` (the value field is
left out when it is 0.0). :func:`split_write_request` finds every sample field of the
request at once with numpy instead of materialising one byte string per sample:

1. the protobuf runtime splits the request into its encoded ``TimeSeries`` (a
   ``WriteRequest`` read as ``TimeSeriesRaw``: field 1 is ``repeated bytes`` in both);
2. candidate sample fields are the ``0x12`` bytes followed by a plausible length and
   a sample's first tag; per series, the candidates must chain exactly from the first
   one to the end of the series (each one's end is the next one's start). A chain that
   starts at a field boundary (which the caller checks: the bytes before it must parse
   as complete label fields) is then the series' real field sequence, so a stray
   ``0x12`` inside a label value or a float can only make the split fail, never lie;
3. timestamps (6-byte varints: every millisecond time from 1971 to 2109) and values
   are read with one gather each through an overlapping, unaligned 8-byte view.

Anything else — exemplars or histograms after the samples, other varint lengths,
series without samples — returns ``None`` and the caller uses the general decoder.

Most requests take a shorter road first (:func:`_split_walk`): when every label field
has a one-byte length and every sample a value, the label fields of all series are
stepped over at once (one table lookup per label), which lands exactly on each series'
first sample field, and the samples are read as fixed 18-byte records. Any other
layout makes the walk decline and the scan above decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoringserver.model.samples import SampleBatch
from monitoringserver.proto.prompb import remote_pb2

__all__ = [
    "KeyedDecode",
    "WireSplit",
    "decode_sample_fields",
    "known_series_ids",
    "split_write_request",
]

_PAD = bytes(256)  # every 8-byte read and every label-walk step stays inside the buffer


@dataclass(frozen=True, slots=True)
class WireSplit:
    """``prefixes[i]``: the encoded label fields of series ``i`` (a cache key);
    ``counts[i]``: its number of samples; ``ts_ms``/``values``: every sample, series
    after series, in wire order."""

    prefixes: list[bytes]
    counts: NDArray[np.int64]
    ts_ms: NDArray[np.int64]
    values: NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class KeyedDecode:
    """A decoded request, one of two shapes. ``batch`` (with ``keys[i]``: the encoded
    label fields of ``batch.series[i]``, or ``keys`` ``None`` when the request's layout
    gave none); or, when every series was already known, no batch and the store series
    id of every sample (``series_ids``, ``ts_ms``, ``values``: equal lengths).
    ``reply_id``: a batch from the decode worker, which keeps its keys under this id
    (learn its series with ``DecodeWorker.learn_reply``; ``keys`` is then ``None``)."""

    batch: SampleBatch | None
    keys: list[bytes] | None
    series_ids: NDArray[np.uint64] | None = None
    ts_ms: NDArray[np.int64] | None = None
    values: NDArray[np.float64] | None = None
    reply_id: int | None = None


def known_series_ids(split: WireSplit, known: Mapping[bytes, int]) -> NDArray[np.uint64] | None:
    """The store series id of every sample of ``split`` when ``known`` maps each of its
    series' encoded label fields to one; else ``None``. One dictionary lookup per series."""
    found = list(map(known.get, split.prefixes))
    if None in found:
        return None
    per_series = np.fromiter(found, dtype=np.uint64, count=len(found))
    return np.repeat(per_series, split.counts)


def split_write_request(raw: bytes) -> WireSplit | None:
    """Split an uncompressed ``WriteRequest``; ``None`` when its layout is not the one
    described in the module docstring (or it holds no series). Raises the protobuf
    runtime's ``DecodeError`` for bytes that are not a message at all."""
    series = remote_pb2.TimeSeriesRaw.FromString(raw).labels
    n = len(series)
    if n == 0:
        return None
    lengths = np.fromiter(map(len, series), dtype=np.int64, count=n)
    ends = np.cumsum(lengths)
    joined = b"".join([*series, _PAD])
    buf = np.frombuffer(joined, dtype=np.uint8)
    walked = _split_walk(series, buf, ends - lengths, ends)
    if walked is not None:
        return walked
    # words[i]: the 8 bytes starting at byte i (overlapping, unaligned reads).
    words = np.ndarray(shape=(len(joined) - 7,), dtype="<u8", buffer=joined, strides=(1,))
    cand = np.flatnonzero(buf[: int(ends[-1])] == 0x12)
    head = words[cand] & _HEAD_MASK
    full = head == _FULL_HEAD
    plausible = full | (head == _ZERO_HEAD)
    if not plausible.all():
        cand, full = cand[plausible], full[plausible]
    if len(cand) == 0:
        return None
    nxt = cand + np.where(full, 18, 9)
    if (cand[1:] < nxt[:-1]).any():
        keep = _outside(cand.tolist(), nxt.tolist())
        cand, full, nxt = cand[keep], full[keep], nxt[keep]
    owner = np.searchsorted(ends, cand, side="right")
    first = np.empty(len(cand), dtype=np.bool_)
    first[0] = True
    np.not_equal(owner[1:], owner[:-1], out=first[1:])
    # Each field ends where the next one of its series starts; the last ends the series.
    chained = nxt[:-1] == cand[1:]
    chained |= first[1:]
    if not chained.all():
        return None
    firsts = np.flatnonzero(first)
    if len(firsts) != n:
        return None  # a series without samples
    lasts = np.append(firsts[1:] - 1, len(cand) - 1)
    if not (nxt[lasts] == ends).all():
        return None
    decoded = _decode_fixed(words, cand, full)
    if decoded is None:
        return None
    cuts = (cand[firsts] - (ends - lengths)).tolist()
    prefixes = [s[:k] for s, k in zip(series, cuts, strict=True)]
    counts = np.diff(np.append(firsts, len(cand)))
    return WireSplit(prefixes, counts, decoded[0], decoded[1])


def _split_walk(
    series: Sequence[bytes],
    buf: NDArray[np.uint8],
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
) -> WireSplit | None:
    """The common case in fewer steps: every label field has a one-byte length and every
    sample has a value (18-byte fields). Walks the label fields of all series at once
    (one step per label), then reads the samples as fixed 18-byte records; ``None`` when
    the request is not laid out so (the caller then scans for sample fields)."""
    # pairs[i]: bytes i and i + 1 (a field's tag and one-byte length), overlapping reads.
    pairs = np.ndarray(shape=(len(buf) - 1,), dtype="<u2", buffer=buf, strides=(1,))
    pos = starts.copy()
    for _ in range(_MAX_WALK):
        step = _LABEL_STEP[pairs[pos]]
        if not np.count_nonzero(step):  # (C-level; no Python wrapper per step)
            break
        pos += step
    else:
        return None
    counts, rest = np.divmod(ends - pos, 18)
    if np.count_nonzero(rest) or np.count_nonzero(counts <= 0):
        return None
    cuts = (pos - starts).tolist()
    records = b"".join([s[k:] for s, k in zip(series, cuts, strict=True)])
    rows = np.frombuffer(records, dtype=_SAMPLE_RECORD)
    if np.count_nonzero((rows["head"] & _HEAD_MASK) != _FULL_HEAD):
        return None
    ts = _varint6(rows["tail"] >> _U8)
    if ts is None:
        return None
    values = np.ascontiguousarray(rows["value"]).view(np.float64)
    prefixes = [s[:k] for s, k in zip(series, cuts, strict=True)]
    return WireSplit(prefixes, counts, ts, values)


def _outside(cand: list[int], nxt: list[int]) -> NDArray[np.bool_]:
    """Candidates not inside the field of the last kept one before them. A float can
    hold bytes that look like a field start; this rare case costs a Python scan. A wrong
    guess (a stray kept before a real field) only makes the chain check fail."""
    keep = np.zeros(len(cand), dtype=np.bool_)
    end = -1
    for i, (start, stop) in enumerate(zip(cand, nxt, strict=True)):
        if start >= end:
            keep[i] = True
            end = stop
    return keep


def _decode_fixed(
    words: NDArray[np.uint64], cand: NDArray[np.intp], full: NDArray[np.bool_]
) -> tuple[NDArray[np.int64], NDArray[np.float64]] | None:
    """Timestamps and values of the sample fields at ``cand`` (``full``: 16-byte payload
    with a value, else 7 bytes without); ``None`` unless every timestamp tag is in
    place and every varint has 6 bytes."""
    # The 8 bytes from the timestamp tag: tag, 6 varint bytes, one more.
    ts = _varint6(words[cand + np.where(full, 11, 2)])
    if ts is None:
        return None
    values = words[cand + 3].view(np.float64)
    if not full.all():  # a field without a value holds 0.0 (its 8 bytes are not a value)
        values = np.where(full, values, 0.0)
    return ts, values


def _varint6(w: NDArray[np.uint64]) -> NDArray[np.int64] | None:
    """The timestamps of 8-byte words starting at a timestamp tag (tag, 6 varint bytes,
    one more); ``None`` unless every tag is in place and every varint has 6 bytes."""
    if np.count_nonzero((w & _TS_MASK) != _TS_WANT):
        return None
    # Compact the six 7-bit groups: pairs into 14 bits, pairs of those into 28, then 42.
    w = (w >> _U8) & _LOW7
    w = (w & _P1_LO) | ((w & _P1_HI) >> _U1)
    w = (w & _P2_LO) | ((w & _P2_HI) >> _U2)
    w = (w & _P3_LO) | ((w >> _U32) << _U28)
    return w.view(np.int64)


#: Most label fields a series may have for the walk (more: the scan decides).
_MAX_WALK = 64
#: By a field's first two bytes (little-endian): how far a label field with a one-byte
#: length reaches (tag 0x0a, length < 128), else 0: the walk stops there. A series that
#: stops at a longer label field then fails the sample-record checks. Steps reach at most
#: 129 bytes past a series' end, into the next series or the padding (``_PAD``), where
#: the zeros stop the walk; an overshoot fails the length check.
_LABEL_STEP = np.zeros(1 << 16, dtype=np.int64)
_LABEL_STEP[0x0A | (np.arange(128) << 8)] = np.arange(128) + 2
#: A sample field with a value: ``0x12 0x10 | 0x09 f64 | 0x10 varint(6)``, 18 bytes, read
#: as its first 4 bytes, the value's 8 bytes and the last 8 (a value byte, then the
#: timestamp tag and varint).
_SAMPLE_RECORD = np.dtype(
    {"names": ["head", "value", "tail"], "formats": ["<u4", "<u8", "<u8"],
     "offsets": [0, 3, 10], "itemsize": 18}
)  # fmt: skip
_HEAD_MASK = np.uint64(0xFFFFFF)
_FULL_HEAD = np.uint64(0x091012)  # 0x12, length 16, value tag
_ZERO_HEAD = np.uint64(0x100712)  # 0x12, length 7, timestamp tag (value 0.0 left out)
# Timestamp tag 0x10, five varint bytes with the continuation bit, a sixth without.
_TS_MASK = np.uint64(0x00808080808080FF)
_TS_WANT = np.uint64(0x0000808080808010)
_LOW7 = np.uint64(0x00007F7F7F7F7F7F)
_P1_LO, _P1_HI = np.uint64(0x00007F007F007F), np.uint64(0x00007F007F007F00)
_P2_LO, _P2_HI = np.uint64(0x00003FFF00003FFF), np.uint64(0x3FFF00003FFF0000)
_P3_LO = np.uint64(0x0FFFFFFF)
_U1, _U2, _U8, _U28, _U32 = (np.uint64(k) for k in (1, 2, 8, 28, 32))


#: Byte weights of a 6-byte varint (every millisecond timestamp from 2001 to 2112).
_VARINT6_SHIFTS = np.arange(0, 42, 7, dtype=np.uint64)
_CONT6 = np.array([0x80, 0x80, 0x80, 0x80, 0x80, 0x00], dtype=np.uint8)


def _decode_fixed16(
    buf: NDArray[np.uint8],
) -> tuple[NDArray[np.int64], NDArray[np.float64]] | None:
    """The common layout, every sample exactly ``0x09 f64 0x10 varint(6 bytes)``: one
    reshape and a few column operations. ``None`` when any row is not that layout."""
    rows = buf.reshape(-1, 16)
    digits = rows[:, 10:16]
    if (
        (rows[:, 0] != 0x09).any()
        or (rows[:, 9] != 0x10).any()
        or ((digits & 0x80) != _CONT6).any()
    ):
        return None
    values = np.ascontiguousarray(rows[:, 1:9]).view("<f8").reshape(-1).astype(np.float64)
    parts = (digits & 0x7F).astype(np.uint64) << _VARINT6_SHIFTS
    ts = np.bitwise_or.reduce(parts, axis=1).view(np.int64)
    return ts, values


def decode_sample_fields(
    buf: NDArray[np.uint8], starts: NDArray[np.int64], ends: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.float64]] | None:
    """Vectorised decode of concatenated ``Sample`` messages (``[0x09 f64][0x10 varint]``,
    either field absent when zero). ``None`` when any sample has another layout (the
    caller then falls back to the protobuf runtime)."""
    n = len(starts)
    if n and len(buf) == 16 * n and bool(((ends - starts) == 16).all()):
        fixed = _decode_fixed16(buf)
        if fixed is not None:
            return fixed
    padded = np.concatenate([buf, np.zeros(24, dtype=np.uint8)])
    has_value = (padded[starts] == 0x09) & (ends - starts >= 9)
    value_idx = (starts + 1)[:, None] + np.arange(8)
    raw = np.where(has_value[:, None], padded[value_idx], 0).astype(np.uint8)
    values = raw.reshape(-1).view("<f8").astype(np.float64, copy=False)
    pos = starts + 9 * has_value
    has_ts = (pos < ends) & (padded[pos] == 0x10)
    vlen = np.where(has_ts, ends - pos - 1, 0)
    if (~has_ts & (pos != ends)).any() or (vlen > 10).any() or (has_ts & (vlen < 1)).any():
        return None
    j = np.arange(10)
    digits = padded[(pos + 1)[:, None] + j].astype(np.uint64)
    inside = j < vlen[:, None]
    last = j == (vlen - 1)[:, None]
    cont = (digits & np.uint64(0x80)) != 0
    if (inside & ~last & ~cont).any() or (last & inside & cont).any():
        return None
    parts = np.where(inside, (digits & np.uint64(0x7F)) << (np.uint64(7) * j.astype(np.uint64)), 0)
    ts = np.bitwise_or.reduce(parts.astype(np.uint64), axis=1).view(np.int64)
    if len(ts) != n:
        return None
    return ts, values
