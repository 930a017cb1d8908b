from __future__ import annotations

import sys

import duckdb

from monitoringserver.storage import memory
from monitoringserver.storage.memory import release_free_memory


def test_release_free_memory_runs() -> None:
    assert release_free_memory() is sys.platform.startswith("linux")


def test_duckdb_allocator_is_purged_when_duckdb_has_jemalloc() -> None:
    with duckdb.connect() as con:
        con.execute("SELECT sum(range) FROM range(100000)").fetchall()
    purge = memory._duckdb_purge()
    if sys.platform.startswith("linux"):  # Linux wheels link jemalloc into DuckDB
        assert purge is not None
        assert purge() == 0
        assert memory._duckdb_purge() is purge  # looked up once
    assert release_free_memory() is sys.platform.startswith("linux")
