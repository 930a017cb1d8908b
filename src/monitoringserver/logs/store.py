"""The embedded log store: DuckDB head table → Parquet archives with a manifest.

Lines enter with :meth:`LogStore.insert` (on the database writer thread, in the
transaction that also records the WAL position and the dedup state). :meth:`flush`
moves the whole head into one archive: written by DuckDB ``COPY`` under a temporary
name (zstd at the configured level, sorted by host, source, logger, time; ids in
binary columns with ``flush_layout = "idcols"``; :meth:`compact` later rewrites fresh
archives as templates + typed variables, see :mod:`.templates`), fsynced, renamed,
then listed in ``log_archives`` in the same transaction that empties the head. Files
the manifest does not list are crash leftovers and are removed when the store opens.
Each archive carries its time range, hosts, attrs keys, line count, raw and stored
bytes and a token index (for needle searches; see :mod:`.keyset`).

Thread-safety: every method may be called from any thread; writes are funnelled
through :class:`~monitoringserver.storage.db.Database`'s writer thread.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import numpy as np

from monitoringserver.errors import BadDataError, NotFoundError, StorageError
from monitoringserver.logs.api import ArchiveFilter, ArchiveInfo, DedupKey, RotationResult
from monitoringserver.logs.archive import (
    ARCHIVE_COLS,
    GROUPS_DROPPED_SUFFIX,
    IDCOLS_SUFFIX,
    IDS_SUFFIX,
    NUMPY_KEYS_SUFFIX,
    PAIRS_SUFFIX,
    ArchiveEntry,
    LogStoreOptions,
    archive_info,
    build_archive,
    files_source,
    head_source,
    layout_of,
    load_filter,
    mergeable_filters,
)
from monitoringserver.logs.schema import create_schema
from monitoringserver.model.logs import LogBatch
from monitoringserver.model.matchers import Matcher
from monitoringserver.storage.db import Database

__all__ = ["EXPORT_FORMATS", "ArchiveEntry", "LogStore", "LogStoreOptions"]

#: Formats of :meth:`LogStore.export_archive`.
EXPORT_FORMATS = ("parquet", "jsonl")


class LogStore:
    def __init__(
        self,
        db: Database,
        directory: Path,
        options: LogStoreOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.directory = directory
        self.options = options or LogStoreOptions()
        self._clock = clock
        self._encoder = msgspec.json.Encoder()
        self._last_flush = clock()
        self._gen_lock = threading.Lock()
        self._generation = 0  # guarded by _gen_lock: bumped when a change starts and ends
        self._active = 0  # guarded by _gen_lock: changes in progress
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create log archive directory {directory}: {exc}") from exc
        db.write(create_schema)
        self._batch = int(db.read("SELECT coalesce(max(batch), 0) FROM log_head")[0][0])
        self._flush_lock = threading.Lock()
        self.cleanup_unlisted()

    # -- writing ------------------------------------------------------------------

    def _columns(self, batch: LogBatch) -> dict[str, object]:
        enc = self._encoder
        attrs = [enc.encode(a).decode() if a else "" for a in batch.attrs]
        return {
            "ts": np.ascontiguousarray(batch.ts_ms, dtype=np.int64),
            "server_id": np.array(batch.server_id, dtype=object),
            "level": np.array(batch.level, dtype=object),
            "logger": np.array(batch.logger, dtype=object),
            "source": np.array(batch.source, dtype=object),
            "message": np.array(batch.message, dtype=object),
            "attrs": np.array(attrs, dtype=object),
        }

    def insert_in(
        self,
        con: duckdb.DuckDBPyConnection,
        batch: LogBatch,
        *,
        lsn: int | None = None,
        dedup: Sequence[DedupKey] = (),
    ) -> None:
        """Insert inside the caller's write transaction (run on the writer thread)."""
        if len(batch):
            name = f"_log_in_{secrets.token_hex(4)}"
            con.register(name, self._columns(batch))
            self._batch += 1
            try:
                con.execute(
                    f"INSERT INTO log_head SELECT *, {int(self._batch)} FROM {name}"  # noqa: S608
                )
            finally:
                con.unregister(name)
        if lsn is not None:
            con.execute("INSERT OR REPLACE INTO log_state VALUES ('committed_lsn', ?)", [lsn])
        for key in dedup:
            con.execute(
                "INSERT INTO log_dedup VALUES (?, ?) ON CONFLICT (agent_id) DO UPDATE "
                "SET last_seq = greatest(log_dedup.last_seq, excluded.last_seq)",
                [key.agent_id, key.batch_seq],
            )

    async def ainsert(
        self, batch: LogBatch, *, lsn: int | None = None, dedup: Sequence[DedupKey] = ()
    ) -> None:
        await self.db.awrite(lambda con: self.insert_in(con, batch, lsn=lsn, dedup=dedup))

    def insert(
        self, batch: LogBatch, *, lsn: int | None = None, dedup: Sequence[DedupKey] = ()
    ) -> None:
        self.db.write(lambda con: self.insert_in(con, batch, lsn=lsn, dedup=dedup))

    def committed_lsn(self) -> int:
        rows = self.db.read("SELECT value FROM log_state WHERE key = 'committed_lsn'")
        return int(rows[0][0]) if rows else 0

    def dedup_state(self) -> dict[str, int]:
        return {a: int(s) for a, s in self.db.read("SELECT agent_id, last_seq FROM log_dedup")}

    def head_lines(self) -> int:
        return int(self.db.read("SELECT count(*) FROM log_head")[0][0])

    # -- archives -----------------------------------------------------------------

    def needs_flush(self) -> bool:
        head = self.head_lines()
        if head >= self.options.flush_lines:
            return True
        return head > 0 and self._clock() - self._last_flush >= self.options.flush_interval_s

    def flush(self) -> ArchiveInfo | None:
        """Move the head (every row inserted so far) into a new archive; None when empty.

        The file, its token index and its metadata are built on the calling thread
        with a read cursor (inserts continue meanwhile); only the manifest insert and
        the head delete run on the writer thread, in one short transaction."""
        with self._flush_lock:
            cutoff = self._batch
            info = self._build_archive(cutoff)
            if info is None:
                return None
            archive, path, row = info
            with self._changing():
                try:
                    self.db.write(lambda con: self._publish_in(con, row, cutoff))
                except BaseException:
                    path.unlink(missing_ok=True)
                    raise
            self._last_flush = self._clock()
            return archive

    def _publish_in(self, con: duckdb.DuckDBPyConnection, row: list[object], cutoff: int) -> None:
        con.execute(
            f"INSERT INTO log_archives ({ARCHIVE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
            row,
        )
        con.execute("DELETE FROM log_head WHERE batch <= ?", [cutoff])

    def _build_archive(self, cutoff: int) -> tuple[ArchiveInfo, Path, list[object]] | None:
        return build_archive(
            self.db.cursor(),
            self.directory,
            self.options,
            head_source(cutoff),
            int(self._clock() * 1000),
            level=self.options.compression_level,
            layout=self.options.flush_layout,
        )

    def compact(self, *, force: bool = False) -> ArchiveInfo | None:
        """Merge the oldest fresh archives into one at ``compaction_level``, in the
        template layout (:mod:`.templates`; fresh archives of any layout are read).

        Runs when at least ``compact_min_archives`` fresh archives exist (``force``: at
        least one). An archive too big to merge with its neighbour within
        ``compact_max_lines`` is re-encoded alone, so every archive reaches the compact
        layout however large the flushes were. The merged file is built on a read
        cursor; the manifest swap (new row in, old rows out) is one writer transaction;
        the old files are removed after it. Returns the new archive, or None when there
        was nothing to compact."""
        opts = self.options
        with self._flush_lock:
            rows = self.db.read(
                "SELECT id, path, lines, hash_version, bloom FROM log_archives "
                "WHERE NOT compacted ORDER BY min_ts, id"
            )
            fresh = [(str(r[0]), str(r[1]), int(r[2]), layout_of(str(r[3]))) for r in rows]
            if not fresh or len(fresh) < (1 if force else opts.compact_min_archives):
                return None
            chosen: list[tuple[str, str, int, str]] = []
            total = 0
            for item in fresh:
                if chosen and total + item[2] > opts.compact_max_lines:
                    break
                chosen.append(item)
                total += item[2]
            paths = [self.directory / p for _, p, _, _ in chosen]
            built = build_archive(
                self.db.cursor(),
                self.directory,
                opts,
                files_source([(self.directory / p, lay) for _, p, _, lay in chosen]),
                int(self._clock() * 1000),
                level=opts.compaction_level,
                layout="tmpl",
                key_sets=mergeable_filters(rows[: len(chosen)], opts),
            )
            if built is None:
                return None
            info, path, row = built
            ids = [i for i, _, _, _ in chosen]

            def swap(con: duckdb.DuckDBPyConnection) -> None:
                con.execute(
                    f"INSERT INTO log_archives ({ARCHIVE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
                    row,
                )
                con.execute("UPDATE log_archives SET compacted = true WHERE id = ?", [info.id])
                con.execute("DELETE FROM log_archives WHERE list_contains(?, id)", [ids])

            with self._changing():
                try:
                    self.db.write(swap)
                except BaseException:
                    path.unlink(missing_ok=True)
                    raise
            for old in paths:
                old.unlink(missing_ok=True)
            return info

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        with self._gen_lock:
            self._generation += 1
            self._active += 1
        try:
            yield
        finally:
            with self._gen_lock:
                self._generation += 1
                self._active -= 1

    def generation(self) -> int | None:
        """A token that changes whenever lines move between head and archives or
        archives go away; None while such a change is in progress. A reader whose
        token is the same (and not None) before and after saw a consistent state."""
        with self._gen_lock:
            return None if self._active else self._generation

    def cleanup_unlisted(self) -> int:
        """Remove archive files and temporaries the manifest does not list."""
        listed = {r[0] for r in self.db.read("SELECT path FROM log_archives")}
        removed = 0
        for p in self.directory.iterdir():
            if (
                p.is_file()
                and p.name not in listed
                and (p.name.endswith(".parquet") or p.name.endswith(".tmp"))
            ):
                p.unlink(missing_ok=True)
                removed += 1
        return removed

    def entries(
        self, flt: ArchiveFilter | None = None, *, blooms: bool = True
    ) -> list[ArchiveEntry]:
        """Manifest rows overlapping the filter, oldest first (``blooms=False``: without
        loading the token indexes, for listings)."""
        cols = ARCHIVE_COLS.replace("bloom,", "CASE WHEN ? THEN bloom END,")
        sql = f"SELECT {cols}, octet_length(bloom) FROM log_archives WHERE true"  # noqa: S608
        params: list[object] = [blooms]
        if flt is not None:
            if flt.start_ms is not None:
                sql += " AND max_ts >= ?"
                params.append(flt.start_ms)
            if flt.end_ms is not None:
                sql += " AND min_ts <= ?"
                params.append(flt.end_ms)
            if flt.server_id is not None:
                sql += " AND list_contains(hosts, ?)"
                params.append(flt.server_id)
        sql += " ORDER BY min_ts, id"
        out = []
        version = duckdb.__version__
        for r in self.db.read(sql, params):
            info = archive_info(r)
            base, *features = str(r[11]).split("+")
            flags = {"+" + f for f in features}
            numpy_keys = NUMPY_KEYS_SUFFIX in flags
            usable = r[10] and (numpy_keys or base == version)
            bloom = load_filter(bytes(r[10])) if usable else None
            path = self.directory / r[1]
            out.append(
                ArchiveEntry(
                    info,
                    path,
                    tuple(r[5]),
                    bloom,
                    PAIRS_SUFFIX in flags,
                    IDS_SUFFIX in flags,
                    IDCOLS_SUFFIX in flags,
                    layout_of(str(r[11])),
                    numpy_keys,
                    GROUPS_DROPPED_SUFFIX in flags,
                )
            )
        return out

    def archives(self, flt: ArchiveFilter | None = None) -> list[ArchiveInfo]:
        return [e.info for e in self.entries(flt, blooms=False)]

    def archive_count(self) -> int:
        return int(self.db.read("SELECT count(*) FROM log_archives")[0][0])

    def archive_path(self, archive_id: str) -> Path:
        rows = self.db.read("SELECT path FROM log_archives WHERE id = ?", [archive_id])
        if not rows:
            raise NotFoundError(f"cannot find log archive {archive_id!r}: no such archive")
        return self.directory / str(rows[0][0])

    def export_archive(self, archive_id: str, dest: Path, fmt: str) -> Path:
        """Write the lines of one archive to ``dest`` with their messages rebuilt,
        whatever its storage layout, ordered by time: ``fmt`` ``"parquet"`` (the
        ``HEAD_COLUMNS`` as plain columns, zstd) or ``"jsonl"`` (one JSON object per
        line). For downloads: a compacted archive stores templates and variables, which
        no tool outside this server can read as lines."""
        if fmt not in EXPORT_FORMATS:
            raise BadDataError(
                f"cannot export log archive {archive_id!r}: unknown format {fmt!r} "
                f"(expected one of {', '.join(EXPORT_FORMATS)})"
            )
        rows = self.db.read(
            "SELECT path, hash_version FROM log_archives WHERE id = ?", [archive_id]
        )
        if not rows:
            raise NotFoundError(f"cannot find log archive {archive_id!r}: no such archive")
        src = files_source([(self.directory / str(rows[0][0]), layout_of(str(rows[0][1])))])
        options = "FORMAT parquet, COMPRESSION zstd" if fmt == "parquet" else "FORMAT json"
        target = str(dest).replace("'", "''")
        try:
            self.db.cursor().execute(
                f"COPY (SELECT * FROM {src} ORDER BY ts) TO '{target}' ({options})"  # noqa: S608
            )
        except duckdb.IOException as exc:  # compacted or rotated away meanwhile
            raise NotFoundError(
                f"cannot export log archive {archive_id!r}: its file is gone ({exc})"
            ) from exc
        return dest

    def delete(self, archive_id: str) -> ArchiveInfo:
        """Unlist an archive, then remove its file."""
        return self._delete_many([archive_id], missing_ok=False)[0]

    def _delete_many(self, ids: Sequence[str], *, missing_ok: bool) -> list[ArchiveInfo]:
        if not ids:
            return []

        def unlist(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
            found = con.execute(
                f"SELECT {ARCHIVE_COLS} FROM log_archives WHERE list_contains(?, id)",  # noqa: S608
                [list(ids)],
            ).fetchall()
            if not missing_ok and len(found) != len(ids):
                raise NotFoundError(f"cannot delete log archive {ids[0]!r}: no such archive")
            con.execute("DELETE FROM log_archives WHERE list_contains(?, id)", [list(ids)])
            return found

        with self._changing():
            rows = self.db.write(unlist)
        out: list[ArchiveInfo] = []
        for r in rows:
            (self.directory / str(r[1])).unlink(missing_ok=True)
            out.append(archive_info(r))
        return out

    def rotate(
        self, *, max_age_s: float | None = None, max_total_bytes: int | None = None
    ) -> RotationResult:
        """Delete archives older than ``max_age_s`` (by newest line), then the oldest
        until the total is at most ``max_total_bytes``; head lines older than the age
        limit go too. Defaults come from the options."""
        age = self.options.retention_s if max_age_s is None else max_age_s
        limit = self.options.max_total_bytes if max_total_bytes is None else max_total_bytes
        entries = self.archives()
        now_ms = int(self._clock() * 1000)
        doomed: list[ArchiveInfo] = []
        if age is not None:
            cutoff = now_ms - int(age * 1000)
            doomed = [a for a in entries if a.max_ts_ms < cutoff]
            self.db.write(lambda con: con.execute("DELETE FROM log_head WHERE ts < ?", [cutoff]))
        if limit is not None:
            keep = [a for a in entries if a not in doomed]
            total = sum(a.stored_bytes for a in keep)
            for a in sorted(keep, key=lambda a: (a.max_ts_ms, a.id)):
                if total <= limit:
                    break
                doomed.append(a)
                total -= a.stored_bytes
        deleted = self._delete_many([a.id for a in doomed], missing_ok=True)
        return RotationResult(tuple(a.id for a in deleted), sum(a.stored_bytes for a in deleted))

    def host_may_match(self, entry: ArchiveEntry, matchers: Sequence[Matcher]) -> bool:
        """False when no host of the archive satisfies every ``server_id`` matcher."""
        hm = [m for m in matchers if m.name == "server_id"]
        return not hm or any(all(m.matches(h) for m in hm) for h in entry.info.hosts)
