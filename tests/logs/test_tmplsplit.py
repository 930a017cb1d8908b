"""The numpy template encoder gives exactly the values of the SQL one
(:func:`encoded_relation`), whatever the chunking, for corpus shapes, corner cases and
random texts made of the pieces the passes care about."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoringserver.logs import templates
from monitoringserver.logs.api import LogQuery
from monitoringserver.logs.query import LogQueryEngine
from monitoringserver.logs.store import LogStore, LogStoreOptions
from monitoringserver.logs.templates import INT_SLOTS, encoded_relation, encoded_tables
from monitoringserver.logs.tmplsplit import encode_messages
from monitoringserver.model.logs import LogBatch, LogRecord
from monitoringserver.storage.db import Database

from .conftest import FakeClock
from .test_templates import SHAPES, U1, log_columns

H32 = uuid.UUID(int=0xA53FDDC9099F9C9FEB7FE26B91C3098C).hex
PIECES = [
    "\x00", "\x01", "\x02", "\x03", "\x04", "0", "1", "00", "7", "a", "B", "f", "g", "Z",
    "_", "-", ".", " ", "\n", "é", "😀", U1, U1.upper(), H32, H32 + "ab", "deadbeef",
    "DEADBEEF12", "1234567890123", "9" * 20, "0" * 5, "abcdef0", "x",
]  # fmt: skip


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    c.execute("SET preserve_insertion_order = true")
    yield c
    c.close()


def _both(con: duckdb.DuckDBPyConnection, messages: list[str], chunk: int) -> None:
    con.register("_src", log_columns(messages))
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE src AS SELECT * FROM _src")
    finally:
        con.unregister("_src")
    want = con.execute(f"SELECT * FROM {encoded_relation('src')} ORDER BY ts").fetchall()
    with encoded_tables(con, "src", chunk_lines=chunk) as rel:
        got = con.execute(f"SELECT * FROM {rel} ORDER BY ts").fetchall()
    assert got == want
    # The temporary tables are gone.
    assert not con.execute(
        "SELECT * FROM duckdb_tables() WHERE table_name LIKE '_tmpl_%'"
    ).fetchall()


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_shapes_match_the_sql_encoder(con: duckdb.DuckDBPyConnection, chunk: int) -> None:
    _both(con, SHAPES * 3, chunk)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=14).map("".join), max_size=30))
def test_random_texts_match_the_sql_encoder(
    con: duckdb.DuckDBPyConnection, messages: list[str]
) -> None:
    _both(con, messages, 7)


def test_encoded_fields() -> None:
    many = " ".join(str(k) for k in range(INT_SLOTS + 3))
    enc = encode_messages([f"id {U1} t={H32} w=DEADBEEF12 n=007", many, "x\x00y 5", ""])
    assert enc.tmpl[0] == "id \x01 t=\x02 w=\x04 n=00\x03"
    assert (enc.uuids[0], enc.hexids[0], enc.hexw[0]) == (U1, H32, "DEADBEEF12")
    assert enc.ints[0] == "7"
    assert enc.ints[1] == ",".join(str(k) for k in range(INT_SLOTS + 3))
    assert enc.ints[3] is None
    assert enc.tmpl[2] == "x\x00y \x03"  # a NUL in a message: templates cut by position
    assert enc.tmpl[3] == ""
    assert not enc.verbatim.any()
    empty = encode_messages([])
    assert empty.tmpl == []
    assert empty.ints == []


def test_compaction_of_mixed_layouts_in_many_chunks_keeps_every_line(
    db: Database, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoded rows are joined to a second scan of the sources by position: with
    many row groups, several files of two layouts and small chunks, every line
    comes back exactly."""
    monkeypatch.setattr(templates, "CHUNK_LINES", 997)
    records: list[LogRecord] = []
    for layout, k0 in (("plain", 0), ("idcols", 1), ("plain", 2)):
        opts = LogStoreOptions(retention_s=None, flush_layout=layout, row_group_lines=2048)
        store = LogStore(db, tmp_path / "mix", opts, clock=clock)
        part = [
            LogRecord(
                k0 * 10_000 + i,
                SHAPES[(i * 7 + k0) % len(SHAPES)].replace("12", str(i)),
                server_id=f"h{i % 5}",
                level="info" if i % 3 else "error",
                logger=f"l{i % 2}",
            )
            for i in range(6000)
        ]
        records += part
        store.insert(LogBatch.from_records(part))
        store.flush()
    assert [e.layout for e in store.entries()] == ["plain", "idcols", "plain"]
    assert store.compact(force=True) is not None
    assert [e.layout for e in store.entries()] == ["tmpl"]
    got = LogQueryEngine(store).query(LogQuery(limit=10_000, direction="forward"))
    want = sorted(records, key=lambda r: (r.ts_ms, r.server_id, r.source, r.logger, r.message))
    assert list(got.batch.records()) == want[:10_000]


def test_sources_read_once_and_rows_checked_in_the_join(
    con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source that orders its rows differently on every scan is read once, so
    every line is encoded with its own columns; a row key that does not line up
    fails the statement instead of mixing rows."""
    n = 2000
    con.execute(
        "CREATE TEMP TABLE src AS SELECT i AS ts, 'h' || (i % 7) AS server_id, 'info' AS level, "
        "'l' AS logger, 's' AS source, 'line ' || i || ' x' AS message, '' AS attrs "
        "FROM range(?) t(i)",
        [n],
    )
    shuffled = "(SELECT * FROM src ORDER BY random())"
    want = con.execute(f"SELECT * FROM {encoded_relation('src')} ORDER BY ts").fetchall()
    with encoded_tables(con, shuffled, chunk_lines=300) as rel:
        assert con.execute(f"SELECT * FROM {rel} ORDER BY ts").fetchall() == want
    real = templates._insert_chunk

    def misaligned(cur, table, keys, messages, enc):  # type: ignore[no-untyped-def]
        real(cur, table, keys[::-1].copy(), messages, enc)

    monkeypatch.setattr(templates, "_insert_chunk", misaligned)
    with (
        encoded_tables(con, "src", chunk_lines=300) as rel,
        pytest.raises(duckdb.InvalidInputException, match="does not line up"),
    ):
        con.execute(f"SELECT * FROM {rel}").fetchall()
