"""The WAL record of one acknowledged metric batch: columnar and compact.

Layout (little-endian): ``version u8 | flags u8 | batch_seq i64 | agent_id (u16 len + utf-8)
| series blocks (u32 len + JSON [[first_id, source, count], ...]) | their label sets
(u32 len + JSON [[[[name, value], ...], ...], ...]: an array of label sets per block)
| n u32 | series ids (u32 or u64 per flags) | ts (i64 base + u32 deltas, or i64 per
flags) | values f64``.
New series travel with the first batch that uses them, so a replay can rebuild the
index before the ``metric_series`` table has them. Version 1 records (one
``[id, source, labels]`` entry per new series in a single JSON section) still decode.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import duckdb
import msgspec
import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import StorageError
from monitoringserver.metrics.index import NewSeries, SeriesBlock
from monitoringserver.metrics.schema import set_state
from monitoringserver.model.labels import Labels

__all__ = [
    "INSERT_SERIES",
    "MetricFrame",
    "SampleStage",
    "SeriesRows",
    "StagedRows",
    "decode_frame",
    "encode_frame",
    "head_commit",
    "series_columns",
    "series_rows",
]

_VERSION = 2
_SID32 = 1
_TS32 = 2
_HEAD = struct.Struct("<BBq")
_BASE = struct.Struct("<q")
_JSON = msgspec.json.Encoder()
_BLOCKS = msgspec.json.Decoder(list[tuple[int, str, int]])
_LABEL_SETS = msgspec.json.Decoder(list[list[tuple[tuple[str, str], ...]]])
_NO_SIDS = np.empty(0, dtype=np.uint64)
_NO_TS = np.empty(0, dtype=np.int64)
_NO_VALUES = np.empty(0, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class SeriesRows:
    """New series as ``metric_series`` rows, a block at a time: each block's first id,
    its number of series, the JSON text of its label sets (``[[[name, value], ...],
    ...]``) and the creating source. :data:`INSERT_SERIES` splits the text into one row
    per series inside the database."""

    first_ids: NDArray[np.uint64]
    counts: NDArray[np.int64]
    labels: NDArray[np.object_]
    sources: NDArray[np.object_]


#: Inserts the rows of :func:`series_columns` (scanned as ``defs``) into ``metric_series``:
#: series ``i`` of a block gets id ``first + i`` and the JSON text of its label set. A
#: replay may carry a series twice: ids already present are ignored.
INSERT_SERIES = (
    "INSERT OR IGNORE INTO metric_series SELECT id, labels::VARCHAR, source, NULL, NULL FROM "
    "(SELECT unnest(range(first::BIGINT, first::BIGINT + n)) AS id, "
    "unnest(json_extract(labels, '$[*]')) AS labels, source FROM defs)"
)


def series_rows(blocks: Sequence[SeriesBlock]) -> SeriesRows:
    """The rows of ``blocks``: made once per frame, when it is built, and used by both
    the WAL record and the head commit. One C-level encoding call per block."""
    encode = _JSON.encode
    return SeriesRows(
        np.fromiter((b.first_id for b in blocks), dtype=np.uint64, count=len(blocks)),
        np.fromiter(map(len, blocks), dtype=np.int64, count=len(blocks)),
        _objects([encode(b.labels).decode() for b in blocks]),
        _objects([b.source for b in blocks]),
    )


def _objects(items: list[str]) -> NDArray[np.object_]:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


@dataclass(frozen=True, slots=True)
class MetricFrame:
    series_ids: NDArray[np.uint64]
    ts_ms: NDArray[np.int64]
    values: NDArray[np.float64]
    #: Series created since the previous record, in id order.
    blocks: tuple[SeriesBlock, ...] = ()
    agent_id: str = ""
    batch_seq: int = -1
    #: ``series_rows(blocks)`` when the builder made them already.
    rows: SeriesRows | None = None

    @property
    def new_series(self) -> tuple[NewSeries, ...]:
        """``blocks`` as one :class:`NewSeries` per series."""
        return tuple(chain.from_iterable(b.new_series() for b in self.blocks))

    def new_rows(self) -> SeriesRows:
        """``rows``, or made from ``blocks`` (replayed frames). A frame with ``rows``
        and no ``blocks`` is a queued one whose series objects were let go."""
        if self.rows is not None and (
            not self.blocks or len(self.rows.first_ids) == len(self.blocks)
        ):
            return self.rows
        return series_rows(self.blocks)


def encode_frame(frame: MetricFrame, bounds: tuple[int, int, int] | None = None) -> bytes:
    """The WAL record of ``frame``. ``bounds`` is ``(max series id, min ts, max ts)`` of
    its samples when the caller has them already (they must be exact: they pick the
    column widths and the time base); without them they are computed here."""
    sids, ts = frame.series_ids, frame.ts_ms
    n = len(ts)
    if not n:
        sid_max = base = ts_max = 0
    elif bounds is None:
        sid_max, base, ts_max = int(sids.max()), int(ts.min()), int(ts.max())
    else:
        sid_max, base, ts_max = bounds
    flags = (_SID32 if sid_max < 2**32 else 0) | (_TS32 if ts_max - base < 2**32 else 0)
    agent = frame.agent_id.encode()
    if frame.blocks:
        blocks = _JSON.encode([(b.first_id, b.source, len(b)) for b in frame.blocks])
        # The rows' label texts are JSON already (one array per block): joined, not
        # encoded again.
        label_sets = ("[" + ",".join(frame.new_rows().labels.tolist()) + "]").encode()
    else:
        blocks, label_sets = b"[]", b"[]"
    out = [
        _HEAD.pack(_VERSION, flags, frame.batch_seq),
        struct.pack("<H", len(agent)),
        agent,
        struct.pack("<I", len(blocks)),
        blocks,
        struct.pack("<I", len(label_sets)),
        label_sets,
        struct.pack("<I", n),
        sids.astype(np.uint32 if flags & _SID32 else np.uint64, copy=False).tobytes(),
    ]
    if flags & _TS32:
        out += [_BASE.pack(base), (ts - base).astype(np.uint32).tobytes()]
    else:
        out.append(ts.astype(np.int64, copy=False).tobytes())
    out.append(frame.values.astype(np.float64, copy=False).tobytes())
    return b"".join(out)


def _section(payload: bytes, pos: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from("<I", payload, pos)
    pos += 4
    if pos + length > len(payload):
        raise ValueError("a section runs past the end of the record")
    return payload[pos : pos + length], pos + length


def _blocks_v2(headers: bytes, label_text: bytes) -> tuple[SeriesBlock, ...]:
    label_sets = _LABEL_SETS.decode(label_text)
    heads = _BLOCKS.decode(headers)
    if len(heads) != len(label_sets) or any(
        count != len(sets) for (_, _, count), sets in zip(heads, label_sets, strict=True)
    ):
        raise ValueError("series blocks and label sets disagree")
    return tuple(
        SeriesBlock(first, sets, source)
        for (first, source, _), sets in zip(heads, label_sets, strict=True)
    )


def _blocks_v1(defs: bytes) -> tuple[SeriesBlock, ...]:
    blocks: list[SeriesBlock] = []
    for i, src, lbls in msgspec.json.decode(defs):
        labels: Labels = tuple((str(k), str(v)) for k, v in lbls)
        blocks.append(SeriesBlock(int(i), (labels,), str(src)))
    return tuple(blocks)


def decode_frame(payload: bytes) -> MetricFrame:
    try:
        version, flags, seq = _HEAD.unpack_from(payload, 0)
        if version not in (1, _VERSION):
            raise StorageError(f"cannot decode WAL record: unknown version {version}")
        pos = _HEAD.size
        (alen,) = struct.unpack_from("<H", payload, pos)
        pos += 2
        agent = payload[pos : pos + alen].decode()
        pos += alen
        section, pos = _section(payload, pos)
        if version == 1:
            blocks = _blocks_v1(section)
        else:
            label_text, pos = _section(payload, pos)
            blocks = _blocks_v2(section, label_text)
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
    except (struct.error, ValueError, TypeError, UnicodeDecodeError, msgspec.DecodeError) as exc:
        raise StorageError(f"cannot decode WAL record: {exc}") from exc
    return MetricFrame(sids, ts, values, blocks, agent, int(seq))


def series_columns(frames: list[MetricFrame]) -> dict[str, NDArray[Any]] | None:
    """``metric_series`` rows of the frames' new series, a column per field of
    :class:`SeriesRows` (``first``, ``n``, ``labels``, ``source``) for
    :data:`INSERT_SERIES`; ``None`` when there are none. The rows were made with each
    frame, so this only concatenates arrays: it runs on the writer thread, where Python
    loops would hold the GIL against the event loop."""
    rows = [
        f.new_rows() for f in frames if f.blocks or (f.rows is not None and len(f.rows.first_ids))
    ]
    if not rows:
        return None
    return {
        "first": np.concatenate([r.first_ids for r in rows]),
        "n": np.concatenate([r.counts for r in rows]),
        "labels": np.concatenate([r.labels for r in rows]),
        "source": np.concatenate([r.sources for r in rows]),
    }


class _Chunk:
    """Preallocated sample columns, filled from the front and never rewritten."""

    __slots__ = ("fill", "sids", "ts", "values")

    def __init__(self, capacity: int) -> None:
        self.sids = np.empty(capacity, dtype=np.uint64)
        self.ts = np.empty(capacity, dtype=np.int64)
        self.values = np.empty(capacity, dtype=np.float64)
        self.fill = 0


@dataclass(frozen=True, slots=True)
class StagedRows:
    """Where :meth:`SampleStage.add` put one batch: rows ``[start, stop)`` of a chunk."""

    chunk: _Chunk
    start: int
    stop: int


class SampleStage:
    """Queued samples, copied as they are acknowledged into large preallocated columns
    (chunks of ``chunk_rows`` rows, or one batch's size when bigger). Batches added one
    after another sit side by side, so a commit scans a few contiguous slices instead
    of concatenating every batch: a concatenation of a thousand small arrays on the
    writer thread hands the GIL back and forth with the event loop once per array.
    A chunk's rows are never overwritten (a full chunk is replaced by a new one), so
    slices handed out stay valid while the rows are committed, retried or replayed.
    Not thread-safe: ``add`` runs on one thread (the event loop, or replay)."""

    def __init__(self, chunk_rows: int) -> None:
        if chunk_rows < 1:
            raise ValueError(f"cannot stage samples: chunk_rows {chunk_rows} is below 1")
        self._chunk_rows = chunk_rows
        self._chunk: _Chunk | None = None

    def add(
        self, sids: NDArray[np.uint64], ts: NDArray[np.int64], values: NDArray[np.float64]
    ) -> StagedRows | None:
        """Copy one batch (equal lengths); ``None`` for an empty one."""
        n = len(ts)
        if not n:
            return None
        chunk = self._chunk
        if chunk is None or chunk.fill + n > len(chunk.ts):
            chunk = self._chunk = _Chunk(max(n, self._chunk_rows))
        start = chunk.fill
        stop = start + n
        chunk.sids[start:stop] = sids
        chunk.ts[start:stop] = ts
        chunk.values[start:stop] = values
        chunk.fill = stop
        return StagedRows(chunk, start, stop)

    @staticmethod
    def pieces(
        staged: Sequence[StagedRows | None],
    ) -> list[tuple[NDArray[np.uint64], NDArray[np.int64], NDArray[np.float64]]]:
        """``(series ids, ts, values)`` views of ``staged`` in order, one per run of
        adjacent rows (a chunk boundary starts a new one); no copies."""
        runs: list[list[Any]] = []
        for rows in staged:
            if rows is None:
                continue
            last = runs[-1] if runs else None
            if last is not None and last[0] is rows.chunk and last[2] == rows.start:
                last[2] = rows.stop
            else:
                runs.append([rows.chunk, rows.start, rows.stop])
        return [(c.sids[a:b], c.ts[a:b], c.values[a:b]) for c, a, b in runs]

    @staticmethod
    def columns(
        staged: Sequence[StagedRows | None],
    ) -> tuple[NDArray[np.uint64], NDArray[np.int64], NDArray[np.float64]]:
        """``(series ids, ts, values)`` of ``staged`` in order: views of the chunks when
        the rows are adjacent, else one concatenation of the few adjacent runs."""
        runs = SampleStage.pieces(staged)
        if not runs:
            return _NO_SIDS, _NO_TS, _NO_VALUES
        if len(runs) == 1:
            return runs[0]
        return (
            np.concatenate([r[0] for r in runs]),
            np.concatenate([r[1] for r in runs]),
            np.concatenate([r[2] for r in runs]),
        )


def head_commit(
    frames: Sequence[MetricFrame], lsn: int
) -> Callable[[duckdb.DuckDBPyConnection], None]:
    """The database part of committing queued records (their frames' series rows,
    agents and sequence numbers): three set-based statements run on the writer thread —
    new series, agent sequence numbers, and the committed WAL position ``lsn``. The
    samples themselves go to the in-memory head (:class:`~monitoringserver.metrics.head.
    MemHead`) once this transaction has committed; the WAL keeps them until a flush."""
    seqs = {f.agent_id: f.batch_seq for f in frames if f.agent_id}
    dedup_rows = {
        "agent_id": np.array(list(seqs), dtype=object),
        "last_seq": np.fromiter(seqs.values(), dtype=np.int64, count=len(seqs)),
    }

    def commit(con: duckdb.DuckDBPyConnection) -> None:
        # DuckDB scans the numpy columns by their local variable names. The series rows
        # come a block (one JSON text) at a time: the database splits them into rows
        # itself, so a round that defines a million series holds the GIL only briefly.
        defs = series_columns(list(frames))
        if defs is not None:
            con.execute(INSERT_SERIES)
            del defs
        if seqs:
            seq_rows = dedup_rows
            con.execute(
                "INSERT OR REPLACE INTO metric_dedup SELECT agent_id, last_seq FROM seq_rows"
            )
            del seq_rows
        set_state(con, "wal_lsn", lsn)

    return commit
