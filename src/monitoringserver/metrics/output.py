"""Building the Parquet files of one compaction job, one bounded chunk at a time.

A job produces rows in ``(series_id, ts)`` order, chunk by chunk (each at most
``merge_chunk_rows`` rows, which bounds the job's memory). Each chunk is written to a
temporary file; once ``max_file_rows`` rows have gathered, DuckDB streams the chunks
into one file (``COPY ... FROM read_parquet([...])`` keeps their order), which is fsynced
and renamed to its final name. A file holds at most ``max_file_rows`` rows unless a
single chunk is larger. The caller lists the finished files in the manifest in
one transaction, or calls :meth:`FileOutput.discard` to remove everything it wrote.

A head flush publishes each chunk as a file of its own first and gathers them with
:func:`combine_entries` once the head has let go of its rows, so DuckDB's buffers for
the gathering never add to the head's memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
from numpy.typing import NDArray

from monitoringserver.metrics import blocks, layout
from monitoringserver.metrics.manifest import FileEntry, publish_file
from monitoringserver.storage import codec
from monitoringserver.storage.memory import release_free_memory

__all__ = ["FileIds", "FileOutput", "combine_entries"]


class FileIds:
    """Allocates file ids (callers serialise jobs, so no lock is needed here)."""

    def __init__(self, first: int) -> None:
        self._next = first

    def take(self) -> int:
        fid = self._next
        self._next += 1
        return fid


@dataclass
class _Chunk:
    path: Path
    rows: int
    min_sid: int
    max_sid: int
    min_ts: int
    max_ts: int


@dataclass
class FileOutput:
    """Files of one resolution, partition, level and run (``seq``)."""

    con: duckdb.DuckDBPyConnection
    root: Path
    ids: FileIds
    resolution: str
    partition: int
    level: int
    seq: int
    rolled_up: bool
    max_file_rows: int
    zstd_level: int
    max_decimal_digits: int
    #: Metric hash (``layout.metric_hash``) of each given series id; when set, raw
    #: chunks are clustered by metric (``layout.cluster_by_metric``).
    metric_hashes: Callable[[NDArray[np.uint64]], NDArray[np.uint32]] | None = None
    entries: list[FileEntry] = field(default_factory=list)
    _chunks: list[_Chunk] = field(default_factory=list)

    def _dir(self) -> Path:
        d = self.root / self.resolution / str(self.partition)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def add(self, cols: blocks.Columns) -> int:
        """Append rows (sorted, and after every row added before); return their count.
        Columns nobody else holds (``out.add(run.to_columns())``) are freed as soon as
        they are encoded, before the encoded copy is reordered and written: that bounds
        a job's peak memory."""
        sid = np.asarray(cols["series_id"], dtype=np.uint64)
        n = len(sid)
        if n == 0:
            return 0
        ts = np.asarray(cols["ts"], dtype=np.int64)
        min_ts, max_ts = int(ts.min()), int(ts.max())
        if self._chunks and self._gathered() + n > self.max_file_rows:
            self.seal()
        if self.resolution == "raw":
            values = np.asarray(cols["value"], dtype=np.float64)
            del cols
            heads = sid[codec.segment_starts(sid)]
            data: blocks.Columns = codec.encode(sid, ts, values, max_digits=self.max_decimal_digits)
            del ts, values
            if self.metric_hashes is not None:
                data = layout.cluster_by_metric(data, self.metric_hashes(heads))
        else:
            data = blocks.encode_rollup(cols, max_digits=self.max_decimal_digits)
            del cols, ts
        path = self._dir() / f".tmp-{self.ids.take()}.parquet"
        self._chunks.append(_Chunk(path, n, int(sid[0]), int(sid[-1]), min_ts, max_ts))
        del sid
        # The encoding's freed temporaries go back to the system before DuckDB (its own
        # allocator) buffers the write: otherwise the two peaks add up.
        release_free_memory()
        blocks.write_parquet(self.con, data, path, zstd_level=self.zstd_level)
        del data
        if self._gathered() >= self.max_file_rows:
            self.seal()
        return n

    def _gathered(self) -> int:
        return sum(c.rows for c in self._chunks)

    def seal(self) -> None:
        """Turn the gathered chunks into one published file."""
        if not self._chunks:
            return
        chunks, self._chunks = self._chunks, []
        fid = self.ids.take()
        final = self._dir() / f"{fid}.parquet"
        if len(chunks) == 1:
            tmp = chunks[0].path
        else:
            tmp = self._dir() / f".tmp-{fid}.parquet"
            try:
                blocks.combine_parquet(
                    self.con, [c.path for c in chunks], tmp, zstd_level=self.zstd_level
                )
            finally:
                for c in chunks:
                    c.path.unlink(missing_ok=True)
        publish_file(tmp, final)
        self.entries.append(
            FileEntry(
                id=fid,
                path=str(final.relative_to(self.root)),
                resolution=self.resolution,
                level=self.level,
                seq=self.seq,
                partition_start=self.partition,
                min_sid=chunks[0].min_sid,
                max_sid=chunks[-1].max_sid,
                min_ts=min(c.min_ts for c in chunks),
                max_ts=max(c.max_ts for c in chunks),
                rows=sum(c.rows for c in chunks),
                bytes=final.stat().st_size,
                rolled_up=self.rolled_up,
            )
        )

    def discard(self) -> None:
        """Remove every file this output wrote (the job failed before publishing)."""
        for c in self._chunks:
            c.path.unlink(missing_ok=True)
        self._chunks = []
        for e in self.entries:
            (self.root / e.path).unlink(missing_ok=True)


def combine_entries(
    con: duckdb.DuckDBPyConnection,
    root: Path,
    ids: FileIds,
    entries: Sequence[FileEntry],
    *,
    max_file_rows: int,
    zstd_level: int,
) -> tuple[list[FileEntry], list[FileEntry]]:
    """Gather published files of one run (same resolution, partition, level and
    ``seq``; given in series order, their ranges not overlapping) into files of at most
    ``max_file_rows`` rows, as :meth:`FileOutput.seal` would have. Returns ``(added,
    removed)`` for the caller to publish in one transaction; the inputs stay on disk
    until then. A file that would gather alone is left as it is."""
    groups: list[list[FileEntry]] = []
    for e in entries:
        if groups and sum(g.rows for g in groups[-1]) + e.rows <= max_file_rows:
            groups[-1].append(e)
        else:
            groups.append([e])
    added: list[FileEntry] = []
    removed: list[FileEntry] = []
    try:
        for group in groups:
            if len(group) < 2:
                continue
            first = group[0]
            fid = ids.take()
            final = root / Path(first.path).parent / f"{fid}.parquet"
            tmp = final.with_name(f".tmp-{fid}.parquet")
            try:
                blocks.combine_parquet(
                    con, [root / e.path for e in group], tmp, zstd_level=zstd_level
                )
                publish_file(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
            added.append(
                dataclasses.replace(
                    first,
                    id=fid,
                    path=str(final.relative_to(root)),
                    max_sid=group[-1].max_sid,
                    min_ts=min(e.min_ts for e in group),
                    max_ts=max(e.max_ts for e in group),
                    rows=sum(e.rows for e in group),
                    bytes=final.stat().st_size,
                )
            )
            removed += group
    except BaseException:
        for e in added:
            (root / e.path).unlink(missing_ok=True)
        raise
    return added, removed
