"""On-disk queue of undelivered batches, bounded in bytes, safe against ``kill -9``.

One file per batch, named by a zero-padded sequence number so directory order is
delivery order. A record is written to ``<name>.tmp``, fsynced, renamed (atomic) and
the directory fsynced; leftover ``.tmp`` files from a crash are removed at open. When
the total would pass ``max_bytes`` the oldest records are deleted and counted in
:attr:`Spool.dropped` (with a warning). Thread-compatible, not thread-safe: the agent
uses it from its event loop only.

The spool directory also keeps ``seq``, the batch sequence reservation, so batch
numbers increase across restarts (see :class:`SeqAllocator`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from pathlib import Path

__all__ = ["SeqAllocator", "Spool"]

_log = logging.getLogger(__name__)
_SUFFIX = ".batch"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


class Spool:
    """FIFO of byte records under ``directory``."""

    def __init__(self, directory: Path, *, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        for tmp in directory.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        self._files: deque[tuple[int, int]] = deque()  # (record number, size)
        for p in sorted(directory.glob(f"*{_SUFFIX}")):
            try:
                self._files.append((int(p.stem), p.stat().st_size))
            except (ValueError, OSError):
                continue
        self.bytes = sum(size for _, size in self._files)
        self.dropped = 0
        self._next = self._files[-1][0] + 1 if self._files else 1

    def __len__(self) -> int:
        return len(self._files)

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:020d}{_SUFFIX}"

    def put(self, data: bytes) -> None:
        """Append a record durably; drops the oldest records when over ``max_bytes``."""
        if len(data) > self.max_bytes:
            self.dropped += 1
            _log.warning("spool: dropped a %d-byte batch larger than the spool", len(data))
            return
        while self._files and self.bytes + len(data) > self.max_bytes:
            number, size = self._files.popleft()
            self._path(number).unlink(missing_ok=True)
            self.bytes -= size
            self.dropped += 1
            _log.warning(
                "spool full (%d bytes): dropped the oldest batch, %d dropped so far",
                self.max_bytes,
                self.dropped,
            )
        number = self._next
        self._next += 1
        _atomic_write(self._path(number), data)
        self._files.append((number, len(data)))
        self.bytes += len(data)

    def peek(self) -> bytes | None:
        """The oldest record, or None when empty (a vanished file is skipped)."""
        while self._files:
            number, size = self._files[0]
            try:
                return self._path(number).read_bytes()
            except FileNotFoundError:
                self._files.popleft()
                self.bytes -= size
        return None

    def pop(self) -> None:
        """Remove the oldest record (after it was delivered)."""
        if self._files:
            number, size = self._files.popleft()
            self._path(number).unlink(missing_ok=True)
            self.bytes -= size


class SeqAllocator:
    """Monotonic batch numbers, persisted in blocks of ``reserve`` in ``path``.

    Numbers start at ``max(end of the last reserved block + 1, now in microseconds)``:
    after a crash the agent resumes past every number it may have used (gaps are
    fine), and a lost state file or a fresh install still never reuses a number
    (the server would drop such batches as duplicates) as long as the clock does not
    run backwards.
    """

    def __init__(self, path: Path | None, *, reserve: int = 1000) -> None:
        self._path = path
        self._reserve = reserve
        start = int(time.time() * 1_000_000)
        if path is not None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                start = max(start, int(path.read_text().strip() or 0) + 1)
        self._next = start
        self._limit = start - 1
        self._extend()

    def _extend(self) -> None:
        self._limit = self._next + self._reserve - 1
        if self._path is not None:
            _atomic_write(self._path, str(self._limit).encode())

    def next(self) -> int:
        if self._next > self._limit:
            self._extend()
        n = self._next
        self._next += 1
        return n
