"""Options of the embedded store: WAL, batching, parts and blocks, retention, limits.

Every field has a production default; :meth:`StorageOptions.validate` (called from
``__post_init__``) raises :class:`~monitoringserver.errors.ConfigError` naming the field.
Durations are seconds (float) unless the name ends in ``_ms``; sizes are bytes or rows as
named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from monitoringserver.errors import ConfigError

__all__ = ["FsyncMode", "StorageOptions"]

FsyncMode = Literal["always", "interval", "never"]

_DAY_S = 86_400.0
_MEMORY_RE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class StorageOptions:
    """How the embedded metric store writes, compacts and keeps data."""

    #: ``always``: fsync the WAL before every acknowledgement; ``interval``: at most every
    #: ``wal_fsync_interval_s`` (a crash of the machine loses at most that much, a crash of
    #: the process loses nothing); ``never``: leave it to the kernel.
    wal_fsync: FsyncMode = "interval"
    wal_fsync_interval_s: float = 1.0
    #: A WAL segment is closed and a new one started past this size.
    wal_segment_bytes: int = 64 * 1024 * 1024
    #: The batcher commits queued rows to the in-memory head once this many are queued ...
    batch_rows: int = 500_000
    #: ... or once the oldest queued row has waited this long.
    batch_interval_s: float = 1.0
    #: Acknowledged rows not yet in the head; beyond this, appends get OverloadedError.
    max_pending_rows: int = 2_000_000
    #: The head is flushed into sorted Parquet parts this often ...
    flush_interval_s: float = 120.0
    #: ... or as soon as it holds this many rows (24 bytes each, plus 16 for reads).
    head_max_rows: int = 10_000_000
    #: A time partition with this many runs at one level is merged into the next level.
    merge_fan_in: int = 8
    #: Merge of a closed partition into its final block waits this long after its end.
    merge_grace_s: float = 600.0
    #: How often the background merger and retention look for work.
    merge_check_interval_s: float = 30.0
    #: Rows a flush or merge holds in memory at once (bounds compaction memory).
    merge_chunk_rows: int = 1_000_000
    #: Rows per Parquet file (chunks are streamed into files of about this size).
    max_file_rows: int = 8_000_000
    #: Time partition per resolution. A closed raw partition is merged into its final
    #: block and rolled up; closed raw blocks of one ``raw_block_s`` are merged again into
    #: one block (2 h, then a day). Retention drops whole files at these boundaries.
    raw_partition_s: float = 2 * 3600.0
    raw_block_s: float = _DAY_S
    m5_partition_s: float = 7 * _DAY_S
    h1_partition_s: float = 56 * _DAY_S
    #: Retention per resolution. Raw data is dropped only once it is rolled up.
    raw_retention_s: float = 15 * _DAY_S
    m5_retention_s: float = 90 * _DAY_S
    h1_retention_s: float = 5 * 365 * _DAY_S
    #: DuckDB's memory limit (its own syntax, e.g. ``512MB``).
    memory_limit: str = "512MB"
    #: Cardinality limits over active series (those with samples within the raw
    #: retention); 0 means unlimited. The per-source limit applies to appends that name a
    #: source (agent id, remote address); unattributed appends count only in the others.
    max_series: int = 1_000_000
    max_series_per_metric: int = 200_000
    max_series_per_source: int = 100_000
    #: Samples further in the future than this (relative to the server clock) are rejected.
    max_future_skew_s: float = 600.0
    #: Samples older than this are rejected; ``None`` means the raw retention.
    max_sample_age_s: float | None = None
    #: zstd level of Parquet files (1..22).
    zstd_level: int = 3
    #: Decimal digits tried when turning floats into integers (0..15).
    max_decimal_digits: int = 9
    #: Shutdown flushes acknowledged data within this many seconds.
    shutdown_timeout_s: float = 10.0
    #: Bytes of decoded rows read from Parquet files that queries keep in memory (files
    #: are immutable, so entries never go stale; least recently used are dropped first).
    #: 0 disables the cache.
    read_cache_bytes: int = 128 * 1024 * 1024

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` for the first invalid field."""
        if self.wal_fsync not in ("always", "interval", "never"):
            _bad("wal_fsync", self.wal_fsync, "must be always, interval or never")
        positive = (
            "wal_fsync_interval_s",
            "batch_interval_s",
            "flush_interval_s",
            "merge_grace_s",
            "merge_check_interval_s",
            "raw_partition_s",
            "raw_block_s",
            "m5_partition_s",
            "h1_partition_s",
            "raw_retention_s",
            "m5_retention_s",
            "h1_retention_s",
            "max_future_skew_s",
            "shutdown_timeout_s",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                _bad(name, value, "must be a positive number")
        if self.wal_segment_bytes < 4096:
            _bad("wal_segment_bytes", self.wal_segment_bytes, "must be at least 4096")
        if self.batch_rows < 1:
            _bad("batch_rows", self.batch_rows, "must be at least 1")
        if self.max_pending_rows < self.batch_rows:
            _bad("max_pending_rows", self.max_pending_rows, "must be at least batch_rows")
        if self.head_max_rows < self.batch_rows:
            _bad("head_max_rows", self.head_max_rows, "must be at least batch_rows")
        if self.merge_fan_in < 2:
            _bad("merge_fan_in", self.merge_fan_in, "must be at least 2")
        if self.merge_chunk_rows < 1000:
            _bad("merge_chunk_rows", self.merge_chunk_rows, "must be at least 1000")
        if self.max_file_rows < self.merge_chunk_rows:
            _bad("max_file_rows", self.max_file_rows, "must be at least merge_chunk_rows")
        for name, step in (
            ("raw_partition_s", 3600),
            ("raw_block_s", 3600),
            ("m5_partition_s", 3600),
            ("h1_partition_s", 3600),
        ):
            if getattr(self, name) % step:
                _bad(name, getattr(self, name), "must be a whole number of hours")
        if self.raw_block_s % self.raw_partition_s:
            _bad("raw_block_s", self.raw_block_s, "must be a multiple of raw_partition_s")
        for name in ("m5_partition_s", "h1_partition_s"):
            if getattr(self, name) % self.raw_block_s:
                _bad(name, getattr(self, name), "must be a multiple of raw_block_s")
        if not _MEMORY_RE.fullmatch(self.memory_limit.strip()):
            _bad("memory_limit", self.memory_limit, "must look like 512MB or 2GiB")
        for name in ("max_series", "max_series_per_metric", "max_series_per_source"):
            if getattr(self, name) < 0:
                _bad(name, getattr(self, name), "must be 0 (unlimited) or positive")
        if self.max_sample_age_s is not None and self.max_sample_age_s <= 0:
            _bad("max_sample_age_s", self.max_sample_age_s, "must be positive")
        if not 1 <= self.zstd_level <= 22:
            _bad("zstd_level", self.zstd_level, "must be between 1 and 22")
        if self.read_cache_bytes < 0:
            _bad("read_cache_bytes", self.read_cache_bytes, "must be 0 (off) or positive")
        if not 0 <= self.max_decimal_digits <= 15:
            _bad("max_decimal_digits", self.max_decimal_digits, "must be between 0 and 15")

    @property
    def sample_age_limit_s(self) -> float:
        """The oldest accepted sample age, in seconds."""
        return self.max_sample_age_s if self.max_sample_age_s is not None else self.raw_retention_s

    def partition_ms(self, resolution: str) -> int:
        """Partition length in ms for ``raw``, ``5m`` or ``1h``."""
        seconds = {
            "raw": self.raw_partition_s,
            "5m": self.m5_partition_s,
            "1h": self.h1_partition_s,
        }[resolution]
        return int(seconds * 1000)

    @property
    def raw_block_ms(self) -> int:
        return int(self.raw_block_s * 1000)

    def retention_ms(self, resolution: str) -> int:
        seconds = {
            "raw": self.raw_retention_s,
            "5m": self.m5_retention_s,
            "1h": self.h1_retention_s,
        }[resolution]
        return int(seconds * 1000)


def _bad(name: str, value: object, why: str) -> None:
    raise ConfigError(f"cannot accept storage option {name}={value!r}: {why}")
