"""The disk queue: FIFO, ack, restart, torn tail, rotation, bound with counted drops."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoringserver.errors import BadDataError
from monitoringserver.pipeline.disk_queue import DiskQueue


def drain(q: DiskQueue) -> list[bytes]:
    out = []
    while (rec := q.peek()) is not None:
        out.append(rec)
        q.ack()
    return out


def test_fifo_ack_and_restart(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, segment_bytes=1024, max_bytes=1 << 20, fsync=True)
    assert q.peek() is None
    for i in range(50):
        q.put(f"record-{i}".encode() * 10)
    assert len(list(tmp_path.glob("*.seg"))) > 1
    assert q.peek() == b"record-0" * 10
    assert q.peek() == b"record-0" * 10  # peek does not consume
    q.ack()
    q.close()
    q = DiskQueue(tmp_path, segment_bytes=1024, max_bytes=1 << 20)
    got = drain(q)
    assert got == [f"record-{i}".encode() * 10 for i in range(1, 50)]
    assert q.pending_bytes() == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1  # consumed segments removed
    q.put(b"after")
    q.close()
    q = DiskQueue(tmp_path, segment_bytes=1024, max_bytes=1 << 20)
    assert drain(q) == [b"after"]
    q.close()


def test_torn_tail_is_cut(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, segment_bytes=4096)
    q.put(b"one")
    q.put(b"two")
    q.close()
    (seg,) = tmp_path.glob("*.seg")
    seg.write_bytes(seg.read_bytes() + b"\x10\x00\x00\x00garbage")
    q = DiskQueue(tmp_path, segment_bytes=4096)
    assert drain(q) == [b"one", b"two"]
    q.put(b"three")
    assert drain(q) == [b"three"]
    q.close()


def test_corrupt_record_in_old_segment_skips_rest(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, segment_bytes=1024)
    for i in range(30):
        q.put(bytes([i]) * 100)
    q.close()
    first = sorted(tmp_path.glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[120] ^= 0xFF  # corrupt the second record's payload
    first.write_bytes(bytes(data))
    q = DiskQueue(tmp_path, segment_bytes=1024)
    got = drain(q)
    assert got[0] == bytes([0]) * 100
    assert bytes([1]) * 100 not in got
    assert got[-1] == bytes([29]) * 100
    assert q.dropped_records == 1
    q.close()


def test_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, segment_bytes=1024, max_bytes=4096)
    for i in range(100):
        q.put(bytes([i]) * 100)
    assert q.pending_bytes() <= 4096 + 1024
    assert q.dropped_records > 0
    got = drain(q)
    assert got[-1] == bytes([99]) * 100
    assert len(got) + q.dropped_records == 100
    q.close()


def test_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(BadDataError):
        DiskQueue(tmp_path, segment_bytes=10)
    with pytest.raises(BadDataError):
        DiskQueue(tmp_path, segment_bytes=4096, max_bytes=1024)
