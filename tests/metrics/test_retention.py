from __future__ import annotations

import pytest

from monitoringserver.metrics.manifest import BLOCK_LEVEL, FINAL_LEVEL, FileEntry
from monitoringserver.metrics.retention import expired_files
from monitoringserver.storage.options import StorageOptions

H = 3_600_000
DAY = 24 * H
OPT = StorageOptions(raw_retention_s=86400.0, m5_retention_s=2 * 86400.0)


def entry(
    fid: int, res: str, start: int, level: int = FINAL_LEVEL, rolled: bool = True
) -> FileEntry:
    return FileEntry(
        fid, f"{fid}.parquet", res, level, 1, start, 0, 9, start, start + 1, 1, 1, rolled
    )


@pytest.mark.parametrize(
    ("files", "now", "expected"),
    [
        ([entry(1, "raw", 0)], DAY + 2 * H, [1]),  # partition ended 2 h before the horizon
        ([entry(1, "raw", 0)], DAY + H, []),  # ends after the horizon
        ([entry(1, "raw", 0), entry(2, "raw", 0, level=0, rolled=False)], 3 * DAY, []),
        ([entry(1, "raw", 0, level=BLOCK_LEVEL)], DAY + 2 * H, []),  # a day block spans 24 h
        ([entry(1, "raw", 0, level=BLOCK_LEVEL)], 2 * DAY, [1]),
        (
            [entry(1, "raw", 0, level=BLOCK_LEVEL), entry(2, "raw", 4 * H, level=0, rolled=False)],
            3 * DAY,
            [],  # late, un-rolled data inside the day keeps the block
        ),
        ([entry(1, "5m", 0)], 8 * DAY, []),  # 7-day rollup partitions
        ([entry(1, "5m", 0)], 9 * DAY, [1]),
        ([entry(1, "1h", 0)], 400 * DAY, []),
    ],
)
def test_expired_files(files: list[FileEntry], now: int, expected: list[int]) -> None:
    assert [f.id for f in expired_files(files, OPT, now)] == expected
