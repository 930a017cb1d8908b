"""Parquet files of the metric store: writing, reading, merging and rolling up.

Raw files hold :mod:`monitoringserver.storage.codec` columns sorted by
``(series_id, ts)``; rollup files hold ``series_id, ts (bucket start), count`` and, for
each of ``min, max, sum, last``, the codec's ``m_<field>, enc_<field>`` pair, sorted the
same way. Readers filter by series id (row groups are
pruned by their min/max statistics) and restore the file order with ``file_row_number``
so the per-series deltas decode.

Columns are passed around as ``dict[str, ndarray]``; DuckDB scans such a dict by the
name of the local variable holding it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import StorageError
from monitoringserver.storage import codec

__all__ = [
    "ROLLUP_FIELDS",
    "Columns",
    "combine_parquet",
    "compute_rollups",
    "concat",
    "decode_raw",
    "dedup_last",
    "encode_rollup",
    "file_order",
    "head_columns",
    "id_filter",
    "read_raw",
    "read_raw_many",
    "read_rollup",
    "read_rollup_many",
    "scan_files",
    "split_by_file",
    "split_by_rows",
    "take",
    "write_parquet",
]

Columns = dict[str, NDArray[Any]]
ROLLUP_FIELDS = ("min", "max", "sum", "count", "last")
_FLOAT_FIELDS = ("min", "max", "sum", "last")
_ROLLUP_SELECT = ", ".join(f"m_{f}, enc_{f}" for f in _FLOAT_FIELDS)


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _copy_options(zstd_level: int) -> str:
    # No bloom filters: files are sorted by series id, so row-group min/max statistics
    # already prune by series, and DuckDB's filters took ~14 % of a raw file's bytes.
    return (
        f"FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {int(zstd_level)}, "
        "PARQUET_VERSION V2, WRITE_BLOOM_FILTER false"
    )


def write_parquet(
    con: duckdb.DuckDBPyConnection, columns: Columns, path: Path, *, zstd_level: int
) -> int:
    """Write ``columns`` (already sorted) to ``path``; return its size in bytes."""
    data = columns
    names = ", ".join(data)
    try:
        # The database runs with preserve_insertion_order=false; the per-series deltas
        # and row-group pruning need the file in exactly this order.
        con.execute("SET SESSION preserve_insertion_order = true")
        con.execute(
            f"COPY (SELECT {names} FROM data) TO {_quote(path)} "  # noqa: S608 (quoted path)
            f"({_copy_options(zstd_level)})"
        ).fetchall()
    except duckdb.Error as exc:
        raise StorageError(f"cannot write parquet file {path}: {exc}") from exc
    return path.stat().st_size


def combine_parquet(
    con: duckdb.DuckDBPyConnection, sources: Sequence[Path], path: Path, *, zstd_level: int
) -> int:
    """Stream ``sources`` (in order) into one file at ``path``; return its size in bytes."""
    files = "[" + ", ".join(_quote(p) for p in sources) + "]"
    try:
        con.execute("SET SESSION preserve_insertion_order = true")
        con.execute(
            f"COPY (SELECT * FROM read_parquet({files})) TO {_quote(path)} "  # noqa: S608
            f"({_copy_options(zstd_level)})"
        ).fetchall()
    except duckdb.Error as exc:
        raise StorageError(f"cannot write parquet file {path}: {exc}") from exc
    return path.stat().st_size


def _filter_sql(lo: int, hi: int, wanted: NDArray[np.uint64] | None) -> tuple[str, list[int]]:
    sql = "series_id BETWEEN ? AND ?"
    if wanted is not None:
        sql += " AND series_id IN (SELECT sid FROM wanted)"
    return sql, [lo, hi]


_INLINE_IDS = 64


def id_filter(ids: NDArray[np.uint64]) -> tuple[str, list[int]]:
    """SQL condition and parameters selecting ``series_id`` in ``ids`` (sorted, unique,
    non-empty). Few or contiguous ids are inlined (cheaper to plan and run than a
    semi-join); otherwise the condition reads a local ``wanted`` dict with column
    ``sid`` holding ``ids``, which the caller must keep in scope."""
    lo, hi = int(ids[0]), int(ids[-1])
    if hi - lo + 1 == len(ids):
        return "series_id BETWEEN ? AND ?", [lo, hi]
    if len(ids) <= _INLINE_IDS:
        marks = ", ".join("?" * len(ids))
        return f"series_id BETWEEN ? AND ? AND series_id IN ({marks})", [lo, hi, *ids.tolist()]
    return "series_id BETWEEN ? AND ? AND series_id IN (SELECT sid FROM wanted)", [lo, hi]


def read_raw(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    lo: int,
    hi: int,
    ids: NDArray[np.uint64] | None = None,
) -> Columns:
    """Decoded ``series_id, ts, value`` of series ``lo..hi`` (and in ``ids``) in a file."""
    where, params = _filter_sql(lo, hi, ids)
    wanted = {"sid": ids if ids is not None else np.empty(0, np.uint64)}  # scanned by name
    try:
        got = con.execute(
            "SELECT series_id, ts, m, enc, file_row_number FROM read_parquet("  # noqa: S608
            f"{_quote(path)}, file_row_number = true) WHERE {where}",
            params,
        ).fetchnumpy()
    except duckdb.Error as exc:
        raise StorageError(f"cannot read parquet file {path}: {exc}") from exc
    del wanted
    order = np.argsort(np.asarray(got["file_row_number"]), kind="stable")
    sid, ts, values = codec.decode(
        np.asarray(got["series_id"])[order],
        np.asarray(got["ts"])[order],
        np.asarray(got["m"])[order],
        np.asarray(got["enc"])[order],
    )
    # Files clustered by metric (see ``layout``) hold series out of id order.
    sid, ts, values = codec.series_order(sid, ts, values)
    return {"series_id": sid, "ts": ts, "value": values}


def encode_rollup(cols: Columns, *, max_digits: int = 9) -> Columns:
    """Rollup rows (sorted) as file columns: each float field through the codec."""
    sid = np.asarray(cols["series_id"], dtype=np.uint64)
    ts = np.asarray(cols["ts"], dtype=np.int64)
    out: Columns = {}
    for f in _FLOAT_FIELDS:
        enc = codec.encode(sid, ts, np.asarray(cols[f], dtype=np.float64), max_digits=max_digits)
        if not out:
            out = {"series_id": enc["series_id"], "ts": enc["ts"]}
        out[f"m_{f}"] = enc["m"]
        out[f"enc_{f}"] = enc["enc"]
    out["count"] = np.asarray(cols["count"], dtype=np.int64)
    return out


def scan_files(
    con: duckdb.DuckDBPyConnection,
    paths: Sequence[Path],
    columns: str,
    where: str,
    params: list[int],
    *,
    ids: NDArray[np.uint64] | None = None,
) -> dict[str, Any]:
    """``file_index``, ``file_row_number`` and ``columns`` of the rows of ``paths`` (one
    scan for all, ``paths`` non-empty) matching ``where``, which may read ``ids`` as the
    table ``wanted(sid)`` (:func:`id_filter`). Rows come in scan order:
    :func:`split_by_file` puts them back in file order."""
    files = "[" + ", ".join(_quote(p) for p in paths) + "]"
    wanted = {"sid": ids if ids is not None else np.empty(0, np.uint64)}  # scanned by name
    try:
        got: dict[str, Any] = con.execute(
            f"SELECT file_index, file_row_number, {columns} "  # noqa: S608
            f"FROM read_parquet({files}, file_row_number = true) WHERE {where}",
            params,
        ).fetchnumpy()
    except duckdb.Error as exc:
        raise StorageError(f"cannot read parquet files {paths[0]}...: {exc}") from exc
    del wanted
    return got


def split_by_file(got: dict[str, Any], n_files: int) -> list[Columns]:
    """The columns of a :func:`scan_files` result (bar its bookkeeping columns), one set
    per file in the order the paths were given, each in the file's row order."""
    file_no = np.asarray(got["file_index"], dtype=np.int64)
    key = (file_no << 40) | np.asarray(got["file_row_number"], dtype=np.int64)
    cols = {k: np.asarray(v) for k, v in got.items() if k not in ("file_index", "file_row_number")}
    order = file_order(key)
    if order is not None:
        file_no = file_no[order]
        cols = {k: v[order] for k, v in cols.items()}
    bounds = np.searchsorted(file_no, np.arange(n_files + 1)).tolist()
    return [{k: v[bounds[i] : bounds[i + 1]] for k, v in cols.items()} for i in range(n_files)]


def read_raw_many(
    con: duckdb.DuckDBPyConnection,
    paths: Sequence[Path],
    ids: NDArray[np.uint64],
) -> list[Columns]:
    """Decoded rows of the series ``ids`` (sorted) in each file, one query for all files.

    Returns one column set per path, in the order given.
    """
    if not paths:
        return []
    where, params = id_filter(ids)
    got = scan_files(con, paths, "series_id, ts, m, enc", where, params, ids=ids)
    return [decode_raw(part) for part in split_by_file(got, len(paths))]


def decode_raw(part: Columns) -> Columns:
    """Raw file columns ``series_id, ts, m, enc`` (in file order) back to ``series_id,
    ts, value``, rows sorted by ``(series_id, ts)``."""
    sid, ts, values = codec.series_order(
        *codec.decode(part["series_id"], part["ts"], part["m"], part["enc"])
    )
    return {"series_id": sid, "ts": ts, "value": values}


def file_order(key: NDArray[np.int64]) -> NDArray[np.intp] | None:
    """Order restoring unique row ``key``s (file index and row number) to ascending, or
    ``None`` when they already are.

    A parallel scan returns chunks out of order but rows within a chunk in order, so the
    rows split into runs of consecutive keys; sorting the runs by their first key and
    concatenating them costs far less than sorting every row.
    """
    n = len(key)
    if n < 2 or bool(np.all(key[1:] > key[:-1])):
        return None
    run_starts = np.concatenate(([0], np.flatnonzero(key[1:] != key[:-1] + 1) + 1))
    run_lens = np.diff(np.append(run_starts, n))
    by_key = np.argsort(key[run_starts], kind="stable")
    src, lens = run_starts[by_key], run_lens[by_key]
    dst = np.cumsum(lens) - lens
    order: NDArray[np.intp] = (np.repeat(src - dst, lens) + np.arange(n)).astype(np.intp)
    return order


def read_rollup_many(
    con: duckdb.DuckDBPyConnection,
    paths: Sequence[Path],
    ids: NDArray[np.uint64],
    *,
    start_ms: int,
    end_ms: int,
) -> list[Columns]:
    """Rollup rows of the series ``ids`` (sorted) with bucket start in range, per file."""
    if not paths:
        return []
    where, params = id_filter(ids)
    got = scan_files(con, paths, f"series_id, ts, count, {_ROLLUP_SELECT}", where, params, ids=ids)
    out: list[Columns] = []
    for part in split_by_file(got, len(paths)):
        decoded = _decode_rollup(part)
        out.append(take(decoded, (decoded["ts"] >= start_ms) & (decoded["ts"] <= end_ms)))
    return out


def _decode_rollup(got: Columns) -> Columns:
    """Rollup file columns (in file order) back to ``series_id, ts, min, ..., last``."""
    out: Columns = {}
    for f in _FLOAT_FIELDS:
        sid, ts, values = codec.decode(got["series_id"], got["ts"], got[f"m_{f}"], got[f"enc_{f}"])
        out.setdefault("series_id", sid)
        out.setdefault("ts", ts)
        out[f] = values
    out["count"] = np.asarray(got["count"], dtype=np.int64)
    return out


def read_rollup(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    lo: int,
    hi: int,
    *,
    start_ms: int,
    end_ms: int,
    ids: NDArray[np.uint64] | None = None,
) -> Columns:
    """Rollup rows of series ``lo..hi`` (and in ``ids``) with bucket start in range."""
    where, params = _filter_sql(lo, hi, ids)
    wanted = {"sid": ids if ids is not None else np.empty(0, np.uint64)}  # scanned by name
    try:
        got = con.execute(
            f"SELECT series_id, ts, count, {_ROLLUP_SELECT}, file_row_number "  # noqa: S608
            f"FROM read_parquet({_quote(path)}, file_row_number = true) WHERE {where}",
            params,
        ).fetchnumpy()
    except duckdb.Error as exc:
        raise StorageError(f"cannot read parquet file {path}: {exc}") from exc
    del wanted
    order = np.argsort(np.asarray(got["file_row_number"]), kind="stable")
    out = _decode_rollup({k: np.asarray(v)[order] for k, v in got.items()})
    keep = (out["ts"] >= start_ms) & (out["ts"] <= end_ms)
    return take(out, keep)


def head_columns(got: dict[str, Any]) -> Columns:
    """Head rows as columns, with the value bits turned back into float64 ``value``."""
    cols = {k: np.asarray(v) for k, v in got.items()}
    cols["value"] = cols.pop("bits").astype(np.int64).view(np.float64)
    return cols


def concat(parts: Sequence[Columns], names: Sequence[str]) -> Columns:
    return {n: np.concatenate([p[n] for p in parts]) if parts else np.empty(0) for n in names}


def take(columns: Columns, index: NDArray[np.intp] | NDArray[np.bool_]) -> Columns:
    return {k: v[index] for k, v in columns.items()}


def _sort_order(sid: NDArray[np.uint64], ts: NDArray[np.int64]) -> NDArray[np.intp] | None:
    """Stable order by ``(sid, ts)``, or ``None`` when already sorted."""
    if len(ts) < 2:
        return None
    same = sid[1:] == sid[:-1]
    if bool(np.all((sid[1:] > sid[:-1]) | (same & (ts[1:] >= ts[:-1])))):
        return None
    t0 = int(ts.min())
    if int(sid.max()) < 2**26 and int(ts.max()) - t0 < 2**37:
        # One int64 key: a stable sort merges the sorted runs of each part quickly.
        key = (sid.astype(np.int64) << 37) | (ts - t0)
        order: NDArray[np.intp] = np.argsort(key, kind="stable")
        return order
    return np.lexsort((ts, sid))


def dedup_last(parts: Sequence[Columns]) -> Columns:
    """Concatenate ``parts`` (oldest first), sort by ``(series_id, ts)``, keep the newest
    row of each key."""
    if not parts:
        raise ValueError("dedup_last needs at least one part")
    names = list(parts[0])
    cols = concat(parts, names) if len(parts) > 1 else dict(parts[0])
    sid = cols["series_id"].astype(np.uint64, copy=False)
    ts = cols["ts"].astype(np.int64, copy=False)
    if len(ts) == 0:
        return cols
    order = _sort_order(sid, ts)
    if order is not None:
        sid, ts = sid[order], ts[order]
    last = np.ones(len(ts), dtype=np.bool_)
    last[:-1] = (sid[1:] != sid[:-1]) | (ts[1:] != ts[:-1])
    if order is None:
        return cols if bool(last.all()) else take(cols, last)
    return take(cols, order[last])


def compute_rollups(columns: Columns, step_ms: int) -> Columns:
    """Bucket raw rows (sorted by series and time) into ``step_ms`` aggregates.

    NaN samples (including staleness markers) do not count; a bucket of only NaNs is
    omitted. ``ts`` of a rollup row is its bucket start.
    """
    values = np.asarray(columns["value"], dtype=np.float64)
    keep = ~np.isnan(values)
    sid = np.asarray(columns["series_id"], dtype=np.uint64)[keep]
    ts = np.asarray(columns["ts"], dtype=np.int64)[keep]
    values = values[keep]
    if len(values) == 0:
        return {
            "series_id": np.empty(0, np.uint64),
            "ts": np.empty(0, np.int64),
            **{f: np.empty(0, np.int64 if f == "count" else np.float64) for f in ROLLUP_FIELDS},
        }
    bucket = ts - ts % step_ms
    start = np.ones(len(ts), dtype=np.bool_)
    start[1:] = (sid[1:] != sid[:-1]) | (bucket[1:] != bucket[:-1])
    starts = np.flatnonzero(start)
    ends = np.append(starts[1:], len(ts)) - 1
    return {
        "series_id": sid[starts],
        "ts": bucket[starts],
        "min": np.minimum.reduceat(values, starts),
        "max": np.maximum.reduceat(values, starts),
        "sum": np.add.reduceat(values, starts),
        "count": np.diff(np.append(starts, len(ts))).astype(np.int64),
        "last": values[ends],
    }


def split_by_rows(
    series_ids: NDArray[np.uint64], counts: NDArray[np.int64], max_rows: int
) -> list[tuple[int, int]]:
    """Cut sorted series ids into inclusive ``(lo, hi)`` ranges of at most ``max_rows``
    rows each (a single larger series gets a range of its own)."""
    ranges: list[tuple[int, int]] = []
    if len(series_ids) == 0:
        return ranges
    lo_i = 0
    acc = 0
    for i, c in enumerate(counts.tolist()):
        if acc and acc + c > max_rows:
            ranges.append((int(series_ids[lo_i]), int(series_ids[i - 1])))
            lo_i, acc = i, 0
        acc += c
    ranges.append((int(series_ids[lo_i]), int(series_ids[-1])))
    return ranges
