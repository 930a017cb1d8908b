from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from monitoringserver.errors import StorageError
from monitoringserver.pipeline.wal import Wal
from monitoringserver.storage.options import FsyncMode


def _records(wal: Wal, start: int = 0) -> list[bytes]:
    return [p for _, p in wal.replay(start)]


@pytest.mark.parametrize("mode", ["always", "interval", "never"])
def test_append_and_replay(tmp_path: Path, mode: str) -> None:
    wal = Wal(tmp_path, fsync=mode)  # type: ignore[arg-type]
    positions = [wal.append(f"r{i}".encode()) for i in range(5)]
    assert positions == sorted(positions)
    assert _records(wal) == [f"r{i}".encode() for i in range(5)]
    assert _records(wal, positions[2]) == [b"r3", b"r4"]
    wal.sync()
    wal.close()
    wal.close()
    reopened = Wal(tmp_path)
    assert _records(reopened) == [f"r{i}".encode() for i in range(5)]
    assert reopened.end == positions[-1]
    reopened.close()


@pytest.mark.parametrize("cut", [1, 3, 8, 9, 17])
def test_torn_tail_is_cut_on_open(tmp_path: Path, cut: int) -> None:
    wal = Wal(tmp_path)
    wal.append(b"a" * 10)
    end = wal.append(b"b" * 10)
    wal.close()
    seg = next(tmp_path.glob("*.wal"))
    with seg.open("r+b") as f:
        f.truncate(seg.stat().st_size - cut)
    wal = Wal(tmp_path)
    assert _records(wal) == [b"a" * 10]
    assert wal.end < end
    # The log keeps working after the cut.
    wal.append(b"c")
    assert _records(wal) == [b"a" * 10, b"c"]
    wal.close()


def test_garbage_tail_is_cut(tmp_path: Path) -> None:
    wal = Wal(tmp_path)
    wal.append(b"good")
    wal.close()
    seg = next(tmp_path.glob("*.wal"))
    with seg.open("ab") as f:
        f.write(b"\xff\xff\xff\x7f garbage")  # absurd length
    wal = Wal(tmp_path)
    assert _records(wal) == [b"good"]
    wal.close()


def test_segments_rotate_and_truncate(tmp_path: Path) -> None:
    wal = Wal(tmp_path, segment_bytes=4096)
    positions = [wal.append(os.urandom(1000)) for _ in range(20)]
    segments = sorted(tmp_path.glob("*.wal"))
    assert len(segments) > 3
    before = wal.size_bytes()
    removed = wal.truncate_before(positions[9])
    assert removed >= 1
    assert wal.size_bytes() < before
    left = _records(wal)
    assert len(left) >= 10  # nothing past the checkpoint was lost
    assert len(_records(wal, positions[9])) == 10
    wal.truncate_before(positions[-1])
    assert _records(wal, positions[-1]) == []
    wal.close()


def test_truncate_after_close_keeps_records_for_replay(tmp_path: Path) -> None:
    # The batcher may truncate after a commit while shutdown has closed the WAL already.
    wal = Wal(tmp_path, segment_bytes=4096)
    positions = [wal.append(os.urandom(1000)) for _ in range(3)]
    wal.close()
    assert wal.truncate_before(positions[-1]) == 0
    reopened = Wal(tmp_path, segment_bytes=4096)
    assert len(_records(reopened)) == 3
    assert _records(reopened, positions[-1]) == []
    reopened.close()


def test_crc_mismatch_in_old_segment_is_corruption(tmp_path: Path) -> None:
    wal = Wal(tmp_path, segment_bytes=4096)
    for _ in range(10):
        wal.append(b"x" * 1000)
    wal.close()
    first = sorted(tmp_path.glob("*.wal"))[0]
    data = bytearray(first.read_bytes())
    data[20] ^= 0xFF
    first.write_bytes(bytes(data))
    wal = Wal(tmp_path, segment_bytes=4096)
    with pytest.raises(StorageError, match="corrupt"):
        list(wal.replay(0))
    wal.close()


def test_closed_log_refuses_appends(tmp_path: Path) -> None:
    wal = Wal(tmp_path)
    wal.close()
    with pytest.raises(StorageError, match="closed"):
        wal.append(b"x")


def test_interval_fsync_uses_clock(tmp_path: Path) -> None:
    now = [0.0]
    wal = Wal(tmp_path, fsync="interval", fsync_interval_s=5, clock=lambda: now[0])
    wal.append(b"a")
    now[0] = 10.0
    wal.append(b"b")  # past the interval: synced inline
    assert _records(wal) == [b"a", b"b"]
    wal.close()


@pytest.mark.parametrize(
    ("mode", "now", "held", "expect_written"),
    [
        ("never", 0.0, False, True),
        ("interval", 1.0, False, True),  # no sync due yet
        ("interval", 10.0, False, False),  # a sync is due: must go through append()
        ("always", 0.0, False, False),  # every record is synced: never inline
        ("never", 0.0, True, False),  # lock held by another thread: never wait
    ],
)
def test_try_append_writes_only_when_it_cannot_block(
    tmp_path: Path, mode: FsyncMode, now: float, held: bool, expect_written: bool
) -> None:
    clock = [0.0]
    wal = Wal(tmp_path, fsync=mode, fsync_interval_s=5, clock=lambda: clock[0])
    clock[0] = now
    if held:
        wal._lock.acquire()
    try:
        lsn = wal.try_append(b"abc")
    finally:
        if held:
            wal._lock.release()
    if expect_written:
        assert lsn == wal.end == 8 + 3
        assert _records(wal) == [b"abc"]
    else:
        assert lsn is None
        assert wal.end == 0
    wal.close()


def test_try_append_leaves_rotation_to_append(tmp_path: Path) -> None:
    wal = Wal(tmp_path, segment_bytes=4096, fsync="never")
    assert wal.try_append(b"x" * 100) == 108
    assert wal.try_append(b"y" * 4000) is None  # would fill the segment: rotation needed
    wal.append(b"y" * 4000)
    assert wal.try_append(b"z") is not None
    assert _records(wal) == [b"x" * 100, b"y" * 4000, b"z"]
    wal.close()


@pytest.mark.parametrize("size", [0, 1, 5000, 70_000])
def test_frames_carry_zlib_crc32_so_older_logs_replay(tmp_path: Path, size: int) -> None:
    payload = os.urandom(size)
    wal = Wal(tmp_path, fsync="never")
    wal.append(payload)
    assert wal.try_append(payload[::-1]) is not None
    wal.close()
    data = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("*.wal")))
    first = struct.pack("<II", size, zlib.crc32(payload)) + payload
    second = struct.pack("<II", size, zlib.crc32(payload[::-1])) + payload[::-1]
    assert data == first + second
    reopened = Wal(tmp_path)
    assert _records(reopened) == [payload, payload[::-1]]
    reopened.close()


def _short_writev(limit: int) -> object:
    """An ``os.writev`` that writes at most ``limit`` bytes (as a signal or a nearly full
    disk can make it)."""
    real_write = os.write

    def writev(fd: int, buffers: list[bytes]) -> int:
        return real_write(fd, b"".join(buffers)[:limit])

    return writev


@pytest.mark.parametrize("limit", [0, 3, 8, 9, 5000])
@pytest.mark.parametrize("inline", [False, True])
def test_a_short_write_is_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int, inline: bool
) -> None:
    wal = Wal(tmp_path, fsync="never")
    wal.append(b"first")
    monkeypatch.setattr(os, "writev", _short_writev(limit))
    payload = os.urandom(6000)
    lsn = wal.try_append(payload) if inline else wal.append(payload)
    monkeypatch.undo()
    assert lsn == wal.end == 2 * 8 + 5 + 6000
    wal.append(b"last")
    wal.close()
    reopened = Wal(tmp_path)
    assert _records(reopened) == [b"first", payload, b"last"]
    reopened.close()


def _torn_writev(error: OSError) -> Callable[[int, list[bytes]], int]:
    """A stand-in for ``os.writev`` that writes 11 bytes of the frame, then fails."""
    real_write = os.write

    def failing(fd: int, buffers: list[bytes]) -> int:
        real_write(fd, b"".join(buffers)[:11])
        raise error

    return failing


@pytest.mark.parametrize("inline", [False, True])
def test_a_failed_write_leaves_no_torn_frame_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    """A write that fails half way (disk full) is cut back: the records acknowledged
    after it replay, none is lost behind a torn frame."""
    wal = Wal(tmp_path, fsync="never")
    wal.append(b"first")
    monkeypatch.setattr(os, "writev", _torn_writev(OSError(28, "No space left on device")))
    with pytest.raises(StorageError, match=r"cannot append to write-ahead log: .*No space"):
        wal.try_append(b"x" * 100) if inline else wal.append(b"x" * 100)
    monkeypatch.undo()
    assert wal.end == 8 + 5
    wal.append(b"after")
    wal.close()
    reopened = Wal(tmp_path)
    assert _records(reopened) == [b"first", b"after"]
    reopened.close()


def test_a_log_that_cannot_cut_back_takes_no_more_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = Wal(tmp_path, fsync="never")
    wal.append(b"first")

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "writev", _torn_writev(OSError(5, "Input/output error")))
    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with pytest.raises(StorageError, match="Input/output error"):
        wal.append(b"x" * 100)
    monkeypatch.undo()
    with pytest.raises(StorageError, match="closed"):
        wal.append(b"later")
    with pytest.raises(StorageError, match="closed"):
        wal.try_append(b"later")
    wal.close()
    reopened = Wal(tmp_path)
    assert _records(reopened) == [b"first"]
    reopened.close()
