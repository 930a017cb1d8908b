"""The WAL record of one acknowledged metric batch: columnar and compact.

Layout (little-endian): ``version u8 | flags u8 | batch_seq i64 | agent_id (u16 len + utf-8)
| new series (u32 len + JSON [[id, source, [[name, value], ...]], ...]) | n u32 |
series ids (u32 or u64 per flags) | ts (i64 base + u32 deltas, or i64 per flags) |
values f64``. New series travel with the first batch that uses them, so a replay can
rebuild the index before the ``metric_series`` table has them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import StorageError
from monitoringserver.metrics.index import NewSeries

__all__ = [
    "MetricFrame",
    "SeriesRows",
    "decode_frame",
    "encode_frame",
    "series_columns",
    "series_rows",
]

_VERSION = 1
_SID32 = 1
_TS32 = 2
_HEAD = struct.Struct("<BBq")
_JSON = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class SeriesRows:
    """New series as ``metric_series`` columns: ids, the JSON text of each label set
    (``[[name, value], ...]``) and the creating source."""

    ids: NDArray[np.uint64]
    labels: NDArray[np.object_]
    sources: NDArray[np.object_]


def series_rows(series: tuple[NewSeries, ...]) -> SeriesRows:
    """The rows of ``series``: made once per frame, when it is built, and used by both
    the WAL record and the head commit."""
    encode = _JSON.encode
    return SeriesRows(
        np.fromiter((s.series_id for s in series), dtype=np.uint64, count=len(series)),
        np.array([encode(s.labels).decode() for s in series], dtype=object),
        np.array([s.source for s in series], dtype=object),
    )


@dataclass(frozen=True, slots=True)
class MetricFrame:
    series_ids: NDArray[np.uint64]
    ts_ms: NDArray[np.int64]
    values: NDArray[np.float64]
    new_series: tuple[NewSeries, ...] = ()
    agent_id: str = ""
    batch_seq: int = -1
    #: ``series_rows(new_series)`` when the builder made them already.
    rows: SeriesRows | None = None

    def new_rows(self) -> SeriesRows:
        """``rows``, or made from ``new_series`` (replayed frames). A frame with ``rows``
        and no ``new_series`` is a queued one whose series objects were let go."""
        if self.rows is not None and (
            not self.new_series or len(self.rows.ids) == len(self.new_series)
        ):
            return self.rows
        return series_rows(self.new_series)


def encode_frame(frame: MetricFrame) -> bytes:
    sids, ts = frame.series_ids, frame.ts_ms
    flags = 0
    n = len(ts)
    if n == 0 or int(sids.max()) < 2**32:
        flags |= _SID32
    base = int(ts.min()) if n else 0
    if n == 0 or int(ts.max()) - base < 2**32:
        flags |= _TS32
    agent = frame.agent_id.encode()
    # Label tuples serialise as JSON arrays as they are: no per-label conversion.
    defs = (
        _JSON.encode(
            [
                (s.series_id, s.source, msgspec.Raw(text))
                for s, text in zip(frame.new_series, frame.new_rows().labels, strict=True)
            ]
        )
        if frame.new_series
        else b"[]"
    )
    out = [
        _HEAD.pack(_VERSION, flags, frame.batch_seq),
        struct.pack("<H", len(agent)),
        agent,
        struct.pack("<I", len(defs)),
        defs,
        struct.pack("<I", n),
        (sids.astype(np.uint32) if flags & _SID32 else sids.astype(np.uint64)).tobytes(),
    ]
    if flags & _TS32:
        out += [struct.pack("<q", base), (ts - base).astype(np.uint32).tobytes()]
    else:
        out.append(ts.astype(np.int64).tobytes())
    out.append(frame.values.astype(np.float64).tobytes())
    return b"".join(out)


def decode_frame(payload: bytes) -> MetricFrame:
    try:
        version, flags, seq = _HEAD.unpack_from(payload, 0)
        if version != _VERSION:
            raise StorageError(f"cannot decode WAL record: unknown version {version}")
        pos = _HEAD.size
        (alen,) = struct.unpack_from("<H", payload, pos)
        pos += 2
        agent = payload[pos : pos + alen].decode()
        pos += alen
        (dlen,) = struct.unpack_from("<I", payload, pos)
        pos += 4
        defs = msgspec.json.decode(payload[pos : pos + dlen])
        pos += dlen
        (n,) = struct.unpack_from("<I", payload, pos)
        pos += 4
        sid_t = np.uint32 if flags & _SID32 else np.uint64
        sids = np.frombuffer(payload, dtype=sid_t, count=n, offset=pos).astype(np.uint64)
        pos += n * np.dtype(sid_t).itemsize
        if flags & _TS32:
            (base,) = struct.unpack_from("<q", payload, pos)
            pos += 8
            ts = np.frombuffer(payload, dtype=np.uint32, count=n, offset=pos).astype(np.int64)
            ts += base
            pos += 4 * n
        else:
            ts = np.frombuffer(payload, dtype=np.int64, count=n, offset=pos).copy()
            pos += 8 * n
        values = np.frombuffer(payload, dtype=np.float64, count=n, offset=pos).copy()
    except (struct.error, ValueError, UnicodeDecodeError, msgspec.DecodeError) as exc:
        raise StorageError(f"cannot decode WAL record: {exc}") from exc
    new = tuple(
        NewSeries(int(i), tuple((str(k), str(v)) for k, v in lbls), str(src))
        for i, src, lbls in defs
    )
    return MetricFrame(sids, ts, values, new, agent, int(seq))


def series_columns(frames: list[MetricFrame]) -> dict[str, NDArray[Any]] | None:
    """``metric_series`` rows of the frames' new series as columns (``None`` when there
    are none). The rows were made with each frame, so this only concatenates arrays: it
    runs on the writer thread, where Python loops would hold the GIL against the event
    loop. A replay may carry a series twice: the insert ignores ids already present."""
    rows = [
        f.new_rows() for f in frames if f.new_series or (f.rows is not None and len(f.rows.ids))
    ]
    if not rows:
        return None
    return {
        "id": np.concatenate([r.ids for r in rows]),
        "labels": np.concatenate([r.labels for r in rows]),
        "source": np.concatenate([r.sources for r in rows]),
    }
