"""Compaction unites the key sets of its sources instead of reading their lines again,
and needle searches over merged, re-read and old-style filters never miss a line."""

from __future__ import annotations

import uuid
from pathlib import Path

import duckdb
import pytest

from monitoringserver.logs.api import LineFilter, LineOp, LogQuery
from monitoringserver.logs.bloom import TokenBloom
from monitoringserver.logs.keyset import FRESH_BITS, KeySet
from monitoringserver.logs.query import LogQueryEngine
from monitoringserver.logs.store import LogStore, LogStoreOptions
from monitoringserver.model.logs import LogBatch, LogRecord
from monitoringserver.storage.db import Database
from tests.logs.conftest import FakeClock


def _ids(k: int) -> list[str]:
    return [str(uuid.UUID(int=(k << 64) + i)) for i in range(20)]


def _fill(store: LogStore, archives: int, first: int = 0) -> None:
    for k in range(first, first + archives):
        records = [
            LogRecord(1000 * k + i, f"req {rid} from 10.{k}.0.{i + 1} port {k}", server_id="h")
            for i, rid in enumerate(_ids(k))
        ]
        store.insert(LogBatch.from_records(records))
        store.flush()


def _needle(engine: LogQueryEngine, needle: str) -> tuple[int, int, int]:
    page = engine.query(LogQuery(filters=(LineFilter(LineOp.CONTAINS, needle),), limit=100))
    return len(page.batch), page.archives_scanned, page.archives_pruned


@pytest.mark.parametrize("old_style", [False, True])
def test_compaction_merges_filters_and_needles_find_every_line(
    db: Database, tmp_path: Path, clock: FakeClock, old_style: bool
) -> None:
    opts = LogStoreOptions(compact_min_archives=3, retention_s=None)
    store = LogStore(db, tmp_path / "m", opts, clock=clock)
    engine = LogQueryEngine(store)
    _fill(store, 4)
    if old_style:  # an archive whose filter was built before numpy keys: re-read instead
        db.write(
            lambda con: con.execute(
                "UPDATE log_archives SET hash_version = replace(hash_version, '+nk1', '') "
                "WHERE id = (SELECT min(id) FROM log_archives)"
            )
        )
    merged = store.compact()
    assert merged is not None
    entry = next(e for e in store.entries() if e.info.id == merged.id)
    assert entry.numpy_keys
    assert isinstance(entry.bloom, KeySet)
    assert entry.groups_dropped
    # 4 x 20 ids and their keys: a handful of distinct keys at about 1 % per key.
    assert entry.bloom.bits < FRESH_BITS
    assert entry.bloom.keys > 80
    _fill(store, 1, first=4)  # one more fresh archive beside the merged one
    for k in range(4):
        for rid in _ids(k)[::7]:
            assert _needle(engine, rid) == (1, 1, 1)
    assert _needle(engine, str(uuid.UUID(int=999))) == (0, 0, 2)
    assert _needle(engine, "from 10.2.0.3 port") == (1, 1, 1)
    assert _needle(engine, "port")[0] == 100


def test_filters_of_another_duckdb_version_are_still_used_when_numpy_keyed(
    db: Database, tmp_path: Path, clock: FakeClock
) -> None:
    store = LogStore(db, tmp_path / "v", LogStoreOptions(retention_s=None), clock=clock)
    engine = LogQueryEngine(store)
    _fill(store, 2)
    db.write(
        lambda con: con.execute(
            "UPDATE log_archives SET hash_version = replace(hash_version, ?, '0.0.1')",
            [duckdb.__version__],
        )
    )
    assert all(e.bloom is not None for e in store.entries())
    assert _needle(engine, _ids(1)[3]) == (1, 1, 1)


def test_pairs_option_keeps_the_sql_keys_and_reads_lines_at_compaction(
    db: Database, tmp_path: Path, clock: FakeClock
) -> None:
    opts = LogStoreOptions(index_pairs=True, retention_s=None)
    store = LogStore(db, tmp_path / "p", opts, clock=clock)
    engine = LogQueryEngine(store)
    _fill(store, 2)
    assert not any(e.numpy_keys for e in store.entries())
    merged = store.compact(force=True)
    assert merged is not None
    (entry,) = store.entries()
    assert not entry.numpy_keys
    assert entry.pairs_indexed
    assert isinstance(entry.bloom, TokenBloom)
    assert entry.bloom.segments == 1
    assert _needle(engine, _ids(0)[5]) == (1, 1, 0)
    assert _needle(engine, str(uuid.UUID(int=999))) == (0, 0, 1)
