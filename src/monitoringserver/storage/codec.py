"""Lossless column encoding of samples before the Parquet write.

Values that are decimals in disguise (integers, ``12.34``) become integer mantissas with
a per-series decimal scale, delta-encoded per series (first or second order, whichever
is smaller for that series); timestamps are delta-encoded per series too. Parquet's zstd
then sees small repeating integers instead of float bit patterns. A sample whose value
does not survive ``mantissa / 10**scale == value`` bit for bit (NaN, ±Inf, the staleness
marker, -0.0, values with more digits) keeps its raw float bits; the round trip is exact
for every float64.

Input and output rows are sorted by ``(series_id, ts)``; decoding needs the rows in the
order they were encoded (the file order), which readers restore with ``file_row_number``.

Columns: ``series_id`` uint64, ``ts`` int64 (first of a series absolute, then deltas),
``m`` int64 (mantissa deltas, or raw bits), ``enc`` int8 (``scale | 16*second_order`` for
decimal samples, ``RAW`` for raw-bits samples).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["RAW", "decode", "encode", "segment_gather", "segment_starts", "series_order"]

RAW = np.int8(-1)
_SECOND_ORDER = 16
_P10 = np.array([10.0**k for k in range(16)], dtype=np.float64)
_MAX_MANTISSA = float(2**53)

EncodedColumns = dict[str, NDArray[Any]]


def segment_starts(series_id: NDArray[np.uint64]) -> NDArray[np.intp]:
    """Indices where a new series begins in a series-sorted array."""
    if len(series_id) == 0:
        return np.empty(0, dtype=np.intp)
    change = np.flatnonzero(series_id[1:] != series_id[:-1]) + 1
    return np.concatenate(([0], change)).astype(np.intp)


def segment_gather(
    starts: NDArray[np.intp], lengths: NDArray[np.int64], order: NDArray[np.intp]
) -> NDArray[np.int64]:
    """Row indices that take whole segments (``starts``, ``lengths``) in ``order``."""
    lens = lengths[order]
    first = np.cumsum(lens) - lens
    rows: NDArray[np.int64] = np.repeat(starts[order] - first, lens) + np.arange(
        int(lens.sum()), dtype=np.int64
    )
    return rows


def series_order(
    sid: NDArray[np.uint64], ts: NDArray[np.int64], values: NDArray[np.float64]
) -> tuple[NDArray[np.uint64], NDArray[np.int64], NDArray[np.float64]]:
    """Rows whose series are contiguous (in any order) rearranged so the series come in
    ascending id order; each series' rows keep their order. Returns the inputs
    themselves when they already are."""
    starts = segment_starts(sid)
    heads = sid[starts]
    if len(heads) < 2 or bool(np.all(heads[1:] > heads[:-1])):
        return sid, ts, values
    lengths = np.diff(np.append(starts, len(sid)))
    rows = segment_gather(starts, lengths, np.argsort(heads, kind="stable"))
    return sid[rows], ts[rows], values[rows]


def _segmented_diff(x: NDArray[np.int64], starts: NDArray[np.intp]) -> NDArray[np.int64]:
    out = np.empty_like(x)
    if len(x):
        out[0] = x[0]
        np.subtract(x[1:], x[:-1], out=out[1:])
        out[starts] = x[starts]
    return out


def _segmented_cumsum(d: NDArray[np.int64], starts: NDArray[np.intp]) -> NDArray[np.int64]:
    """Running sums restarting at each segment start (int64, wrapping like the encoder)."""
    if len(d) == 0:
        return d.copy()
    x = d.copy()
    if len(starts) > 1:
        # Cancel each previous segment's total at the next start: one cumsum does all.
        totals = np.add.reduceat(d, starts)
        x[starts[1:]] -= totals[:-1]
    result: NDArray[np.int64] = np.cumsum(x, out=x)
    return result


def _scales(values: NDArray[np.float64], max_digits: int) -> NDArray[np.int8]:
    """Smallest decimal scale per sample at which it round-trips, or -1."""
    scale = np.full(len(values), -1, dtype=np.int8)
    todo = np.isfinite(values) & ~((values == 0) & np.signbit(values))
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(max_digits + 1):
            idx = np.flatnonzero(todo)
            if not len(idx):
                break
            v = values[idx] if len(idx) < len(values) else values
            m = np.rint(v * _P10[k])
            ok = np.abs(m) < _MAX_MANTISSA
            np.divide(m, _P10[k], out=m)
            ok &= m == v
            del m, v
            done = idx[ok]
            scale[done] = k
            todo[done] = False
    return scale


def encode(
    series_id: NDArray[np.uint64],
    ts: NDArray[np.int64],
    values: NDArray[np.float64],
    *,
    max_digits: int = 9,
) -> EncodedColumns:
    """Encode rows whose series are contiguous, each in time order (usually sorted by
    ``(series_id, ts)``); see the module docstring for the columns. Every series is
    encoded on its own, so encoding whole series in another order gives the same rows
    in that order. Temporaries stay near 40 bytes per row besides the output."""
    n = len(series_id)
    starts = segment_starts(series_id)
    lengths = np.diff(np.append(starts, n))
    sample_scale = _scales(values, max_digits)
    # One scale per series keeps mantissas comparable, so deltas stay small.
    series_scale = np.maximum.reduceat(sample_scale, starts) if n else np.empty(0, dtype=np.int8)
    scale = np.repeat(np.maximum(series_scale, 0), lengths)
    with np.errstate(over="ignore", invalid="ignore"):
        m = values * _P10[scale]
        np.rint(m, out=m)
        decimal = sample_scale >= 0
        del sample_scale
        decimal &= np.abs(m) < _MAX_MANTISSA
        back = m / _P10[scale]
        decimal &= back == values
        del back
    m[~decimal] = 0
    mant = m.astype(np.int64)
    del m

    # Deltas run over the decimal samples of each series only; raw samples sit between.
    every = bool(decimal.all())
    dec_idx = None if every else np.flatnonzero(decimal)
    dec_starts = starts if dec_idx is None else segment_starts(series_id[dec_idx])
    dec_mant = mant if dec_idx is None else mant[dec_idx]
    del mant
    d1 = _segmented_diff(dec_mant, dec_starts)
    del dec_mant
    d2 = _segmented_diff(d1, dec_starts)
    n_dec = len(d1)
    dec_lengths = np.diff(np.append(dec_starts, n_dec))
    if n_dec:
        cost1 = np.add.reduceat(np.abs(d1), dec_starts)
        cost2 = np.add.reduceat(np.abs(d2), dec_starts)
    else:
        cost1 = cost2 = np.empty(0, np.int64)
    second = np.repeat(cost2 < cost1, dec_lengths)
    np.copyto(d1, d2, where=second)  # d1 now holds the chosen deltas
    del d2
    dec_enc = scale if dec_idx is None else scale[dec_idx]
    dec_enc = dec_enc.astype(np.int8) + second.astype(np.int8) * np.int8(_SECOND_ORDER)
    if dec_idx is None:
        m_col, enc = d1, dec_enc
    else:
        m_col = values.view(np.int64).copy()
        m_col[dec_idx] = d1
        enc = np.full(n, RAW, dtype=np.int8)
        enc[dec_idx] = dec_enc
    return {
        "series_id": np.ascontiguousarray(series_id, dtype=np.uint64),
        "ts": _segmented_diff(np.ascontiguousarray(ts, dtype=np.int64), starts),
        "m": m_col,
        "enc": enc,
    }


def _decode_decimal(
    m: NDArray[np.int64], enc: NDArray[np.int8], starts: NDArray[np.intp], out: NDArray[np.float64]
) -> None:
    """Decimal samples (mantissa deltas, per-series ``starts``) into ``out``. Holds
    about 10 bytes per sample besides ``m`` and ``out`` (17 when some series are
    second-order and not all share one decimal scale)."""
    first = _segmented_cumsum(m, starts)
    second = enc >= _SECOND_ORDER
    if bool(second.any()):
        both = _segmented_cumsum(first, starts)
        np.copyto(first, both, where=second)
        del both
    del second
    scale = enc % _SECOND_ORDER
    lo, hi = (int(scale.min()), int(scale.max())) if len(scale) else (0, 0)
    if lo == hi:  # one scale for every sample (common): no per-sample divisor array
        np.divide(first, _P10[lo], out=out)
    else:
        np.divide(first, _P10[scale], out=out)


def decode(
    series_id: NDArray[np.uint64],
    ts: NDArray[np.int64],
    m: NDArray[np.int64],
    enc: NDArray[np.int8],
) -> tuple[NDArray[np.uint64], NDArray[np.int64], NDArray[np.float64]]:
    """Invert :func:`encode`; the rows must be complete series in encoded order."""
    series_id = np.asarray(series_id, dtype=np.uint64)
    starts = segment_starts(series_id)
    ts_out = _segmented_cumsum(np.asarray(ts, dtype=np.int64), starts)
    m = np.asarray(m, dtype=np.int64)
    enc = np.asarray(enc, dtype=np.int8)
    decimal = enc != RAW
    if bool(decimal.all()):
        # The common case: every sample decimal, so no gathers and the same segments.
        values = np.empty(len(m), dtype=np.float64)
        _decode_decimal(m, enc, starts, values)
        return series_id, ts_out, values
    values = m.view(np.float64).copy()
    if decimal.any():
        dec_idx = np.flatnonzero(decimal)
        out = np.empty(len(dec_idx), dtype=np.float64)
        _decode_decimal(m[dec_idx], enc[dec_idx], segment_starts(series_id[dec_idx]), out)
        values[dec_idx] = out
    return series_id, ts_out, values
