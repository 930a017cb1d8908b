"""Tables of the embedded metric store inside the shared DuckDB file.

``metric_series``: the series index (id, labels as JSON pairs, creating source, time range).
``metric_head``: acknowledged samples not yet in a Parquet file; ``bits`` is the float64
value's bit pattern (DuckDB turns NaN from numpy into NULL, which would lose NaN and the
staleness marker); ``batch`` orders writes (last write wins) and lets a flush delete
exactly the rows it wrote out.
``metric_files``: the manifest; a Parquet file exists for readers only through a row here.
``metric_state``: counters (committed WAL position, flush sequence, next file id, ...).
``metric_dedup``: the last batch sequence applied per agent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import duckdb
import numpy as np
from numpy.typing import NDArray

from monitoringserver.model.labels import Labels

__all__ = [
    "create_tables",
    "get_state",
    "insert_series",
    "load_dedup",
    "load_series",
    "save_series_ranges",
    "set_state",
    "upsert_dedup",
]

_DDL = (
    """CREATE TABLE IF NOT EXISTS metric_series (
        id UBIGINT PRIMARY KEY, labels VARCHAR NOT NULL, source VARCHAR NOT NULL,
        min_ts BIGINT, max_ts BIGINT)""",
    """CREATE TABLE IF NOT EXISTS metric_head (
        series_id UBIGINT NOT NULL, ts BIGINT NOT NULL, bits BIGINT NOT NULL,
        batch BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS metric_files (
        id BIGINT PRIMARY KEY, path VARCHAR NOT NULL, resolution VARCHAR NOT NULL,
        level INTEGER NOT NULL, seq BIGINT NOT NULL, partition_start BIGINT NOT NULL,
        min_sid UBIGINT NOT NULL, max_sid UBIGINT NOT NULL, min_ts BIGINT NOT NULL,
        max_ts BIGINT NOT NULL, rows BIGINT NOT NULL, bytes BIGINT NOT NULL,
        rolled_up BOOLEAN NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS metric_state (key VARCHAR PRIMARY KEY, value BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS metric_dedup (agent_id VARCHAR PRIMARY KEY, last_seq BIGINT)",
)


def create_tables(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in _DDL:
        con.execute(ddl)


def get_state(con: duckdb.DuckDBPyConnection, key: str, default: int = 0) -> int:
    rows = con.execute("SELECT value FROM metric_state WHERE key = ?", [key]).fetchall()
    return int(rows[0][0]) if rows else default


def set_state(con: duckdb.DuckDBPyConnection, key: str, value: int) -> None:
    con.execute("INSERT OR REPLACE INTO metric_state VALUES (?, ?)", [key, value])


def insert_series(con: duckdb.DuckDBPyConnection, rows: Sequence[tuple[int, Labels, str]]) -> None:
    """Persist new series; ids already present are left alone (replays are idempotent)."""
    if not rows:
        return
    new_series = {
        "id": np.array([r[0] for r in rows], dtype=np.uint64),
        "labels": np.array([json.dumps(r[1], separators=(",", ":")) for r in rows], dtype=object),
        "source": np.array([r[2] for r in rows], dtype=object),
    }
    con.execute(
        "INSERT OR IGNORE INTO metric_series SELECT id, labels, source, NULL, NULL FROM new_series"
    )
    del new_series


def load_series(
    con: duckdb.DuckDBPyConnection,
) -> Iterator[tuple[int, Labels, str, int | None, int | None]]:
    rows = con.execute(
        "SELECT id, labels, source, min_ts, max_ts FROM metric_series ORDER BY id"
    ).fetchall()
    for sid, text, source, lo, hi in rows:
        labels: Labels = tuple((str(k), str(v)) for k, v in json.loads(text))
        yield int(sid), labels, str(source), lo, hi


def save_series_ranges(
    con: duckdb.DuckDBPyConnection, min_ts: NDArray[np.int64], max_ts: NDArray[np.int64]
) -> None:
    """Store each series' known time range (ids are the array positions)."""
    known = max_ts >= min_ts
    ranges = {
        "id": np.flatnonzero(known).astype(np.uint64),
        "lo": min_ts[known],
        "hi": max_ts[known],
    }
    con.execute(
        "UPDATE metric_series SET min_ts = ranges.lo, max_ts = ranges.hi "
        "FROM ranges WHERE metric_series.id = ranges.id"
    )
    del ranges


def load_dedup(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {
        str(a): int(s)
        for a, s in con.execute("SELECT agent_id, last_seq FROM metric_dedup").fetchall()
    }


def upsert_dedup(con: duckdb.DuckDBPyConnection, last: dict[str, int]) -> None:
    for agent_id, seq in last.items():
        con.execute("INSERT OR REPLACE INTO metric_dedup VALUES (?, ?)", [agent_id, seq])
