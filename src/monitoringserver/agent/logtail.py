"""Tail log files by glob: rotation (rename and truncate), multi-line records, offsets.

Each :meth:`FileTailer.poll` expands the globs, reads what was appended since the last
poll and returns complete records. A file is identified by ``(device, inode)``:

* **rename rotation** (``app.log`` → ``app.log.1``, new ``app.log``): the old file is
  read to its end through the still-open handle, then the new file from offset 0;
* **truncation** (``copytruncate``): size below the offset, or the bytes just before
  the offset no longer what was read there (truncated and rewritten past the old
  size between two polls) → read from 0 again;
* **multi-line**: a line that starts with whitespace, or continues a Python traceback
  (``Traceback``, ``File "..."``, ``<Name>Error: ...`` after it), is appended to the
  previous record; a pending record is emitted when the next record starts or after one
  idle poll.

Offsets are *committed* (:meth:`commit`) only after the server acknowledged the records,
and saved to ``offsets.json``, so a restart resends at most the unacknowledged tail
(the server's dedup does not cover those: delivery is at-least-once across restarts).
"""

from __future__ import annotations

import glob
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["FileTailer", "TailRecord", "detect_level"]

_LEVEL_RE = re.compile(
    r"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRIT|CRITICAL|FATAL|PANIC)\b", re.I
)
_CONTINUATION_RE = re.compile(
    r"^(\s|Traceback \(most recent call last\)|Caused by:|\.\.\. \d+ more)"
)
_EXCEPTION_LINE_RE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
_MAX_RECORD = 64 * 1024
_READ_CHUNK = 1 << 20


def detect_level(message: str) -> str:
    """The first level word in the first 200 characters, lower-case, or ``""``."""
    m = _LEVEL_RE.search(message[:200])
    return m.group(1).lower() if m else ""


@dataclass(frozen=True, slots=True)
class TailRecord:
    """One record; ``key``/``offset``: the file identity and the offset after it."""

    ts_ms: int
    source: str
    message: str
    level: str
    key: str
    offset: int


@dataclass(slots=True)
class _File:
    path: str
    key: str
    fh: IO[bytes]
    offset: int
    partial: bytes = b""
    pending: list[str] = field(default_factory=list)
    pending_offset: int = 0
    idle: int = 0
    in_traceback: bool = False
    tail: bytes = b""  # the last bytes read before ``offset`` (truncation check)


class FileTailer:
    def __init__(
        self,
        patterns: list[str],
        state_file: Path | None,
        *,
        from_end: bool = True,
    ) -> None:
        self._patterns = patterns
        self._state_file = state_file
        self._from_end = from_end
        self._files: dict[str, _File] = {}  # path -> open file
        self._committed: dict[str, int] = {}  # key -> offset acknowledged
        if state_file is not None and state_file.exists():
            try:
                self._committed = {
                    str(k): int(v) for k, v in json.loads(state_file.read_text()).items()
                }
            except (OSError, ValueError):
                self._committed = {}

    @staticmethod
    def _key(st: os.stat_result) -> str:
        return f"{st.st_dev}:{st.st_ino}"

    def _open(self, path: str, st: os.stat_result, *, new: bool) -> _File | None:
        try:
            fh = open(path, "rb")  # noqa: SIM115 (kept open across polls)
        except OSError:
            return None
        key = self._key(st)
        if key in self._committed:
            offset = self._committed[key] if self._committed[key] <= st.st_size else 0
        elif new or not self._from_end:
            offset = 0
        else:
            offset = st.st_size
        fh.seek(offset)
        return _File(path, key, fh, offset, pending_offset=offset)

    def poll(self, *, first: bool = False) -> list[TailRecord]:
        """Read everything new; ``first``: files found now start at their end (unless an
        offset was committed), files appearing later start at 0."""
        out: list[TailRecord] = []
        paths = sorted({p for pat in self._patterns for p in glob.glob(pat)})
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            f = self._files.get(path)
            if f is not None and f.key != self._key(st):  # renamed away: drain the old one
                self._read(f, out, final=True)
                f.fh.close()
                f = None
            if f is None:
                f = self._open(path, st, new=not first)
                if f is None:
                    continue
                self._files[path] = f
            elif st.st_size < f.offset or not self._same_tail(f):  # truncated
                f.fh.seek(0)
                f.tail = b""
                f.offset = f.pending_offset = 0
                f.partial = b""
            self._read(f, out, final=False)
        for path in [p for p in self._files if p not in paths]:  # deleted or rotated away
            f = self._files.pop(path)
            self._read(f, out, final=True)
            f.fh.close()
        return out

    @staticmethod
    def _same_tail(f: _File) -> bool:
        if not f.tail:
            return True
        try:
            return os.pread(f.fh.fileno(), len(f.tail), f.offset - len(f.tail)) == f.tail
        except OSError:
            return False

    def _read(self, f: _File, out: list[TailRecord], *, final: bool) -> None:
        data = f.fh.read(_READ_CHUNK)
        if not data:
            f.idle += 1
            if f.pending and (final or f.idle >= 1):
                self._emit(f, out)
            return
        f.idle = 0
        buf = f.partial + data
        lines = buf.split(b"\n")
        f.partial = lines.pop()
        pos = f.offset
        for raw in lines:
            pos += len(raw) + 1
            line = raw.decode("utf-8", "replace").rstrip("\r")
            self._line(f, line, pos, out)
        f.offset += len(data)
        f.tail = (f.tail + data)[-16:]
        if final:
            if f.partial:
                self._line(f, f.partial.decode("utf-8", "replace"), f.offset, out)
                f.partial = b""
            if f.pending:
                self._emit(f, out)

    def _line(self, f: _File, line: str, end_offset: int, out: list[TailRecord]) -> None:
        continues = bool(f.pending) and (
            bool(_CONTINUATION_RE.match(line))
            or (f.in_traceback and bool(_EXCEPTION_LINE_RE.match(line)))
        )
        if continues:
            f.pending.append(line)
            if line.startswith("Traceback"):
                f.in_traceback = True
            elif not line[:1].isspace():
                f.in_traceback = False
        else:
            if f.pending:
                self._emit(f, out)
            f.pending = [line]
            f.in_traceback = line.startswith("Traceback")
        f.pending_offset = end_offset

    def _emit(self, f: _File, out: list[TailRecord]) -> None:
        message = "\n".join(f.pending)[:_MAX_RECORD]
        f.pending = []
        f.in_traceback = False
        if message.strip():
            out.append(
                TailRecord(
                    ts_ms=int(time.time() * 1000),
                    source=f.path,
                    message=message,
                    level=detect_level(message),
                    key=f.key,
                    offset=f.pending_offset,
                )
            )

    def commit(self, records: list[TailRecord], *, save: bool = True) -> None:
        """Remember the offsets of acknowledged records (and persist them when ``save``)."""
        for r in records:
            if r.offset > self._committed.get(r.key, -1):
                self._committed[r.key] = r.offset
        if save:
            self.save()

    def save(self) -> None:
        """Write the committed offsets to the state file (atomically)."""
        if self._state_file is not None:
            tmp = self._state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._committed, sort_keys=True))
            tmp.replace(self._state_file)

    def close(self) -> None:
        for f in self._files.values():
            f.fh.close()
        self._files.clear()
