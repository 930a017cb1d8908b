"""A log store on a temporary DuckDB file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from monitoringserver.logs.query import LogQueryEngine
from monitoringserver.logs.store import LogStore, LogStoreOptions
from monitoringserver.storage.db import Database


class FakeClock:
    def __init__(self, t: float = 1_767_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "db.duckdb", threads=1)
    yield database
    database.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db: Database, tmp_path: Path, clock: FakeClock) -> LogStore:
    return LogStore(db, tmp_path / "logs", LogStoreOptions(retention_s=None), clock=clock)


@pytest.fixture
def engine(store: LogStore) -> LogQueryEngine:
    return LogQueryEngine(store, counters=lambda: (7, {"too_old": 1}, {"truncated": 2}))
