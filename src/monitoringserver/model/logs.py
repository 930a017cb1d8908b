"""Columnar log batches: what every log ingest format decodes into.

A :class:`LogBatch` holds one column per field (no per-line objects on the hot
path). Line ``i`` has the timestamp ``ts_ms[i]`` (int milliseconds since the Unix
epoch, UTC), came from host ``server_id[i]``, has the normalised ``level[i]`` (one
of :data:`LEVELS`), the ``logger[i]`` name (may be empty), the ``source[i]`` it was
read from (file path, journald unit, ``"http"``, ``"loki"``, ``"syslog"``...), the
text ``message[i]`` and extra string fields ``attrs[i]`` (trace ids, parsed fields,
Loki stream labels).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError

__all__ = ["LEVELS", "LogBatch", "LogRecord", "normalize_level"]

#: Canonical level names, least to most severe, plus ``unknown``.
LEVELS: tuple[str, ...] = ("trace", "debug", "info", "warning", "error", "critical", "unknown")

_LEVEL_ALIASES: dict[str, str] = {
    "trace": "trace",
    "trc": "trace",
    "finest": "trace",
    "finer": "trace",
    "debug": "debug",
    "dbg": "debug",
    "fine": "debug",
    "config": "debug",
    "info": "info",
    "inf": "info",
    "information": "info",
    "informational": "info",
    "notice": "info",
    "normal": "info",
    "warn": "warning",
    "warning": "warning",
    "wrn": "warning",
    "err": "error",
    "error": "error",
    "eror": "error",
    "severe": "error",
    "crit": "critical",
    "critical": "critical",
    "fatal": "critical",
    "alert": "critical",
    "emerg": "critical",
    "emergency": "critical",
    "panic": "critical",
    "dpanic": "critical",
}


def normalize_level(value: str | None) -> str:
    """Map a level spelling (``WARN``, ``err``, ``Fatal``, ``E``...) to one of :data:`LEVELS`."""
    if not value:
        return "unknown"
    key = value.strip().lower()
    hit = _LEVEL_ALIASES.get(key)
    if hit is not None:
        return hit
    if len(key) == 1:
        return {"t": "trace", "d": "debug", "i": "info", "w": "warning", "e": "error"}.get(
            key, "unknown"
        )
    return "unknown"


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log line; for parsers, small edge formats and tests. Hot paths use LogBatch."""

    ts_ms: int
    message: str
    server_id: str = ""
    level: str = "unknown"
    logger: str = ""
    source: str = ""
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LogBatch:
    """A columnar batch of log lines. All columns have equal length; the batch owns them."""

    ts_ms: NDArray[np.int64]
    server_id: list[str]
    level: list[str]
    logger: list[str]
    source: list[str]
    message: list[str]
    attrs: list[dict[str, str]]

    def __post_init__(self) -> None:
        n = len(self.ts_ms)
        lengths = {
            len(self.server_id),
            len(self.level),
            len(self.logger),
            len(self.source),
            len(self.message),
            len(self.attrs),
        }
        if lengths != {n}:
            raise BadDataError("cannot build log batch: columns differ in length")

    def __len__(self) -> int:
        return len(self.ts_ms)

    @classmethod
    def empty(cls) -> LogBatch:
        return cls(np.empty(0, dtype=np.int64), [], [], [], [], [], [])

    @classmethod
    def from_records(cls, records: Iterable[LogRecord]) -> LogBatch:
        recs = list(records)
        return cls(
            ts_ms=np.fromiter((r.ts_ms for r in recs), dtype=np.int64, count=len(recs)),
            server_id=[r.server_id for r in recs],
            level=[r.level for r in recs],
            logger=[r.logger for r in recs],
            source=[r.source for r in recs],
            message=[r.message for r in recs],
            attrs=[r.attrs for r in recs],
        )

    def records(self) -> Iterator[LogRecord]:
        """Iterate the lines as :class:`LogRecord`; slow, for tests and small batches."""
        for i, t in enumerate(self.ts_ms.tolist()):
            yield LogRecord(
                ts_ms=t,
                message=self.message[i],
                server_id=self.server_id[i],
                level=self.level[i],
                logger=self.logger[i],
                source=self.source[i],
                attrs=self.attrs[i],
            )

    def take(self, indices: Sequence[int]) -> LogBatch:
        """The lines at ``indices``, in that order."""
        idx = list(indices)
        return LogBatch(
            ts_ms=self.ts_ms[np.asarray(idx, dtype=np.int64)]
            if idx
            else np.empty(0, dtype=np.int64),
            server_id=[self.server_id[i] for i in idx],
            level=[self.level[i] for i in idx],
            logger=[self.logger[i] for i in idx],
            source=[self.source[i] for i in idx],
            message=[self.message[i] for i in idx],
            attrs=[self.attrs[i] for i in idx],
        )

    def raw_bytes(self) -> int:
        """UTF-8 size of the messages: the "raw bytes" figure of archives and stats."""
        return sum(len(m.encode("utf-8", "surrogatepass")) for m in self.message)

    @staticmethod
    def concat(batches: Sequence[LogBatch]) -> LogBatch:
        """The batches one after the other. Columns are joined with ``list +=`` (a block
        copy of references per batch): the log writer runs this on the event loop for
        every commit, over about 100 k lines."""
        if not batches:
            return LogBatch.empty()
        if len(batches) == 1:
            return batches[0]
        server_id: list[str] = []
        level: list[str] = []
        logger: list[str] = []
        source: list[str] = []
        message: list[str] = []
        attrs: list[dict[str, str]] = []
        for b in batches:
            server_id += b.server_id
            level += b.level
            logger += b.logger
            source += b.source
            message += b.message
            attrs += b.attrs
        return LogBatch(
            np.concatenate([b.ts_ms for b in batches]),
            server_id,
            level,
            logger,
            source,
            message,
            attrs,
        )
