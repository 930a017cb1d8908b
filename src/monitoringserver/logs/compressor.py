"""zstd compression with a configurable level and running statistics (seed 000
``LogCompressor``): used for archive export (downloads) and the JSON-lines form of
batches. Parquet blocks use DuckDB's own zstd with the same level setting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgspec
import numpy as np
import zstandard

from monitoringserver.errors import BadDataError
from monitoringserver.model.logs import LogBatch

__all__ = ["CompressedData", "CompressionStats", "CompressorConfig", "LogCompressor"]


@dataclass(frozen=True, slots=True)
class CompressorConfig:
    """``level``: zstd level 1..22 (3 is zstd's default); ``chunk_bytes``: read size
    when streaming files."""

    level: int = 3
    chunk_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if not 1 <= self.level <= 22:
            raise BadDataError(f"cannot set compression level {self.level}: must be 1..22")


@dataclass(frozen=True, slots=True)
class CompressedData:
    """A zstd frame of JSON lines, one line per log record."""

    data: bytes
    lines: int
    raw_bytes: int
    level: int


@dataclass(frozen=True, slots=True)
class CompressionStats:
    """Totals since start. ``ratio`` = bytes_in / bytes_out (0 when nothing was done)."""

    calls: int
    bytes_in: int
    bytes_out: int
    ratio: float
    seconds: float
    level: int


class _Line(msgspec.Struct, array_like=True):
    ts: int
    server_id: str
    level: str
    logger: str
    source: str
    message: str
    attrs: dict[str, str]


class LogCompressor:
    """Thread-safe: statistics are guarded by ``_lock``; each call uses its own context."""

    def __init__(self, config: CompressorConfig | None = None) -> None:
        self._config = config or CompressorConfig()
        self._lock = threading.Lock()
        self._calls = 0
        self._in = 0
        self._out = 0
        self._seconds = 0.0

    @property
    def level(self) -> int:
        return self._config.level

    def set_compression_level(self, level: int) -> None:
        self._config = CompressorConfig(level=level, chunk_bytes=self._config.chunk_bytes)

    def _account(self, n_in: int, n_out: int, seconds: float) -> None:
        with self._lock:
            self._calls += 1
            self._in += n_in
            self._out += n_out
            self._seconds += seconds

    def get_stats(self) -> CompressionStats:
        with self._lock:
            ratio = self._in / self._out if self._out else 0.0
            return CompressionStats(
                self._calls, self._in, self._out, ratio, self._seconds, self._config.level
            )

    def compress_bytes(self, data: bytes) -> bytes:
        t0 = time.perf_counter()
        out = zstandard.ZstdCompressor(level=self._config.level).compress(data)
        self._account(len(data), len(out), time.perf_counter() - t0)
        return out

    @staticmethod
    def decompress_bytes(data: bytes, *, max_output: int = 1 << 30) -> bytes:
        try:
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=max_output)
        except zstandard.ZstdError as exc:
            raise BadDataError(f"cannot decompress data: {exc}") from exc

    def compress(self, batch: LogBatch) -> CompressedData:
        """Encode ``batch`` as JSON lines (``[ts, server_id, level, logger, source,
        message, attrs]``) and compress them in one frame."""
        enc = msgspec.json.Encoder()
        lines = [
            enc.encode(_Line(t, *cols))
            for t, *cols in zip(
                batch.ts_ms.tolist(),
                batch.server_id,
                batch.level,
                batch.logger,
                batch.source,
                batch.message,
                batch.attrs,
                strict=True,
            )
        ]
        raw = b"\n".join(lines)
        return CompressedData(self.compress_bytes(raw), len(batch), len(raw), self._config.level)

    def decompress(self, compressed: CompressedData) -> LogBatch:
        raw = self.decompress_bytes(compressed.data)
        if not raw:
            return LogBatch.empty()
        dec = msgspec.json.Decoder(_Line)
        try:
            rows = [dec.decode(line) for line in raw.split(b"\n")]
        except msgspec.DecodeError as exc:
            raise BadDataError(f"cannot decode compressed logs: {exc}") from exc
        return LogBatch(
            ts_ms=np.fromiter((r.ts for r in rows), dtype=np.int64, count=len(rows)),
            server_id=[r.server_id for r in rows],
            level=[r.level for r in rows],
            logger=[r.logger for r in rows],
            source=[r.source for r in rows],
            message=[r.message for r in rows],
            attrs=[r.attrs for r in rows],
        )

    def stream_file(self, path: Path) -> Iterator[bytes]:
        """Compressed chunks of a file (for downloads); counted in the statistics."""
        t0 = time.perf_counter()
        n_in = n_out = 0
        cctx = zstandard.ZstdCompressor(level=self._config.level)
        with path.open("rb") as fh:
            reader: BinaryIO = fh
            for chunk in cctx.read_to_iter(reader, read_size=self._config.chunk_bytes):
                n_out += len(chunk)
                yield chunk
            n_in = fh.tell()
        self._account(n_in, n_out, time.perf_counter() - t0)
