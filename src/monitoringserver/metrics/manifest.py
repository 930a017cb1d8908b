"""The manifest: which Parquet files are visible, and safe removal of replaced ones.

A file is written under a temporary name, fsynced and renamed (:func:`publish_file`), then
made visible by a ``metric_files`` row inserted in the same DuckDB transaction that
removes its source (head rows, or the files it replaces). Files on disk that the table
does not list are leftovers of a crash and are deleted by :meth:`Manifest.cleanup_unlisted`
at start.

Readers take a :meth:`Manifest.snapshot`; files removed from the manifest are deleted
only once no snapshot older than their removal is still open. A generation counter,
odd while a publication is in progress (seqlock), lets readers detect that the head
and the file list changed under them and retry.

Thread-safety: every method may be called from any thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from monitoringserver.errors import StorageError

__all__ = [
    "BLOCK_LEVEL",
    "FINAL_LEVEL",
    "FileEntry",
    "Manifest",
    "Snapshot",
    "delete_entries",
    "insert_entries",
    "publish_file",
]

#: Level of a partition's merged, closed block (raw blocks at this level are rolled up).
FINAL_LEVEL = 9
#: Level of a raw block merged from the final blocks of one ``raw_block_s`` (a day); its
#: ``partition_start`` is the start of that day.
BLOCK_LEVEL = 10

_COLUMNS = (
    "id, path, resolution, level, seq, partition_start, min_sid, max_sid, min_ts, max_ts, "
    "rows, bytes, rolled_up"
)


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One visible Parquet file. ``path`` is relative to the manifest root."""

    id: int
    path: str
    resolution: str
    level: int
    seq: int
    partition_start: int
    min_sid: int
    max_sid: int
    min_ts: int
    max_ts: int
    rows: int
    bytes: int
    rolled_up: bool

    def row(self) -> list[object]:
        return [
            self.id,
            self.path,
            self.resolution,
            self.level,
            self.seq,
            self.partition_start,
            self.min_sid,
            self.max_sid,
            self.min_ts,
            self.max_ts,
            self.rows,
            self.bytes,
            self.rolled_up,
        ]


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: int
    files: tuple[FileEntry, ...]

    def of(self, resolution: str) -> list[FileEntry]:
        return [f for f in self.files if f.resolution == resolution]


class Manifest:
    """In-memory mirror of ``metric_files`` plus deferred deletion."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # generation became even
        # Guarded by _lock:
        self._files: dict[int, FileEntry] = {}
        self._generation = 0
        self._head_epoch = 0
        self._readers: dict[int, int] = {}  # generation → open snapshots
        self._doomed: list[tuple[int, Path]] = []  # (generation removed, path)
        self._on_remove: list[Callable[[list[int]], None]] = []

    def on_remove(self, callback: Callable[[list[int]], None]) -> None:
        """Call ``callback(file_ids)`` after each change that removed files (from the
        publishing thread; it must not block)."""
        with self._lock:
            self._on_remove.append(callback)

    def load(self, con: duckdb.DuckDBPyConnection) -> None:
        rows = con.execute(f"SELECT {_COLUMNS} FROM metric_files").fetchall()  # noqa: S608
        with self._lock:
            self._files = {int(r[0]): FileEntry(*r) for r in rows}

    def cleanup_unlisted(self) -> int:
        """Delete files under the root that the manifest does not list; return the count."""
        with self._lock:
            listed = {self.root / f.path for f in self._files.values()}
        removed = 0
        if not self.root.exists():
            return 0
        for path in self.root.rglob("*"):
            if path.is_file() and path not in listed:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def files(self) -> list[FileEntry]:
        with self._lock:
            return list(self._files.values())

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """The visible files; they stay on disk until the context exits."""
        with self._lock:
            gen = self._generation
            snap = Snapshot(gen, tuple(self._files.values()))
            self._readers[gen] = self._readers.get(gen, 0) + 1
        try:
            yield snap
        finally:
            with self._lock:
                self._readers[gen] -= 1
                if not self._readers[gen]:
                    del self._readers[gen]
            self.collect_garbage()

    @contextlib.contextmanager
    def publishing(self, *, head: bool = False) -> Iterator[None]:
        """Bracket a DuckDB commit that changes the head or the file list (seqlock).
        ``head``: the commit deletes head rows (a flush); :attr:`head_epoch` moves too."""
        with self._lock:
            self._generation += 1
            self._head_epoch += head
        try:
            yield
        finally:
            with self._lock:
                self._generation += 1
                self._head_epoch += head
                self._settled.notify_all()

    def wait_settled(self, timeout_s: float) -> None:
        """Block until no publication is in progress (or ``timeout_s`` passed), so a
        reader that saw one retries after it rather than spinning through it."""
        with self._settled:
            self._settled.wait_for(lambda: self._generation % 2 == 0, timeout_s)

    @property
    def head_epoch(self) -> int:
        """Moves (before and after the commit) with every publication that deletes head
        rows; merges and retention leave it alone. Readers caching the head key on it."""
        with self._lock:
            return self._head_epoch

    def apply(self, added: Iterable[FileEntry], removed: Iterable[FileEntry]) -> None:
        """Mirror a committed change; removed files are deleted when no reader needs them."""
        removed = list(removed)
        with self._lock:
            for f in added:
                self._files[f.id] = f
            for f in removed:
                self._files.pop(f.id, None)
                self._doomed.append((self._generation, self.root / f.path))
            listeners = list(self._on_remove) if removed else []
        for callback in listeners:
            callback([f.id for f in removed])
        self.collect_garbage()

    def collect_garbage(self) -> None:
        with self._lock:
            oldest = min(self._readers, default=None)
            keep: list[tuple[int, Path]] = []
            ready: list[Path] = []
            for gen, path in self._doomed:
                # A snapshot taken at ``gen`` itself may predate the removal.
                if oldest is None or oldest > gen:
                    ready.append(path)
                else:
                    keep.append((gen, path))
            self._doomed = keep
        for path in ready:
            path.unlink(missing_ok=True)


def insert_entries(con: duckdb.DuckDBPyConnection, entries: Iterable[FileEntry]) -> None:
    for e in entries:
        con.execute(
            f"INSERT INTO metric_files ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
            e.row(),
        )


def delete_entries(con: duckdb.DuckDBPyConnection, entries: Iterable[FileEntry]) -> None:
    for e in entries:
        con.execute("DELETE FROM metric_files WHERE id = ?", [e.id])


def publish_file(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it to ``final`` and fsync the directory."""
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dfd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise StorageError(f"cannot publish file {final}: {exc}") from exc
