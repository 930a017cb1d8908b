"""The small interfaces everything above ``logs`` depends on.

Ingest (HTTP JSON, Loki push, syslog, the agent's gRPC ``SendLogs``/``StreamLogs``)
calls :class:`LogAppender`; the HTTP and Loki query APIs call :class:`LogQuerier`.
The embedded store implements both; nothing above this layer imports the DuckDB code.

Threading: :meth:`LogAppender.append` is a coroutine that returns after the batch is
durable in the WAL (the acknowledgement). :class:`LogQuerier` methods are synchronous
and thread-safe; callers on the event loop run them with ``asyncio.to_thread``.
All timestamps are int milliseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from monitoringserver.errors import BadDataError
from monitoringserver.model.delivery import DedupKey
from monitoringserver.model.logs import LogBatch
from monitoringserver.model.matchers import Matcher
from monitoringserver.model.samples import SampleBatch

__all__ = [
    "COLUMN_LABELS",
    "ArchiveFilter",
    "ArchiveInfo",
    "DedupKey",
    "LineFilter",
    "LineOp",
    "LogAppendResult",
    "LogAppender",
    "LogPage",
    "LogQuerier",
    "LogQuery",
    "LogStoreStats",
    "MetricsSink",
    "NumericFilter",
    "RotationResult",
    "SeriesCounts",
]

#: Label names stored as columns; any other label name refers to a key of ``attrs``.
COLUMN_LABELS: tuple[str, ...] = ("server_id", "level", "logger", "source")

#: Where log-derived counters go (``log_lines_total``...). ``server.py`` connects this
#: to the metric store's ``MetricAppender.append``; ``logs`` never imports ``metrics``.
MetricsSink = Callable[[SampleBatch], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class LogAppendResult:
    """What happened to a batch. ``rejected`` counts lines by reason (``too_old``...);
    ``repaired`` counts lines kept with a fix (``invalid_utf8``, ``truncated``)."""

    accepted: int
    rejected: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)
    duplicate: bool = False


class LineOp(enum.Enum):
    """Line filters of LogQL: substring (``|=``, ``!=``) and RE2 regex (``|~``, ``!~``)."""

    CONTAINS = "|="
    NOT_CONTAINS = "!="
    REGEX = "|~"
    NOT_REGEX = "!~"


@dataclass(frozen=True, slots=True)
class LineFilter:
    op: LineOp
    value: str


@dataclass(frozen=True, slots=True)
class NumericFilter:
    """``label <op> value`` on a label read as a number (``op``: == != > >= < <=);
    lines whose label is not a number do not match."""

    name: str
    op: str
    value: float

    def __post_init__(self) -> None:
        if self.op not in ("==", "!=", ">", ">=", "<", "<="):
            raise BadDataError(f"cannot use label filter operator {self.op!r}")


@dataclass(frozen=True, slots=True)
class LogQuery:
    """A log search. Every condition must hold.

    ``matchers`` apply to the column labels (:data:`COLUMN_LABELS`) and to ``attrs``
    keys, with Prometheus semantics (a missing key is the empty string; regexes are
    fully anchored). ``filters`` apply to the message. ``start_ms <= ts <= end_ms``.
    ``direction`` is ``"backward"`` (newest first, the default) or ``"forward"``.
    ``cursor`` is the opaque ``next_cursor`` of a previous page of the same query.
    ``parsers`` (``"json"``, ``"logfmt"``; LogQL ``| json``, ``| logfmt``) let label
    names that are neither columns nor attrs keys be read from the message itself;
    ``numeric`` filters compare such labels as numbers.
    """

    start_ms: int | None = None
    end_ms: int | None = None
    matchers: tuple[Matcher, ...] = ()
    filters: tuple[LineFilter, ...] = ()
    limit: int = 100
    direction: str = "backward"
    cursor: str | None = None
    parsers: tuple[str, ...] = ()
    numeric: tuple[NumericFilter, ...] = ()


@dataclass(frozen=True, slots=True)
class LogPage:
    """One page of results in the requested order; ``next_cursor`` is None at the end."""

    batch: LogBatch
    next_cursor: str | None
    archives_scanned: int = 0
    archives_pruned: int = 0


@dataclass(frozen=True, slots=True)
class SeriesCounts:
    """Bucketed line counts and message bytes of one group (``labels`` = the ``by`` labels).

    ``ts_ms[i]`` is the bucket start; buckets are ``step_ms`` wide and aligned to the
    query start."""

    labels: dict[str, str]
    ts_ms: list[int]
    lines: list[int]
    bytes: list[int]


@dataclass(frozen=True, slots=True)
class ArchiveInfo:
    """One Parquet block of logs (seed 000 ``LogMetadata``). Sizes in bytes."""

    id: str
    min_ts_ms: int
    max_ts_ms: int
    hosts: tuple[str, ...]
    lines: int
    raw_bytes: int
    stored_bytes: int
    created_ms: int
    #: Size of the archive's token bloom filter (kept in the manifest, not in the file).
    index_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ArchiveFilter:
    """Archives overlapping ``[start_ms, end_ms]`` and holding ``server_id`` (if set)."""

    start_ms: int | None = None
    end_ms: int | None = None
    server_id: str | None = None


@dataclass(frozen=True, slots=True)
class RotationResult:
    """Archives removed by a rotation (by age, then by total size)."""

    deleted: tuple[str, ...]
    freed_bytes: int


@dataclass(frozen=True, slots=True)
class LogStoreStats:
    head_lines: int
    archives: int
    archived_lines: int
    raw_bytes: int
    stored_bytes: int
    wal_bytes: int
    oldest_ms: int | None
    newest_ms: int | None
    rejected: dict[str, int]
    repaired: dict[str, int]
    index_bytes: int = 0


class LogAppender(Protocol):
    async def append(
        self, batch: LogBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> LogAppendResult:
        """Make ``batch`` durable and queue it for the store.

        ``source`` names the sender (agent id, client address) for rate limits and
        accounting. A batch whose ``dedup`` key was applied before returns
        ``duplicate=True`` and is not stored again. Raises ``OverloadedError`` when the
        write queue is full or the source is over its rate limit, ``BadDataError`` for
        invalid input. Lines outside the accepted time window are counted in
        ``rejected``; the rest of the batch is kept.
        """
        ...


@runtime_checkable
class LogQuerier(Protocol):
    def query(self, query: LogQuery) -> LogPage:
        """Matching lines from the head and the archives, in ``query.direction`` order."""
        ...

    def count_series(
        self, query: LogQuery, step_ms: int, by: Sequence[str] | None
    ) -> list[SeriesCounts]:
        """Line counts and bytes per ``step_ms`` bucket of ``[start_ms, end_ms]``,
        grouped by the labels ``by`` (None = per distinct label set of the columns)."""
        ...

    def label_names(self, start_ms: int | None, end_ms: int | None) -> list[str]:
        """Sorted label names: the column labels plus every ``attrs`` key seen."""
        ...

    def label_values(self, name: str, start_ms: int | None, end_ms: int | None) -> list[str]:
        """Sorted distinct non-empty values of ``name``."""
        ...

    def series(self, query: LogQuery) -> list[dict[str, str]]:
        """Distinct column-label sets (non-empty values only) of the matching lines."""
        ...

    def archives(self, flt: ArchiveFilter | None = None) -> list[ArchiveInfo]:
        """Archives, oldest first."""
        ...

    def stats(self) -> LogStoreStats: ...
