"""Raw files clustered by metric name: the ``mh`` column and reading it.

A raw file written by this version starts with column ``mh`` (UINTEGER), the CRC-32 of
the series' metric name (:func:`metric_hash`, a pure function of the name, so it means
the same in every file and across restarts). Each chunk of a file (see
:mod:`monitoringserver.metrics.output`) holds its rows ordered by ``(mh, series_id, ts)``
rather than ``(series_id, ts)``: the rows of one metric sit together, so a query for one
metric name reads only the row groups whose ``mh`` min/max can hold it (DuckDB prunes
them by their statistics), and similar series compress better side by side. Every
series' rows stay contiguous and in time order, which is all the codec needs.

Readers filter in DuckDB by ``mh`` and the series-id range (both prune row groups, no
join), then keep exactly the wanted series in numpy (a hash collision or a query
selecting part of a metric's series only costs extra rows read), decode, and put the
series back into ascending id order. Files written before the column existed are read
as before (:func:`monitoringserver.metrics.blocks.read_raw_many`).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb
import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import StorageError
from monitoringserver.metrics.blocks import Columns, decode_raw, scan_files, split_by_file
from monitoringserver.metrics.index import SeriesIndex
from monitoringserver.model.labels import metric_name
from monitoringserver.storage import codec

__all__ = [
    "MAX_HASHES",
    "MetricHasher",
    "cluster_by_metric",
    "has_metric_column",
    "metric_hash",
    "read_clustered",
]

#: Above this many distinct metric names a read filters by series-id range only.
MAX_HASHES = 64


def metric_hash(name: str) -> int:
    """The ``mh`` value of a metric name: CRC-32 of its UTF-8 bytes."""
    return zlib.crc32(name.encode())


class MetricHasher:
    """``metric_hash`` of the metric name of series ids, through the series index.

    A series' labels never change, so each id's hash is computed once and kept in an
    array indexed by id (4 bytes per id up to the largest seen). Thread-safe.
    """

    def __init__(self, index: SeriesIndex) -> None:
        self._index = index
        self._lock = threading.Lock()
        # Guarded by _lock:
        self._table = np.zeros(0, dtype=np.uint32)
        self._known = np.zeros(0, dtype=np.bool_)
        self._by_name: dict[str, int] = {}

    def __call__(self, series_ids: NDArray[np.uint64]) -> NDArray[np.uint32]:
        """The hash of each id's metric name, in the same order."""
        idx = np.asarray(series_ids, dtype=np.intp)
        if len(idx) == 0:
            return np.zeros(0, dtype=np.uint32)
        with self._lock:
            top = int(idx.max()) + 1
            if top > len(self._table):
                size = max(top, 2 * len(self._table))
                self._table = np.resize(self._table, size)
                self._known = np.concatenate(
                    [self._known, np.zeros(size - len(self._known), dtype=np.bool_)]
                )
            new = np.unique(idx[~self._known[idx]])
            if len(new):
                memo = self._by_name
                for i, labels in zip(
                    new.tolist(), self._index.labels_many(new.tolist()), strict=True
                ):
                    name = metric_name(labels)
                    h = memo.get(name)
                    if h is None:
                        h = memo[name] = metric_hash(name)
                    self._table[i] = h
                self._known[new] = True
            return self._table[idx]


def cluster_by_metric(encoded: Columns, segment_hashes: NDArray[np.uint32]) -> Columns:
    """Codec columns of rows sorted by ``(series_id, ts)`` reordered by
    ``(mh, series_id, ts)``, with ``mh`` as the first column. ``segment_hashes`` holds
    the metric hash of each series, in series order."""
    sid = encoded["series_id"]
    starts = codec.segment_starts(sid)
    lengths = np.diff(np.append(starts, len(sid)))
    by_metric = np.argsort(segment_hashes, kind="stable")
    mh = np.repeat(segment_hashes.astype(np.uint32), lengths)
    if bool(np.all(by_metric[1:] > by_metric[:-1])):
        return {"mh": mh, **encoded}
    rows = codec.segment_gather(starts, lengths, by_metric)
    return {"mh": mh[rows], **{k: v[rows] for k, v in encoded.items()}}


def has_metric_column(con: duckdb.DuckDBPyConnection, path: Path) -> bool:
    """Whether the raw file at ``path`` has the ``mh`` column (clustered layout)."""
    try:
        rows = con.execute(
            "SELECT count(*) FROM parquet_schema(?) WHERE name = 'mh'", [str(path)]
        ).fetchall()
    except duckdb.Error as exc:
        raise StorageError(f"cannot read parquet schema of {path}: {exc}") from exc
    return bool(rows[0][0])


def read_clustered(
    con: duckdb.DuckDBPyConnection,
    paths: Sequence[Path],
    ids: NDArray[np.uint64],
    hashes: Iterable[int],
) -> list[Columns]:
    """Decoded ``series_id, ts, value`` of the series ``ids`` (sorted, unique) in each
    clustered raw file (one query for all), rows sorted by ``(series_id, ts)``.
    ``hashes`` are the metric hashes of ``ids``' names."""
    if not paths:
        return []
    mhs = sorted(set(hashes))
    where = "series_id BETWEEN ? AND ?"
    params: list[int] = [int(ids[0]), int(ids[-1])]
    if 0 < len(mhs) <= MAX_HASHES:
        where += f" AND mh IN ({', '.join('?' * len(mhs))})"
        params += mhs
    got = scan_files(con, paths, "series_id, ts, m, enc", where, params)
    sid = np.asarray(got["series_id"], dtype=np.uint64)
    # Whole series only (every row of a series shares its id), so segments stay intact;
    # decided once per run of equal ids.
    runs = codec.segment_starts(sid)
    heads = sid[runs]
    keep_run = ids[np.minimum(np.searchsorted(ids, heads), len(ids) - 1)] == heads
    keep = np.repeat(keep_run, np.diff(np.append(runs, len(sid))))
    if not bool(keep.all()):
        got = {k: np.asarray(v)[keep] for k, v in got.items()}
    return [decode_raw(part) for part in split_by_file(got, len(paths))]
