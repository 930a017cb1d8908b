"""Tables of the log store in the shared DuckDB file (all prefixed ``log_``).

* ``log_head``: lines not yet archived. ``attrs`` is a JSON object text ('' when empty);
  ``batch`` numbers inserts so a flush can archive exactly the rows it copied.
* ``log_archives``: the manifest. An archive file is visible only through its row.
  ``bloom`` holds the token index (an ``LKS1`` key set, or an ``LBF1``/``LBF2`` bloom
  filter in older archives); ``hash_version`` the DuckDB version whose ``hash()`` built
  a filter of DuckDB-hashed keys (a different version disables pruning, never
  correctness) and ``+`` flags for the kind of keys, index and file layout;
  ``compacted``: the archive is the product of a merge (not merged again).
* ``log_state``: ``committed_lsn`` = WAL position whose records are all in DuckDB.
* ``log_dedup``: the last applied ``batch_seq`` per agent.
"""

from __future__ import annotations

import duckdb

__all__ = ["HEAD_COLUMNS", "create_schema"]

#: Column order of every archive file (``log_head`` has these plus ``batch``).
HEAD_COLUMNS = ("ts", "server_id", "level", "logger", "source", "message", "attrs")

_DDL = (
    """CREATE TABLE IF NOT EXISTS log_head (
        ts BIGINT NOT NULL, server_id VARCHAR NOT NULL, level VARCHAR NOT NULL,
        logger VARCHAR NOT NULL, source VARCHAR NOT NULL, message VARCHAR NOT NULL,
        attrs VARCHAR NOT NULL, batch BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS log_archives (
        id VARCHAR PRIMARY KEY, path VARCHAR NOT NULL, min_ts BIGINT NOT NULL,
        max_ts BIGINT NOT NULL, hosts VARCHAR[] NOT NULL, attr_keys VARCHAR[] NOT NULL,
        lines BIGINT NOT NULL, raw_bytes BIGINT NOT NULL, stored_bytes BIGINT NOT NULL,
        created_ms BIGINT NOT NULL, bloom BLOB, hash_version VARCHAR NOT NULL,
        compacted BOOLEAN NOT NULL DEFAULT false)""",
    "CREATE TABLE IF NOT EXISTS log_state (key VARCHAR PRIMARY KEY, value BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS log_dedup (agent_id VARCHAR PRIMARY KEY, last_seq BIGINT NOT NULL)",
)


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in _DDL:
        con.execute(ddl)
