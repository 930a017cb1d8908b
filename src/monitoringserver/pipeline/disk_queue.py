"""A bounded FIFO of byte records on disk: segments, a persisted read position, torn-tail
repair. Used by the remote-write forwarder so data survives restarts and receiver outages.

Layout in ``directory``: segment files ``<20-digit number>.seg`` holding records
``[u32 length][u32 crc32][payload]`` (little-endian), and ``reader.pos`` holding
``<segment number> <offset>`` of the first record not yet acknowledged (written to a
temporary file, fsynced and renamed on every :meth:`ack`).

* :meth:`put` appends to the newest segment (a new one past ``segment_bytes``); with
  ``fsync`` the segment is fsynced after each put. When the queue would exceed
  ``max_bytes`` the *oldest* segments are dropped whole and counted in
  :attr:`dropped_records` (newest data keeps flowing).
* :meth:`peek` returns the record at the read position without consuming it;
  :meth:`ack` consumes it. A record is therefore delivered at least once; it is
  delivered twice only if the process dies between delivering and acknowledging.
* At open, a truncated or corrupt tail of the newest segment (a crash mid-write) is cut
  off; a corrupt record elsewhere ends that segment (counted in ``dropped_records``).

Thread-safety: all methods take one internal lock; callers may use threads.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

from monitoringserver.errors import BadDataError, StorageError

__all__ = ["DiskQueue"]

_HEADER = struct.Struct("<II")
_SUFFIX = ".seg"
_POS_FILE = "reader.pos"


class DiskQueue:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        fsync: bool = False,
    ) -> None:
        if segment_bytes < 1024 or max_bytes < segment_bytes:
            raise BadDataError(
                "cannot open disk queue: need segment_bytes >= 1024 and max_bytes >= segment_bytes"
            )
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.dropped_records = 0
        self._lock = threading.Lock()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._segments = sorted(
                int(p.stem) for p in directory.glob(f"*{_SUFFIX}") if p.stem.isdigit()
            )
            self._read_seg, self._read_off = self._load_pos()
            self._segments = [s for s in self._segments if s >= self._read_seg]
            for stale in directory.glob(f"*{_SUFFIX}"):
                if stale.stem.isdigit() and int(stale.stem) < self._read_seg:
                    stale.unlink()
            if not self._segments:
                self._segments = [max(self._read_seg, 1)]
                self._path(self._segments[0]).touch()
            if self._read_seg not in self._segments:
                self._read_seg, self._read_off = self._segments[0], 0
            self._repair_tail()
            self._sizes = {seg: self._path(seg).stat().st_size for seg in self._segments}
            self._writer = open(self._path(self._segments[-1]), "ab")  # noqa: SIM115
        except OSError as exc:
            raise StorageError(f"cannot open disk queue {directory}: {exc}") from exc

    def _path(self, seg: int) -> Path:
        return self.directory / f"{seg:020d}{_SUFFIX}"

    def _load_pos(self) -> tuple[int, int]:
        try:
            seg, off = (self.directory / _POS_FILE).read_text().split()
            return int(seg), int(off)
        except (OSError, ValueError):
            return (self._segments[0] if self._segments else 1), 0

    def _repair_tail(self) -> None:
        path = self._path(self._segments[-1])
        data = path.read_bytes()
        good = self._valid_prefix(data)
        if good < len(data):
            with open(path, "r+b") as f:
                f.truncate(good)

    @staticmethod
    def _valid_prefix(data: bytes) -> int:
        off = 0
        while off + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, off)
            end = off + _HEADER.size + length
            if end > len(data) or zlib.crc32(data[off + _HEADER.size : end]) != crc:
                break
            off = end
        return off

    # -- writing -----------------------------------------------------------------------

    def put(self, payload: bytes) -> None:
        """Append one record (durable in the page cache; fsynced when ``fsync``)."""
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            try:
                if self._writer.tell() + len(record) > self.segment_bytes and self._writer.tell():
                    self._rotate()
                self._writer.write(record)
                self._writer.flush()
                self._sizes[self._segments[-1]] += len(record)
                if self.fsync:
                    os.fsync(self._writer.fileno())
                self._enforce_limit()
            except OSError as exc:
                raise StorageError(f"cannot append to disk queue: {exc}") from exc

    def _rotate(self) -> None:
        if self.fsync:
            os.fsync(self._writer.fileno())
        self._writer.close()
        seg = self._segments[-1] + 1
        self._segments.append(seg)
        self._sizes[seg] = 0
        self._writer = open(self._path(seg), "ab")  # noqa: SIM115

    def _size(self) -> int:
        return sum(self._sizes.values()) - self._read_off

    def _enforce_limit(self) -> None:
        while len(self._segments) > 1 and self._size() > self.max_bytes:
            oldest = self._segments.pop(0)
            data = self._path(oldest).read_bytes()
            self.dropped_records += self._count(
                data, self._read_off if oldest == self._read_seg else 0
            )
            self._path(oldest).unlink()
            self._sizes.pop(oldest, None)
            self._read_seg, self._read_off = self._segments[0], 0
            self._save_pos()

    @staticmethod
    def _count(data: bytes, start: int) -> int:
        n, off = 0, start
        while off + _HEADER.size <= len(data):
            length, _crc = _HEADER.unpack_from(data, off)
            off += _HEADER.size + length
            n += 1
        return n

    # -- reading -----------------------------------------------------------------------

    def peek(self) -> bytes | None:
        """The oldest unacknowledged record, or ``None`` when the queue is empty."""
        with self._lock:
            while True:
                path = self._path(self._read_seg)
                try:
                    with open(path, "rb") as f:
                        f.seek(self._read_off)
                        header = f.read(_HEADER.size)
                        if len(header) == _HEADER.size:
                            length, crc = _HEADER.unpack(header)
                            payload = f.read(length)
                            if len(payload) == length and zlib.crc32(payload) == crc:
                                return payload
                            if self._read_seg == self._segments[-1]:
                                return None  # a write in progress
                            self.dropped_records += 1  # corrupt: skip the segment's rest
                except OSError as exc:
                    raise StorageError(f"cannot read disk queue: {exc}") from exc
                if self._read_seg == self._segments[-1]:
                    return None
                self._advance_segment()

    def _advance_segment(self) -> None:
        old = self._segments.pop(0)
        self._read_seg, self._read_off = self._segments[0], 0
        self._save_pos()
        self._path(old).unlink(missing_ok=True)
        self._sizes.pop(old, None)

    def ack(self) -> None:
        """Consume the record :meth:`peek` returned."""
        with self._lock:
            with open(self._path(self._read_seg), "rb") as f:
                f.seek(self._read_off)
                length, _crc = _HEADER.unpack(f.read(_HEADER.size))
            self._read_off += _HEADER.size + length
            self._save_pos()

    def _save_pos(self) -> None:
        tmp = self.directory / (_POS_FILE + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{self._read_seg} {self._read_off}\n")
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        tmp.replace(self.directory / _POS_FILE)

    def pending_bytes(self) -> int:
        with self._lock:
            return self._size()

    def close(self) -> None:
        with self._lock:
            if not self._writer.closed:
                self._writer.flush()
                if self.fsync:
                    os.fsync(self._writer.fileno())
                self._writer.close()
