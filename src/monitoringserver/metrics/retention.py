"""Which files retention drops: whole files whose time span ended before the horizon.

A raw file is kept while any partition it spans still has data that is not rolled up
(the merger rolls it up first), so retention never loses data the rollups lack.
"""

from __future__ import annotations

from collections.abc import Iterable

from monitoringserver.metrics.manifest import BLOCK_LEVEL, FileEntry
from monitoringserver.storage.options import StorageOptions

__all__ = ["expired_files"]


def expired_files(
    files: Iterable[FileEntry], options: StorageOptions, now_ms: int
) -> list[FileEntry]:
    """Files past their resolution's retention at ``now_ms`` (ms since the epoch)."""
    files = list(files)
    doomed: list[FileEntry] = []
    for res in ("raw", "5m", "1h"):
        pms = options.partition_ms(res)
        horizon = now_ms - options.retention_ms(res)
        mine = [f for f in files if f.resolution == res]
        unrolled = {f.partition_start for f in mine if not f.rolled_up}
        for f in mine:
            span = options.raw_block_ms if f.level == BLOCK_LEVEL else pms
            if f.partition_start + span > horizon:
                continue
            if res == "raw" and any(
                f.partition_start <= u < f.partition_start + span for u in unrolled
            ):
                continue
            doomed.append(f)
    return doomed
