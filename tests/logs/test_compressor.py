"""zstd compressor: round trip, levels, statistics, file streaming."""

from __future__ import annotations

from pathlib import Path

import pytest
import zstandard

from monitoringserver.errors import BadDataError
from monitoringserver.logs.compressor import CompressedData, CompressorConfig, LogCompressor
from monitoringserver.model.logs import LogBatch, LogRecord


def _batch(n: int) -> LogBatch:
    return LogBatch.from_records(
        LogRecord(i, f"line {i} of the log", "h", "info", "l", "s", {"k": str(i)}) for i in range(n)
    )


def test_round_trip_and_stats() -> None:
    comp = LogCompressor(CompressorConfig(level=9))
    batch = _batch(500)
    packed = comp.compress(batch)
    assert (packed.lines, packed.level) == (500, 9)
    assert len(packed.data) < packed.raw_bytes
    back = comp.decompress(packed)
    assert list(back.records()) == list(batch.records())
    stats = comp.get_stats()
    assert (stats.calls, stats.bytes_in, stats.bytes_out) == (1, packed.raw_bytes, len(packed.data))
    assert stats.ratio == pytest.approx(packed.raw_bytes / len(packed.data))
    assert stats.seconds >= 0
    comp.set_compression_level(1)
    assert comp.level == 1
    assert comp.get_stats().level == 1
    assert len(comp.decompress(comp.compress(LogBatch.empty()))) == 0


@pytest.mark.parametrize("level", [0, 23])
def test_bad_level(level: int) -> None:
    with pytest.raises(BadDataError):
        CompressorConfig(level=level)


def test_corrupt_input() -> None:
    comp = LogCompressor()
    with pytest.raises(BadDataError):
        comp.decompress_bytes(b"not zstd")
    bad = CompressedData(comp.compress_bytes(b"[1,2]"), 1, 5, 3)
    with pytest.raises(BadDataError):
        comp.decompress(bad)


def test_stream_file(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    data = b"hello log archive\n" * 10_000
    path.write_bytes(data)
    comp = LogCompressor(CompressorConfig(chunk_bytes=4096))
    out = b"".join(comp.stream_file(path))
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == data
    assert comp.get_stats().bytes_in == len(data)
