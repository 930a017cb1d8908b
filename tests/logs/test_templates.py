"""Template layout: exact rebuild, sound needle prefilters, compaction and search."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoringserver.errors import BadDataError
from monitoringserver.logs.api import LineFilter, LineOp, LogQuery
from monitoringserver.logs.archive import build_archive, files_source, layout_of
from monitoringserver.logs.query import LogQueryEngine
from monitoringserver.logs.store import LogStore, LogStoreOptions
from monitoringserver.logs.templates import (
    INT_SLOTS,
    TEMPLATES_SUFFIX,
    encoded_relation,
    literal_segments,
    needle_prefilter,
    restored_relation,
)
from monitoringserver.model.logs import LogBatch, LogRecord
from monitoringserver.model.matchers import Matcher
from monitoringserver.storage.db import Database

from .conftest import FakeClock

U1 = "3f2a9c1e-1b2c-4d3e-8f90-0123456789ab"
H1 = "a53fddc9099f9c9feb7fe26b91c3098c"

#: Lines shaped like the corpus and like the corner cases of the encoding.
SHAPES = [
    '10.2.33.4 - - [10/Jan/2026:11:05:33 +0000] "GET /api/v1/items/4321 HTTP/1.1" 200 4312 '
    '"https://shop.example.com/login" "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0" rt=0.045',
    "Jan 10 11:05:09 web-03 sshd[1234]: Accepted publickey for deploy from 10.0.3.25 port "
    "50022 ssh2: ED25519 SHA256:3f2a9c1e1b2c4d3e8f9001",
    json.dumps(
        {"ts": "2026-01-10T11:05:33.007Z", "request_id": U1, "trace_id": H1, "user_id": 7},
        separators=(",", ":"),
    ),
    "Out of memory: Killed process 4242 (java) total-vm:1234567kB, anon-rss:123456kB",
    "",
    "no variables at all",
    "zeros 0 00 000 0007 -0 +5 1.50 007x",
    "big 12345678901234567890123 and 999999999999999999 and 1000000000000000000",
    "many " + " ".join(str(k) for k in range(INT_SLOTS + 7)),
    "control \x01 \x02 \x03 \x04 bytes stay verbatim 42",
    f"glued {U1}{U1} and {H1}{H1}ab and x{U1[:30]}{U1} end",
    f"upper {U1.upper()} {H1.upper()} mixed DEADBEEF12 cafe",
    "unicode ü 12 € 3.5 😀 7",
    "tabs\tand\nnewlines 5\n6",
]


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    yield c
    c.close()


def log_columns(messages: list[str]) -> dict[str, np.ndarray]:
    """Log-table columns for ``messages`` (timestamps 0, 1, ...; the other fields fixed)."""
    n = len(messages)
    return {
        "ts": np.arange(n, dtype=np.int64),
        "server_id": np.array(["h"] * n, dtype=object),
        "level": np.array(["info"] * n, dtype=object),
        "logger": np.array(["l"] * n, dtype=object),
        "source": np.array(["s"] * n, dtype=object),
        "message": np.array(messages, dtype=object),
        "attrs": np.array([""] * n, dtype=object),
    }


def _write(con: duckdb.DuckDBPyConnection, path: Path, messages: list[str]) -> None:
    con.register("_in", log_columns(messages))
    try:
        con.execute(f"COPY (SELECT * FROM {encoded_relation('_in')}) TO '{path}' (FORMAT parquet)")
    finally:
        con.unregister("_in")


def _rebuilt(con: duckdb.DuckDBPyConnection, path: Path) -> list[str]:
    rows = con.execute(f"SELECT message FROM {restored_relation([path])} ORDER BY ts").fetchall()
    return [r[0] for r in rows]


def test_corpus_shapes_round_trip(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    _write(con, path, SHAPES)
    assert _rebuilt(con, path) == SHAPES
    rows = con.execute(
        f"SELECT tmpl, verbatim, i1, irest, uuids, hexids, hexw FROM '{path}' ORDER BY ts"
    ).fetchall()
    nginx, sshd, app = rows[0], rows[1], rows[2]
    assert nginx[0].startswith("\x03.\x03.\x03.\x03 - - [\x03/Jan/\x03:\x03:0\x03:\x03 +000\x03]")
    assert nginx[2] == 10
    assert sshd[6] == ["3f2a9c1e1b2c4d3e8f9001"]  # a hex word, kept as text
    assert (str(app[4][0]), app[5][0].hex) == (U1, H1)
    assert rows[8][3] == list(range(INT_SLOTS, INT_SLOTS + 7))  # past the slots
    for verbatim in (rows[9], rows[10]):  # control bytes; ids glued to hex text
        assert verbatim[1]
        assert verbatim[0] == SHAPES[rows.index(verbatim)]
        assert verbatim[4] == verbatim[5] == []
    assert not any(r[1] for r in rows[:9])


_ALPHABET = st.sampled_from(
    [*list("0123456789abcdefABCDEF-x_: .\x01\x02\x03\x04\n{}ü😀"), U1, H1, "000", "9" * 20]
)
_MESSAGES = st.lists(
    st.one_of(
        st.lists(_ALPHABET, max_size=25).map("".join),
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00")),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=_MESSAGES, data=st.data())
def test_arbitrary_strings_round_trip_and_prefilters_are_sound(
    tmp_path_factory: pytest.TempPathFactory, messages: list[str], data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("t") / "a.parquet"
    with duckdb.connect() as con:
        _write(con, path, messages)
        assert _rebuilt(con, path) == messages
        source = files_source([(path, "tmpl")], prefilter=True)
        for _ in range(3):
            text = data.draw(st.sampled_from(messages))
            lo = data.draw(st.integers(0, len(text)))
            hi = data.draw(st.integers(lo, len(text)))
            needle = text[lo:hi] or "x"
            conds = needle_prefilter(needle)
            where = " AND ".join(c for c, _ in conds) or "true"
            params = [p for _, ps in conds for p in ps]
            sql = f"SELECT ts FROM {source} WHERE {where} AND contains(message, ?) ORDER BY ts"
            got = [r[0] for r in con.execute(sql, [*params, needle]).fetchall()]
            assert got == [k for k, m in enumerate(messages) if needle in m]


@pytest.mark.parametrize(
    ("needle", "pieces"),
    [
        ("Out of memory", ["Out of memory"]),
        ("connect from unknown[192.168.", ["onnect from unknown["]),
        (U1, []),
        ("rt=0.123", ["rt="]),
        ('"id":"' + U1 + '"', ['"id":"']),
        ("ab", []),
        ("x deadbeef y", []),  # two-character pieces are dropped
        ("say cafe1234 now", ["say ", " now"]),
    ],
)
def test_literal_segments(needle: str, pieces: list[str]) -> None:
    assert literal_segments(needle) == pieces


def test_needle_prefilter_uses_id_columns() -> None:
    conds = needle_prefilter(f"id={U1} t={H1}")
    assert [c for c, _ in conds][-2:] == [
        "coalesce(len(uuids) = 0 OR list_contains(uuids, ?::UUID), false)",
        "coalesce(len(hexids) = 0 OR list_contains(hexids, ?::UUID), false)",
    ]
    assert conds[-2][1] == [U1]
    assert conds[-1][1] == [H1]
    assert needle_prefilter("12") == []


def test_layout_of() -> None:
    assert layout_of("2.0.0") == "plain"
    assert layout_of("2.0.0+ids+idcols") == "idcols"
    assert layout_of(f"2.0.0+ids{TEMPLATES_SUFFIX}+pairs") == "tmpl"


def _corpus(n: int, t0: int) -> list[LogRecord]:
    out = []
    for k in range(n):
        rid = str(uuid.UUID(int=k * 7919 + 1))
        if k % 3 == 0:
            msg = (
                f'10.0.{k % 7}.{k % 200} - - "GET /items/{k} HTTP/1.1" {200 + k % 4} rt=0.0{k % 9}'
            )
        elif k % 3 == 1:
            msg = json.dumps({"msg": "order created", "request_id": rid, "n": k})
        else:
            msg = f"Started Session {k} of User deploy."
        level = "error" if k % 10 == 0 else "info"
        out.append(LogRecord(t0 + k, msg, server_id=f"h{k % 3}", level=level, logger="app"))
    return out


@pytest.mark.parametrize("flush_layout", ["plain", "idcols"])
def test_compaction_writes_templates_and_search_sees_original_lines(
    db: Database, tmp_path: Path, clock: FakeClock, flush_layout: str
) -> None:
    opts = LogStoreOptions(retention_s=None, flush_layout=flush_layout)
    store = LogStore(db, tmp_path / "c", opts, clock=clock)
    engine = LogQueryEngine(store)
    records = _corpus(300, 1_000)
    for part in (records[:100], records[100:200], records[200:]):
        store.insert(LogBatch.from_records(part))
        store.flush()
    store.insert(LogBatch.from_records([LogRecord(5_000, "head line 77", server_id="h0")]))
    assert [e.layout for e in store.entries()] == [flush_layout] * 3
    merged = store.compact(force=True)
    assert merged is not None
    assert merged.lines == 300
    assert [e.layout for e in store.entries()] == ["tmpl"]
    page = engine.query(LogQuery(limit=1000, direction="forward"))
    assert list(page.batch.records())[:300] == records
    rid = str(uuid.UUID(int=151 * 7919 + 1))
    for flt, expected in [
        (LineFilter(LineOp.CONTAINS, rid), [records[151].message]),
        (LineFilter(LineOp.CONTAINS, '"request_id": "' + rid), [records[151].message]),
        (LineFilter(LineOp.CONTAINS, "Session 152 of"), [records[152].message]),
        (
            LineFilter(LineOp.REGEX, "/items/15[0-9] "),
            [records[k].message for k in (159, 156, 153, 150)],
        ),
        (LineFilter(LineOp.CONTAINS, "line 77"), ["head line 77"]),
    ]:
        hits = engine.query(LogQuery(filters=(flt,), limit=100))
        assert hits.batch.message == expected, flt
    gets = engine.query(LogQuery(filters=(LineFilter(LineOp.CONTAINS, "rt=0.0"),), limit=500))
    assert len(gets.batch) == 100
    counts = engine.count_series(
        LogQuery(start_ms=0, end_ms=10_000, filters=(LineFilter(LineOp.NOT_CONTAINS, "GET"),)),
        10_000,
        (),
    )
    assert counts[0].lines == [201]
    assert counts[0].bytes == [sum(len(r.message) for r in records if "GET" not in r.message) + 12]


def test_listing_without_line_filters_opens_only_the_archives_holding_the_page(
    db: Database, tmp_path: Path, clock: FakeClock
) -> None:
    store = LogStore(db, tmp_path / "n", LogStoreOptions(retention_s=None), clock=clock)
    engine = LogQueryEngine(store)
    records = _corpus(300, 1_000)
    for part in (records[:100], records[100:200], records[200:]):
        store.insert(LogBatch.from_records(part))
        store.flush()
    newest = [r for r in reversed(records) if r.level == "error" and r.server_id == "h0"]
    q = LogQuery(matchers=(Matcher.eq("server_id", "h0"), Matcher.eq("level", "error")), limit=3)
    page = engine.query(q)
    assert page.batch.message == [r.message for r in newest[:3]]
    assert (page.archives_scanned, page.archives_pruned) == (1, 2)
    seen = list(page.batch.message)
    while page.next_cursor is not None:
        page = engine.query(dataclasses.replace(q, cursor=page.next_cursor))
        seen += page.batch.message
    assert seen == [r.message for r in newest]
    forward = engine.query(dataclasses.replace(q, direction="forward", limit=3))
    assert forward.batch.message == [r.message for r in newest[::-1][:3]]
    assert forward.archives_scanned == 1


def test_old_layouts_stay_readable_and_are_merged_into_templates(
    db: Database, tmp_path: Path, clock: FakeClock
) -> None:
    opts = LogStoreOptions(retention_s=None, flush_layout="idcols")
    store = LogStore(db, tmp_path / "o", opts, clock=clock)
    engine = LogQueryEngine(store)
    records = _corpus(300, 1_000)
    for part in (records[:100], records[100:200], records[200:]):
        store.insert(LogBatch.from_records(part))
        store.flush()
    first = store.entries()[0]
    # Rewrite the oldest archive in the first layout of all: the lines as plain text.
    plain = first.path.with_suffix(".old")
    src = files_source([(first.path, "idcols")])
    db.cursor().execute(f"COPY (SELECT * FROM {src}) TO '{plain}' (FORMAT parquet)").fetchall()
    plain.replace(first.path)
    db.write(
        lambda con: con.execute(
            "UPDATE log_archives SET hash_version = replace(hash_version, '+idcols', '') "
            "WHERE id = ?",
            [first.info.id],
        )
    )
    assert [e.layout for e in store.entries()] == ["plain", "idcols", "idcols"]
    rid = str(uuid.UUID(int=1 * 7919 + 1))
    for _ in range(2):  # before and after the merge
        page = engine.query(LogQuery(limit=1000, direction="forward"))
        assert list(page.batch.records()) == records
        hits = engine.query(LogQuery(filters=(LineFilter(LineOp.CONTAINS, rid),)))
        assert hits.batch.message == [records[1].message]
        assert store.compact(force=True) is None or store.entries()[0].layout == "tmpl"
    assert [e.layout for e in store.entries()] == ["tmpl"]


def test_unknown_layouts_are_refused(db: Database, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one file"):
        files_source([])
    opts = LogStoreOptions()
    with pytest.raises(ValueError, match="layout 'columns'"):
        build_archive(db.cursor(), tmp_path, opts, "log_head", 1, level=3, layout="columns")
    with pytest.raises(BadDataError, match="flush_layout"):
        LogStoreOptions(flush_layout="tmpl")
