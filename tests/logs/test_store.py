"""Store round trip, atomic publish, cleanup, bloom pruning, rotation, delete, stats."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoringserver.errors import BadDataError, NotFoundError
from monitoringserver.logs.api import ArchiveFilter, DedupKey, LineFilter, LineOp, LogQuery
from monitoringserver.logs.query import LogQueryEngine
from monitoringserver.logs.store import LogStore, LogStoreOptions
from monitoringserver.model.logs import LogBatch, LogRecord
from monitoringserver.model.matchers import Matcher
from monitoringserver.storage.db import Database

from .conftest import FakeClock

NEEDLE = "3f2a9c1e-1b2c-4d3e-8f90-0123456789ab"


def _batch(host: str, t0: int, n: int, *, extra: str = "") -> LogBatch:
    return LogBatch.from_records(
        LogRecord(
            t0 + i,
            f"GET /api/item/{i} took {i % 7} ms {extra}".strip(),
            server_id=host,
            level="error" if i % 5 == 0 else "info",
            logger="web",
            source="nginx",
            attrs={"job": "web"} if i % 2 else {},
        )
        for i in range(n)
    )


def test_round_trip_head_and_archive(store: LogStore, engine: LogQueryEngine) -> None:
    store.insert(_batch("h1", 1000, 50), lsn=123, dedup=[DedupKey("a", 4)])
    assert store.committed_lsn() == 123
    assert store.dedup_state() == {"a": 4}
    store.insert(LogBatch.empty(), dedup=[DedupKey("a", 2)])
    assert store.dedup_state() == {"a": 4}
    info = store.flush()
    assert info is not None
    assert (info.lines, info.min_ts_ms, info.max_ts_ms, info.hosts) == (50, 1000, 1049, ("h1",))
    assert info.raw_bytes == sum(len(m) for m in _batch("h1", 1000, 50).message)
    assert info.stored_bytes == store.archive_path(info.id).stat().st_size
    assert store.flush() is None
    store.insert(_batch("h2", 2000, 10))
    page = engine.query(LogQuery(limit=1000))
    assert len(page.batch) == 60
    assert page.batch.ts_ms.tolist() == sorted(page.batch.ts_ms.tolist(), reverse=True)
    first = next(engine.query(LogQuery(limit=1, direction="forward")).batch.records())
    assert first == LogRecord(1000, "GET /api/item/0 took 0 ms", "h1", "error", "web", "nginx", {})
    odd = engine.query(LogQuery(matchers=(Matcher.eq("job", "web"),), limit=100)).batch
    assert len(odd) == 30
    assert odd.attrs[0] == {"job": "web"}
    stats = engine.stats()
    assert (stats.head_lines, stats.archives, stats.archived_lines) == (10, 1, 50)
    assert (stats.oldest_ms, stats.newest_ms, stats.wal_bytes) == (1000, 2009, 7)
    assert stats.rejected == {"too_old": 1}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (LogQuery(matchers=(Matcher.eq("server_id", "h2"),)), 20),
        (LogQuery(matchers=(Matcher.eq("level", "error"),)), 8),
        (LogQuery(matchers=(Matcher.eq("server_id", "h1"), Matcher.eq("level", "error"))), 4),
        (LogQuery(matchers=(Matcher("server_id", Matcher.eq("a", "b").op, "h1"),)), 20),
        (LogQuery(start_ms=1005, end_ms=1009), 10),
        (LogQuery(filters=(LineFilter(LineOp.CONTAINS, "item/1 "),)), 2),
        (LogQuery(filters=(LineFilter(LineOp.NOT_CONTAINS, "took 0"),)), 34),
        (LogQuery(filters=(LineFilter(LineOp.REGEX, r"item/1\d "),)), 20),
        (LogQuery(filters=(LineFilter(LineOp.NOT_REGEX, "^GET"),)), 0),
        (LogQuery(matchers=(Matcher.eq("job", ""),)), 20),
    ],
)
def test_filters(store: LogStore, engine: LogQueryEngine, query: LogQuery, expected: int) -> None:
    store.insert(_batch("h1", 1000, 20))
    store.flush()
    store.insert(_batch("h2", 1000, 20))
    q = LogQuery(
        start_ms=query.start_ms,
        end_ms=query.end_ms,
        matchers=query.matchers,
        filters=query.filters,
        limit=1000,
    )
    assert len(engine.query(q).batch) == expected


def test_regex_matchers_and_bad_regex(store: LogStore, engine: LogQueryEngine) -> None:
    from monitoringserver.model.matchers import MatchOp

    store.insert(_batch("web-1", 0, 3))
    store.insert(_batch("db-1", 0, 3))
    q = LogQuery(matchers=(Matcher("server_id", MatchOp.RE, "web-.*"),))
    assert set(engine.query(q).batch.server_id) == {"web-1"}
    q = LogQuery(matchers=(Matcher("server_id", MatchOp.NRE, "web-.*"),))
    assert set(engine.query(q).batch.server_id) == {"db-1"}
    with pytest.raises(BadDataError):
        engine.query(LogQuery(filters=(LineFilter(LineOp.REGEX, "(?<=x)"),)))
    with pytest.raises(BadDataError):
        engine.query(LogQuery(direction="sideways"))
    with pytest.raises(BadDataError):
        engine.query(LogQuery(cursor="!!!"))
    with pytest.raises(BadDataError):
        engine.query(LogQuery(matchers=(Matcher.eq("bad name'", "x"),)))


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_cursor_paging_visits_every_line_once(
    store: LogStore, engine: LogQueryEngine, direction: str
) -> None:
    # many lines share a timestamp: the cursor must still split pages exactly
    recs = [LogRecord(1000 + i // 4, f"m{i}", server_id="h") for i in range(37)]
    store.insert(LogBatch.from_records(recs[:20]))
    store.flush()
    store.insert(LogBatch.from_records(recs[20:]))
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        page = engine.query(LogQuery(limit=5, direction=direction, cursor=cursor))
        seen += page.batch.message
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(r.message for r in recs)
    assert len(seen) == 37


def test_bloom_prunes_archives_for_needles(store: LogStore, engine: LogQueryEngine) -> None:
    for k in range(4):
        store.insert(_batch(f"h{k}", 1000 * k, 100, extra=f"req={NEEDLE}" if k == 2 else ""))
        store.flush()
    page = engine.query(LogQuery(filters=(LineFilter(LineOp.CONTAINS, NEEDLE),), limit=1000))
    assert len(page.batch) == 100
    assert (page.archives_scanned, page.archives_pruned) == (1, 3)
    # time and host pruning come first
    page = engine.query(LogQuery(start_ms=3000, matchers=(Matcher.eq("server_id", "h3"),)))
    assert (page.archives_scanned, page.archives_pruned) == (1, 3)
    # attrs key unknown to an archive prunes it
    page = engine.query(LogQuery(matchers=(Matcher.eq("nokey", "x"),)))
    assert (page.archives_scanned, len(page.batch)) == (0, 0)


def test_atomic_publish_leftovers_removed_at_start(
    db: Database, tmp_path: Path, clock: FakeClock
) -> None:
    d = tmp_path / "logs"
    store = LogStore(db, d, clock=clock)
    store.insert(_batch("h", 0, 5))
    info = store.flush()
    assert info is not None
    (d / ".x.parquet.tmp").write_bytes(b"partial")
    (d / "orphan.parquet").write_bytes(b"unlisted")
    (d / "notes.txt").write_text("kept")
    LogStore(db, d, clock=clock)
    assert sorted(p.name for p in d.iterdir()) == [f"{info.id}.parquet", "notes.txt"]


def test_failed_publish_leaves_nothing(store: LogStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import monitoringserver.logs.archive as mod

    store.insert(_batch("h", 0, 5))

    def boom(path: Path) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(mod, "fsync_path", boom)
    with pytest.raises(OSError, match="disk gone"):
        store.flush()
    assert list(store.directory.iterdir()) == []
    assert store.head_lines() == 5
    assert store.archives() == []


def test_rotation_by_age_and_size_and_delete(store: LogStore, clock: FakeClock) -> None:
    now = int(clock() * 1000)
    ids = []
    for k in range(4):
        store.insert(_batch("h", now - (4 - k) * 3_600_000, 200))
        info = store.flush()
        assert info is not None
        ids.append(info.id)
        clock.t += 1
    store.insert(_batch("h", now - 10 * 3_600_000, 3))
    res = store.rotate(max_age_s=2.5 * 3600)
    assert res.deleted == (ids[0], ids[1])
    assert res.freed_bytes > 0
    assert store.head_lines() == 0
    size = store.archives()[-1].stored_bytes
    res = store.rotate(max_total_bytes=size)
    assert res.deleted == (ids[2],)
    assert [a.id for a in store.archives()] == [ids[3]]
    assert store.archive_path(ids[3]).exists()
    store.delete(ids[3])
    assert store.archives() == []
    assert list(store.directory.iterdir()) == []
    with pytest.raises(NotFoundError):
        store.delete(ids[3])
    with pytest.raises(NotFoundError):
        store.archive_path("nope")


def test_archive_filter_and_needs_flush(db: Database, tmp_path: Path, clock: FakeClock) -> None:
    store = LogStore(
        db, tmp_path / "l", LogStoreOptions(flush_lines=10, flush_interval_s=60), clock=clock
    )
    assert not store.needs_flush()
    store.insert(_batch("a", 0, 3))
    assert not store.needs_flush()
    clock.t += 61
    assert store.needs_flush()
    store.flush()
    store.insert(_batch("b", 5000, 10))
    assert store.needs_flush()
    store.flush()
    assert [a.hosts for a in store.archives(ArchiveFilter(server_id="b"))] == [("b",)]
    assert len(store.archives(ArchiveFilter(start_ms=100))) == 1
    assert len(store.archives(ArchiveFilter(end_ms=100))) == 1
    with pytest.raises(BadDataError):
        LogStoreOptions(compression_level=0)
    with pytest.raises(BadDataError):
        LogStoreOptions(flush_lines=0)
    with pytest.raises(BadDataError, match="index_fp_rate"):
        LogStoreOptions(index_fp_rate=0.0)
    with pytest.raises(BadDataError):
        LogStoreOptions(compact_dictionary_limit=0)


def test_rows_inserted_during_a_flush_stay_in_the_head(
    store: LogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.insert(_batch("h", 0, 5))
    real = store._build_archive

    def build_then_insert(cutoff: int):  # type: ignore[no-untyped-def]
        out = real(cutoff)
        store.insert(_batch("late", 100, 3))  # arrives while the file is being written
        return out

    monkeypatch.setattr(store, "_build_archive", build_then_insert)
    info = store.flush()
    assert info is not None
    assert info.lines == 5
    assert store.head_lines() == 3
    monkeypatch.undo()
    again = store.flush()
    assert again is not None
    assert again.hosts == ("late",)


@pytest.mark.parametrize(("pairs", "scanned"), [(True, 1), (False, 1)])
def test_uuid_needle_pruned_by_id_or_pair_keys(
    db: Database, tmp_path: Path, clock: FakeClock, pairs: bool, scanned: int
) -> None:
    # every archive holds every inner UUID group, but only one holds these pairs (and
    # this whole UUID, an id key with or without pairs)
    store = LogStore(db, tmp_path / "p", LogStoreOptions(index_pairs=pairs), clock=clock)
    engine = LogQueryEngine(store)
    groups = ["1b2c", "4d3e", "8f90"]
    for k in range(3):
        a, b, c = groups[k % 3], groups[(k + 1) % 3], groups[(k + 2) % 3]
        msg = f"id=aaaaaaaa-{a}-{b}-{c}-bbbbbbbbbbbb"
        store.insert(LogBatch.from_records([LogRecord(k, msg, server_id="h")]))
        store.flush()
    needle = "aaaaaaaa-1b2c-4d3e-8f90-bbbbbbbbbbbb"
    page = engine.query(LogQuery(filters=(LineFilter(LineOp.CONTAINS, needle),)))
    assert page.batch.message == [f"id={needle}"]
    assert (page.archives_scanned, page.archives_pruned) == (scanned, 3 - scanned)


def test_compaction_merges_fresh_archives(db: Database, tmp_path: Path, clock: FakeClock) -> None:
    opts = LogStoreOptions(compact_min_archives=3, compact_max_lines=250, retention_s=None)
    store = LogStore(db, tmp_path / "c", opts, clock=clock)
    engine = LogQueryEngine(store)
    assert store.compact(force=True) is None
    for k in range(4):
        store.insert(_batch(f"h{k}", 1000 * k, 100, extra=f"req={NEEDLE}" if k == 1 else ""))
        store.flush()
    assert store.compact() is not None  # merges the oldest two (250-line cap)
    archives = store.archives()
    assert [a.lines for a in archives] == [200, 100, 100]
    assert archives[0].hosts == ("h0", "h1")
    assert len(list(store.directory.glob("*.parquet"))) == 3
    assert store.compact() is None  # only two fresh ones left
    merged = store.compact(force=True)
    assert merged is not None
    assert merged.lines == 200
    assert store.compact(force=True) is None  # merged archives are not merged again
    page = engine.query(LogQuery(filters=(LineFilter(LineOp.CONTAINS, NEEDLE),), limit=1000))
    assert len(page.batch) == 100
    assert page.archives_scanned == 1
    assert len(engine.query(LogQuery(limit=1000)).batch) == 400
    with pytest.raises(BadDataError):
        LogStoreOptions(compaction_level=30)


def test_compaction_reencodes_archives_too_big_to_merge(
    db: Database, tmp_path: Path, clock: FakeClock
) -> None:
    opts = LogStoreOptions(compact_min_archives=2, compact_max_lines=150, retention_s=None)
    store = LogStore(db, tmp_path / "big", opts, clock=clock)
    engine = LogQueryEngine(store)
    for k in range(3):  # 100 + 100 > 150: no two neighbours fit one merge
        store.insert(_batch(f"h{k}", 1000 * k, 100, extra=f"req={NEEDLE}" if k == 2 else ""))
        store.flush()
    assert store.compact() is not None  # the oldest, alone, into the compact layout
    assert store.compact() is not None
    assert store.compact() is None  # one fresh archive left: below compact_min_archives
    assert store.compact(force=True) is not None  # force takes it too
    assert store.compact(force=True) is None
    entries = store.entries()
    assert [(e.info.lines, e.layout) for e in entries] == [(100, "tmpl")] * 3
    assert len(list(store.directory.glob("*.parquet"))) == 3
    page = engine.query(LogQuery(filters=(LineFilter(LineOp.CONTAINS, NEEDLE),), limit=1000))
    assert len(page.batch) == 100
    assert len(engine.query(LogQuery(limit=1000)).batch) == 300


@pytest.mark.parametrize(
    ("needle", "scanned", "found"),
    [
        ("3F2A9C1E-1B2C-4D3E-8F90-0123456789AB", 1, 1),  # a UUID glued to other characters
        # Not a whole UUID: its inner groups may be UUID groups, which the index leaves out.
        ("9C1E-1B2C-4D3E-8F90-0123456789AB", 4, 1),
        (" 1b2c 4d3e 8f90 0123456789ab 10", 1, 1),  # the same runs as words prune
        ("4bf92f3577b34da6a3ce929d0e0e4736", 1, 1),  # 32 hex digits
        ("from 10.9.8.7 port", 1, 1),  # IPv4 with other characters on both sides
        ("10.9.8.7", 4, 1),  # a bare address may be part of a longer dotted run
    ],
)
def test_id_needles_prune_without_pairs(
    db: Database, tmp_path: Path, clock: FakeClock, needle: str, scanned: int, found: int
) -> None:
    store = LogStore(db, tmp_path / "i", LogStoreOptions(retention_s=None), clock=clock)
    engine = LogQueryEngine(store)
    msgs = [
        "req=x3F2A9C1E-1B2C-4D3E-8F90-0123456789ABz done",
        "trace_id=4bf92f3577b34da6a3ce929d0e0e4736",
        "connect from 10.9.8.7 port 22",
        "other 1b2c 4d3e 8f90 0123456789ab 10 9 8 7 4bf92f35",
    ]
    for k, msg in enumerate(msgs):
        store.insert(LogBatch.from_records([LogRecord(k + 1, msg, server_id="h")]))
        store.flush()
    page = engine.query(LogQuery(filters=(LineFilter(LineOp.CONTAINS, needle),)))
    assert (page.archives_scanned, page.archives_pruned) == (scanned, 4 - scanned)
    assert len(page.batch) == found


def test_archives_without_id_keys_are_not_pruned_by_them(
    db: Database, tmp_path: Path, clock: FakeClock
) -> None:
    store = LogStore(db, tmp_path / "o", LogStoreOptions(retention_s=None), clock=clock)
    engine = LogQueryEngine(store)
    needle = "3f2a9c1e-1b2c-4d3e-8f90-0123456789ab"
    store.insert(LogBatch.from_records([LogRecord(1, f"id {needle}", server_id="h")]))
    store.flush()
    db.write(
        lambda con: con.execute(
            "UPDATE log_archives SET hash_version = replace(hash_version, '+ids', '')"
        )
    )
    assert [e.ids_indexed for e in store.entries()] == [False]
    page = engine.query(LogQuery(filters=(LineFilter(LineOp.CONTAINS, needle),)))
    assert page.batch.message == [f"id {needle}"]


_ID_LINES = [
    "req 3f2a9c1e-1b2c-4d3e-8f90-0123456789ab done",
    "upper 3F2A9C1E-1B2C-4D3E-8F90-0123456789AB stays text",
    "trace=4bf92f3577b34da6a3ce929d0e0e4736 span=00f067aa0ba902b7",
    "sha256 " + "ab" * 32 + " and glued x4bf92f3577b34da6a3ce929d0e0e4736y",
    "overlap "
    + "c" * 28
    + "3f2a9c1e-1b2c-4d3e-8f90-0123456789ab-11111111-2222-3333-4444-555555555555",
    "two 3f2a9c1e-1b2c-4d3e-8f90-0123456789ab3f2a9c1e-1b2c-4d3e-8f90-0123456789ab",
    "marker \x01 kept 3f2a9c1e-1b2c-4d3e-8f90-0123456789ab \x02",
    "no ids at all",
    "",
]


def test_ids_stored_as_binary_columns_round_trip(
    db: Database, tmp_path: Path, clock: FakeClock
) -> None:
    opts = LogStoreOptions(retention_s=None, compact_min_archives=2, flush_layout="idcols")
    store = LogStore(db, tmp_path / "b", opts, clock=clock)
    engine = LogQueryEngine(store)
    for half in (_ID_LINES[:5], _ID_LINES[5:]):
        recs = [LogRecord(k + 1, m, server_id="h") for k, m in enumerate(half)]
        store.insert(LogBatch.from_records(recs))
        store.flush()
    assert all(e.id_columns for e in store.entries())
    fresh = ", ".join(f"'{e.path}'" for e in store.entries())
    raw = db.read(
        f"SELECT count(*) FROM read_parquet([{fresh}]) "
        "WHERE uuids IS NOT NULL OR hexids IS NOT NULL"
    )
    assert raw[0][0] == 5  # the upper-case, marker and id-less lines stay text
    assert store.compact() is not None
    assert [e.layout for e in store.entries()] == ["tmpl"]
    page = engine.query(LogQuery(limit=100))
    assert sorted(page.batch.message) == sorted(_ID_LINES)
    raw = db.read(
        f"SELECT count(*) FILTER (WHERE verbatim), count(*) FILTER (WHERE len(uuids) > 0 "
        f"OR len(hexids) > 0) FROM read_parquet('{store.entries()[0].path}')"
    )
    # Ids glued to hex text (sha256/overlap/two) and the marker line are kept verbatim.
    assert raw[0] == (4, 2)
    needle = "1b2c-4d3e-8f90-0123456789ab done"
    hits = engine.query(LogQuery(filters=(LineFilter(LineOp.CONTAINS, needle),)))
    assert hits.batch.message == [_ID_LINES[0]]
    rx = engine.query(LogQuery(filters=(LineFilter(LineOp.REGEX, "glued x[0-9a-f]{32}y"),)))
    assert rx.batch.message == [_ID_LINES[3]]
