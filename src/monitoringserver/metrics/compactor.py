"""The LSM: head → Parquet parts → merged blocks → rollups → retention.

* :meth:`Compactor.flush_head` writes every row of the in-memory head (up to its newest
  batch) into level-0 parts, one file per raw time partition and series range, then in
  one transaction lists them in the manifest and records the WAL position they cover
  (``head_lsn``); inside the same manifest publication the head drops those batches.
* :meth:`Compactor.merge_once` merges, per resolution and time partition, ``merge_fan_in``
  runs of one level into the next; a closed partition (its end plus the grace period has
  passed) is merged into its final block, and for raw data the 5 m and 1 h rollups are
  computed from it then and published in the same transaction. Once a whole
  ``raw_block_s`` (a day) is closed and rolled up, its final blocks merge into one day
  block; late data for a merged day re-reads that day's rows of its partition.
* :meth:`Compactor.apply_retention` drops whole files past their resolution's retention;
  raw files are only dropped once rolled up.

Every job works one series range (at most ``merge_chunk_rows`` rows) at a time, so memory
stays bounded whatever the partition size; chunks are gathered into files of up to
``max_file_rows`` rows (:mod:`monitoringserver.metrics.output`). Jobs run one at a time
(``_lock``) on the calling thread; the DuckDB transaction runs on the writer thread.
A run's ``seq`` is the newest flush it contains: rows of a higher ``seq`` win over
equal ``(series_id, ts)`` keys of a lower one, and the head wins over every file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import numpy as np

from monitoringserver.metrics import blocks, layout
from monitoringserver.metrics.head import MemHead
from monitoringserver.metrics.index import SeriesIndex
from monitoringserver.metrics.manifest import (
    BLOCK_LEVEL,
    FINAL_LEVEL,
    FileEntry,
    Manifest,
    delete_entries,
    insert_entries,
)
from monitoringserver.metrics.output import FileIds, FileOutput, combine_entries
from monitoringserver.metrics.retention import expired_files
from monitoringserver.metrics.runs import Run, merge_runs
from monitoringserver.metrics.schema import get_state, save_series_ranges, set_state
from monitoringserver.storage.db import Database
from monitoringserver.storage.memory import release_free_memory
from monitoringserver.storage.options import StorageOptions

__all__ = ["CompactionReport", "Compactor"]

_STEP_MS = {"5m": 300_000, "1h": 3_600_000}
_MAX_MERGED_LEVEL = 2


@dataclass(frozen=True, slots=True)
class CompactionReport:
    kind: str  # flush | merge | final | retention
    files_in: int
    files_out: int
    rows: int
    seconds: float


class Compactor:
    """Runs flush, merge and retention jobs for one store."""

    def __init__(
        self,
        db: Database,
        manifest: Manifest,
        index: SeriesIndex,
        head: MemHead,
        options: StorageOptions,
        *,
        on_job: Callable[[CompactionReport], None] | None = None,
    ) -> None:
        self._db = db
        self._head = head
        self._manifest = manifest
        self._index = index
        self._opt = options
        self._on_job = on_job
        self._lock = threading.Lock()
        self._ids = FileIds(max((f.id for f in manifest.files()), default=0) + 1)
        self.last_job_wall_ms: int | None = None
        self.last_job_seconds: float | None = None
        self._stopped = threading.Event()
        self._hashes = layout.MetricHasher(index)

    def stop(self) -> None:
        """Refuse new jobs, abort a running merge between chunks, and wait for it."""
        self._stopped.set()
        with self._lock:
            pass

    def _check_stopped(self) -> None:
        if self._stopped.is_set():
            raise _StoppedError

    # -- helpers -----------------------------------------------------------------------

    def _output(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        resolution: str,
        partition: int,
        level: int,
        seq: int,
        rolled_up: bool,
        max_file_rows: int | None = None,
    ) -> FileOutput:
        return FileOutput(
            con=con,
            root=self._manifest.root,
            ids=self._ids,
            resolution=resolution,
            partition=partition,
            level=level,
            seq=seq,
            rolled_up=rolled_up,
            max_file_rows=max_file_rows or self._opt.max_file_rows,
            zstd_level=self._opt.zstd_level,
            max_decimal_digits=self._opt.max_decimal_digits,
            metric_hashes=self._hashes,
        )

    def _publish(
        self,
        added: list[FileEntry],
        removed: list[FileEntry],
        extra: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
        applied: Callable[[], None] | None = None,
    ) -> None:
        """List ``added`` and unlist ``removed`` in one transaction (with ``extra``);
        ``applied`` runs once the manifest shows them, before readers may go on."""

        def commit(con: duckdb.DuckDBPyConnection) -> None:
            insert_entries(con, added)
            delete_entries(con, removed)
            if extra is not None:
                extra(con)

        try:
            with self._manifest.publishing(head=extra is not None):
                self._db.write(commit)
                self._manifest.apply(added, removed)
                if applied is not None:
                    applied()
        except BaseException:
            for f in added:
                (self._manifest.root / f.path).unlink(missing_ok=True)
            raise

    def _report(self, kind: str, files_in: int, files_out: int, rows: int, t0: float) -> None:
        release_free_memory()  # a job's buffers must not stay resident until the next one
        seconds = time.perf_counter() - t0
        self.last_job_wall_ms = int(time.time() * 1000)
        self.last_job_seconds = seconds
        if self._on_job is not None:
            self._on_job(CompactionReport(kind, files_in, files_out, rows, seconds))

    # -- flush -------------------------------------------------------------------------

    def flush_head(self) -> int:
        """Move every committed head row into level-0 parts; return the row count."""
        try:
            return self._flush_head()
        except _StoppedError:
            return 0

    def _flush_head(self) -> int:
        with self._lock:
            if self._stopped.is_set():
                return 0
            t0 = time.perf_counter()
            view = self._head.flush_view()
            if view is None:
                return 0
            cur = self._db.cursor()
            seq = get_state(cur, "flush_seq") + 1
            pms = self._opt.partition_ms("raw")
            outputs: list[FileOutput] = []
            rows = 0
            try:
                # One series range of one partition at a time, merged from the head's
                # sorted pieces: the flush never holds a merged copy of the whole head.
                # Each chunk becomes a file of its own (``max_file_rows=1``): the files
                # are gathered only once the head has dropped the rows (see below).
                for p in view.partitions(pms):
                    out = self._output(
                        cur,
                        resolution="raw",
                        partition=p,
                        level=0,
                        seq=seq,
                        rolled_up=False,
                        max_file_rows=1,
                    )
                    outputs.append(out)
                    sids, counts = view.series_rows(p, p + pms - 1)
                    for lo, hi in blocks.split_by_rows(sids, counts, self._opt.merge_chunk_rows):
                        self._check_stopped()
                        # Held by nobody else, the chunk is freed once encoded.
                        rows += out.add(view.rows(lo, hi, p, p + pms - 1).to_columns())
                        release_free_memory()  # the chunk's temporaries, before the next
                    out.seal()
            except BaseException:
                for out in outputs:
                    out.discard()
                raise
            added = [e for out in outputs for e in out.entries]
            lo_ts, hi_ts = self._index.time_ranges()
            through, lsn = view.through, view.lsn
            del view  # the pieces' sort orders are garbage once the files are written

            def extra(con: duckdb.DuckDBPyConnection) -> None:
                # Rows an older release kept in the head table are in this flush too.
                con.execute("DELETE FROM metric_head WHERE batch <= ?", [through])
                set_state(con, "flush_seq", seq)
                set_state(con, "head_lsn", max(lsn, get_state(con, "head_lsn")))
                save_series_ranges(con, lo_ts, hi_ts)

            self._publish(added, [], extra, lambda: self._head.drop_through(through))
            files_out = len(added)
            for out in outputs:
                if not self._stopped.is_set():
                    files_out += self._combine(cur, out.entries)
            self._report("flush", 0, files_out, rows, t0)
            return rows

    def _combine(self, cur: duckdb.DuckDBPyConnection, entries: list[FileEntry]) -> int:
        """Gather a flushed partition's chunk files into files of up to ``max_file_rows``
        rows and publish them in their place; return the change in the file count. Runs
        after the flush's own publication, when the head no longer holds the rows, so
        DuckDB's buffers for the gathering come on top of a smaller working set. Readers
        see the same rows before and after."""
        if len(entries) < 2:
            return 0
        release_free_memory()  # the head's dropped rows, before DuckDB's buffers grow
        added, removed = combine_entries(
            cur,
            self._manifest.root,
            self._ids,
            entries,
            max_file_rows=self._opt.max_file_rows,
            zstd_level=self._opt.zstd_level,
        )
        if added:
            self._publish(added, removed)
        return len(added) - len(removed)

    # -- merge -------------------------------------------------------------------------

    def merge_once(self, now_ms: int) -> bool:
        """Run the first merge job found; return whether there was one."""
        try:
            return self._merge_once(now_ms)
        except _StoppedError:
            return False

    def _merge_once(self, now_ms: int) -> bool:
        with self._lock:
            if self._stopped.is_set():
                return False
            files = self._manifest.files()
            grace = int(self._opt.merge_grace_s * 1000)
            for res in ("raw", "5m", "1h"):
                pms = self._opt.partition_ms(res)
                mine = [f for f in files if f.resolution == res]
                day_blocks = [f for f in mine if f.level == BLOCK_LEVEL]
                parts: dict[int, list[FileEntry]] = {}
                for f in mine:
                    if f.level != BLOCK_LEVEL:
                        parts.setdefault(f.partition_start, []).append(f)
                for p in sorted(parts):
                    entries = parts[p]
                    if now_ms >= p + pms + grace and _needs_final(res, entries):
                        # Late data for a day already merged: the day block's rows of this
                        # partition join the merge, so the rollups see every sample.
                        covering = [
                            b
                            for b in day_blocks
                            if b.partition_start <= p < b.partition_start + self._opt.raw_block_ms
                        ]
                        self._merge(res, p, entries, FINAL_LEVEL, also_read=covering)
                        return True
                    for level in range(_MAX_MERGED_LEVEL + 1):
                        runs = {f.seq for f in entries if f.level == level}
                        if len(runs) >= self._opt.merge_fan_in:
                            chosen = [f for f in entries if f.level == level]
                            self._merge(res, p, chosen, min(level + 1, _MAX_MERGED_LEVEL))
                            return True
                if res == "raw" and self._merge_day(mine, now_ms, grace):
                    return True
            return False

    def _merge_day(self, raw: list[FileEntry], now_ms: int, grace: int) -> bool:
        """Merge the rolled-up final blocks of a closed day into one day block."""
        day_ms = self._opt.raw_block_ms
        days: dict[int, list[FileEntry]] = {}
        for f in raw:
            days.setdefault(f.partition_start - f.partition_start % day_ms, []).append(f)
        for day in sorted(days):
            entries = days[day]
            done = (
                all(f.level == BLOCK_LEVEL for f in entries) and len({f.seq for f in entries}) == 1
            )
            if now_ms < day + day_ms + grace or done:
                continue
            if all(f.level in (FINAL_LEVEL, BLOCK_LEVEL) and f.rolled_up for f in entries):
                self._merge("raw", day, entries, BLOCK_LEVEL)
                return True
        return False

    def _merge(
        self,
        res: str,
        partition: int,
        inputs: list[FileEntry],
        level: int,
        *,
        also_read: list[FileEntry] | None = None,
    ) -> None:
        """Merge ``inputs`` (replaced) and ``also_read`` (kept; only their rows inside
        this partition are read) into one run of ``level``."""
        t0 = time.perf_counter()
        cur = self._db.cursor()
        removed = inputs
        kept = also_read or []
        inputs = sorted([*inputs, *kept], key=lambda f: f.seq)
        seq = inputs[-1].seq
        span = (partition, partition + self._opt.partition_ms(res) - 1) if kept else None
        paths = [str(self._manifest.root / f.path) for f in inputs]
        counts = cur.execute(
            "SELECT series_id, count(*) AS n FROM read_parquet(?, union_by_name = true) "
            "GROUP BY 1 ORDER BY 1",
            [paths],
        ).fetchnumpy()
        roll = res == "raw" and level == FINAL_LEVEL
        out = self._output(
            cur,
            resolution=res,
            partition=partition,
            level=level,
            seq=seq,
            rolled_up=roll or level == BLOCK_LEVEL,
        )
        outputs = [out]
        rollups: dict[str, FileOutput] = {}
        if roll:
            for r in _STEP_MS:
                pms = self._opt.partition_ms(r)
                rollups[r] = self._output(
                    cur,
                    resolution=r,
                    partition=partition - partition % pms,
                    level=0,
                    seq=seq,
                    rolled_up=False,
                )
            outputs += rollups.values()
        rows = 0
        try:
            ranges = blocks.split_by_rows(
                np.asarray(counts["series_id"], dtype=np.uint64),
                np.asarray(counts["n"], dtype=np.int64),
                self._opt.merge_chunk_rows,
            )
            for lo, hi in ranges:
                self._check_stopped()
                chunk = [
                    self._read(cur, f, lo, hi, span)
                    for f in inputs
                    if f.min_sid <= hi and f.max_sid >= lo
                ]
                if res == "raw":  # runs (sorted, unique per file) merge without a sort
                    merged = merge_runs([Run.from_columns(c) for c in chunk]).to_columns()
                else:
                    merged = blocks.dedup_last(chunk)
                del chunk
                rows += len(merged["ts"])
                out.add(merged)
                for r, rollup_out in rollups.items():
                    rollup_out.add(blocks.compute_rollups(merged, _STEP_MS[r]))
                del merged
            for o in outputs:
                o.seal()
        except BaseException:
            for o in outputs:
                o.discard()
            raise
        added = [e for o in outputs for e in o.entries]
        self._publish(added, removed)
        kind = {FINAL_LEVEL: "final", BLOCK_LEVEL: "block"}.get(level, "merge")
        self._report(kind, len(inputs), len(added), rows, t0)

    def _read(
        self,
        cur: duckdb.DuckDBPyConnection,
        f: FileEntry,
        lo: int,
        hi: int,
        span: tuple[int, int] | None,
    ) -> blocks.Columns:
        path = self._manifest.root / f.path
        start, end = span or (-(2**63), 2**63 - 1)
        if f.resolution == "raw":
            cols = blocks.read_raw(cur, path, lo, hi)
            if span is None:
                return cols
            return blocks.take(cols, (cols["ts"] >= start) & (cols["ts"] <= end))
        return blocks.read_rollup(cur, path, lo, hi, start_ms=start, end_ms=end)

    # -- retention ---------------------------------------------------------------------

    def apply_retention(self, now_ms: int) -> int:
        """Drop files whose partition ended before the retention horizon; return count."""
        with self._lock:
            if self._stopped.is_set():
                return 0
            t0 = time.perf_counter()
            doomed = expired_files(self._manifest.files(), self._opt, now_ms)
            if doomed:
                self._publish([], doomed)
                self._report("retention", len(doomed), 0, sum(f.rows for f in doomed), t0)
            return len(doomed)

    def compact_all(self, now_ms: int) -> None:
        """Flush, merge until nothing is left to merge, apply retention (tests, shutdown)."""
        self.flush_head()
        while self.merge_once(now_ms):
            pass
        self.apply_retention(now_ms)


class _StoppedError(Exception):
    """Raised inside a job when the store is closing; the job's files are discarded."""


def _needs_final(res: str, entries: list[FileEntry]) -> bool:
    if any(f.level != FINAL_LEVEL for f in entries):
        return True
    if len({f.seq for f in entries}) > 1:
        return True
    return res == "raw" and not all(f.rolled_up for f in entries)
