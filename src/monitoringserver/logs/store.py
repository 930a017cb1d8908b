"""The embedded log store: DuckDB head table → Parquet archives with a manifest.

Lines enter with :meth:`LogStore.insert` (on the database writer thread, in the
transaction that also records the WAL position and the dedup state). :meth:`flush`
moves the whole head into one archive: written by DuckDB ``COPY`` under a temporary
name (zstd at the configured level, sorted by host, source, logger, time), fsynced,
renamed, then listed in ``log_archives`` in the same transaction that empties the
head. Files the manifest does not list are crash leftovers and are removed when the
store opens. Each archive carries its time range, hosts, attrs keys, line count, raw
and stored bytes and a token bloom filter (for needle searches).

Thread-safety: every method may be called from any thread; writes are funnelled
through :class:`~monitoringserver.storage.db.Database`'s writer thread.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import numpy as np

from monitoringserver.errors import BadDataError, NotFoundError, StorageError
from monitoringserver.logs.api import ArchiveFilter, ArchiveInfo, DedupKey, RotationResult
from monitoringserver.logs.bloom import TokenBloom
from monitoringserver.logs.patterns import PAIRS_SQL, TOKENS_SQL
from monitoringserver.logs.schema import HEAD_COLUMNS, create_schema
from monitoringserver.model.logs import LogBatch
from monitoringserver.model.matchers import Matcher
from monitoringserver.storage.db import Database

__all__ = ["ArchiveEntry", "LogStore", "LogStoreOptions"]

_PAIRS_SUFFIX = "+pairs"
_ARCHIVE_COLS = (
    "id, path, min_ts, max_ts, hosts, attr_keys, lines, raw_bytes, stored_bytes, created_ms, "
    "bloom, hash_version"
)


@dataclass(frozen=True, slots=True)
class LogStoreOptions:
    """``compression_level``: zstd level of archives (1..22). ``flush_lines`` /
    ``flush_interval_s``: when the head becomes an archive. ``row_group_lines``: Parquet
    row group size. ``retention_s`` / ``max_total_bytes``: automatic rotation by age and
    by total stored size (None = off). ``accept_future_s``: lines stamped further ahead
    are rejected (``too_new``); lines older than ``retention_s`` are rejected (``too_old``).
    ``index_pairs``: also put pairs of consecutive runs in the bloom filters, so needles
    made of short groups (UUIDs, IPs) prune archives too; costs ~5x the flush CPU and
    ~4x the filter size."""

    compression_level: int = 3
    flush_lines: int = 1_000_000
    flush_interval_s: float = 300.0
    row_group_lines: int = 65_536
    retention_s: float | None = 7 * 86_400.0
    max_total_bytes: int | None = None
    bloom_bits_per_key: int = 10
    index_pairs: bool = False
    accept_future_s: float = 600.0

    def __post_init__(self) -> None:
        if not 1 <= self.compression_level <= 22:
            raise BadDataError("cannot configure log store: compression_level must be 1..22")
        if self.flush_lines < 1 or self.row_group_lines < 1 or self.flush_interval_s <= 0:
            raise BadDataError("cannot configure log store: flush limits must be positive")


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """A manifest row with what queries need for pruning."""

    info: ArchiveInfo
    path: Path
    attr_keys: tuple[str, ...]
    bloom: TokenBloom | None
    pairs_indexed: bool = False


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _info(r: tuple[Any, ...]) -> ArchiveInfo:
    index = len(r[10]) if r[10] is not None else 0
    return ArchiveInfo(r[0], r[2], r[3], tuple(r[4]), r[6], r[7], r[8], r[9], index)


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


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

        The file, its bloom filter and its metadata are built on the calling thread
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
            f"INSERT INTO log_archives ({_ARCHIVE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
            row,
        )
        con.execute("DELETE FROM log_head WHERE batch <= ?", [cutoff])

    def _build_archive(self, cutoff: int) -> tuple[ArchiveInfo, Path, list[object]] | None:
        cur = self.db.cursor()
        row = cur.execute(
            "SELECT count(*), min(ts), max(ts), coalesce(sum(strlen(message)), 0) FROM log_head "
            "WHERE batch <= ?",
            [cutoff],
        ).fetchall()[0]
        lines, lo, hi, raw = (int(x) if x is not None else 0 for x in row)
        if lines == 0:
            return None
        created = int(self._clock() * 1000)
        archive_id = f"{created:013d}-{secrets.token_hex(4)}"
        final = self.directory / f"{archive_id}.parquet"
        tmp = self.directory / f".{archive_id}.parquet.tmp"
        opts = self.options
        src = f"(SELECT {', '.join(HEAD_COLUMNS)} FROM log_head WHERE batch <= {int(cutoff)})"  # noqa: S608
        try:
            # The database runs with preserve_insertion_order=false; row-group pruning
            # and compression need the file in exactly this order.
            cur.execute("SET SESSION preserve_insertion_order = true")
            cur.execute(
                f"COPY (SELECT * FROM {src} ORDER BY server_id, source, logger, ts) "  # noqa: S608
                f"TO {_sql_path(tmp)} (FORMAT parquet, COMPRESSION zstd, "
                f"COMPRESSION_LEVEL {int(opts.compression_level)}, PARQUET_VERSION V2, "
                f"ROW_GROUP_SIZE {int(opts.row_group_lines)})"
            ).fetchall()
            _fsync(tmp)
            hosts = sorted(
                r[0]
                for r in cur.execute(f"SELECT DISTINCT server_id FROM {src}").fetchall()  # noqa: S608
            )
            keys = sorted(
                r[0]
                for r in cur.execute(
                    f"SELECT DISTINCT unnest(json_keys(attrs)) FROM {src} WHERE attrs <> ''"  # noqa: S608
                ).fetchall()
            )
            key_sql = TOKENS_SQL + (f" UNION ALL {PAIRS_SQL}" if opts.index_pairs else "")
            tokens = key_sql.replace("{src}", f"read_parquet({_sql_path(tmp)})")
            sql = f"SELECT DISTINCT hash(tok) AS h FROM ({tokens})"  # noqa: S608
            hashes = cur.execute(sql).fetchnumpy()["h"]
            bloom = TokenBloom.build(
                np.asarray(hashes, dtype=np.uint64), bits_per_key=opts.bloom_bits_per_key
            )
            tmp.rename(final)
            _fsync(self.directory)
        except BaseException:
            tmp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            raise
        stored = final.stat().st_size
        row_out: list[object] = [
            archive_id,
            final.name,
            lo,
            hi,
            hosts,
            keys,
            lines,
            raw,
            stored,
            created,
            bloom.to_bytes(),
            duckdb.__version__ + (_PAIRS_SUFFIX if opts.index_pairs else ""),
        ]
        info = ArchiveInfo(
            archive_id, lo, hi, tuple(hosts), lines, raw, stored, created, len(bloom)
        )
        return info, final, row_out

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

    def entries(self, flt: ArchiveFilter | None = None) -> list[ArchiveEntry]:
        """Manifest rows overlapping the filter, oldest first."""
        sql = f"SELECT {_ARCHIVE_COLS} FROM log_archives WHERE true"  # noqa: S608
        params: list[object] = []
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
            info = _info(r)
            hv = str(r[11])
            usable = r[10] and hv.removesuffix(_PAIRS_SUFFIX) == version
            bloom = TokenBloom.from_bytes(bytes(r[10])) if usable else None
            pairs = hv.endswith(_PAIRS_SUFFIX)
            out.append(ArchiveEntry(info, self.directory / r[1], tuple(r[5]), bloom, pairs))
        return out

    def archives(self, flt: ArchiveFilter | None = None) -> list[ArchiveInfo]:
        return [e.info for e in self.entries(flt)]

    def archive_path(self, archive_id: str) -> Path:
        rows = self.db.read("SELECT path FROM log_archives WHERE id = ?", [archive_id])
        if not rows:
            raise NotFoundError(f"cannot find log archive {archive_id!r}: no such archive")
        return self.directory / str(rows[0][0])

    def delete(self, archive_id: str) -> ArchiveInfo:
        """Unlist an archive, then remove its file."""
        return self._delete_many([archive_id], missing_ok=False)[0]

    def _delete_many(self, ids: Sequence[str], *, missing_ok: bool) -> list[ArchiveInfo]:
        if not ids:
            return []

        def unlist(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
            found = con.execute(
                f"SELECT {_ARCHIVE_COLS} FROM log_archives WHERE list_contains(?, id)",  # noqa: S608
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
            out.append(_info(r))
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
