from __future__ import annotations

import pytest

from monitoringserver.errors import ConfigError
from monitoringserver.storage.options import StorageOptions


def test_defaults_are_valid_and_documented_values() -> None:
    opt = StorageOptions()
    assert opt.batch_rows >= 100_000
    assert opt.raw_retention_s == 15 * 86400
    assert opt.m5_retention_s == 90 * 86400
    assert opt.h1_retention_s == 5 * 365 * 86400
    assert opt.sample_age_limit_s == opt.raw_retention_s
    assert opt.partition_ms("raw") == 7_200_000
    assert opt.raw_block_ms == 86_400_000
    assert opt.retention_ms("5m") == 90 * 86_400_000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("wal_fsync", "sometimes"),
        ("wal_fsync_interval_s", 0),
        ("batch_interval_s", -1),
        ("wal_segment_bytes", 10),
        ("batch_rows", 0),
        ("max_pending_rows", 5),
        ("merge_fan_in", 1),
        ("max_file_rows", 10),
        ("merge_chunk_rows", 10),
        ("raw_partition_s", 1800.0),
        ("m5_partition_s", 3600.0 * 5),
        ("raw_block_s", 3600.0 * 3),
        ("memory_limit", "lots"),
        ("max_series", -1),
        ("max_sample_age_s", 0),
        ("zstd_level", 0),
        ("max_decimal_digits", 16),
        ("read_cache_bytes", -1),
        ("shutdown_timeout_s", 0),
    ],
)
def test_invalid_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        StorageOptions(**{field: value})  # type: ignore[arg-type]


def test_age_limit_override() -> None:
    assert StorageOptions(max_sample_age_s=60).sample_age_limit_s == 60
