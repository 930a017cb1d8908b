"""count_series, labels, series, message parsers and numeric label filters."""

from __future__ import annotations

import pytest

from monitoringserver.errors import BadDataError, StorageError
from monitoringserver.logs.api import LogQuery, NumericFilter
from monitoringserver.logs.query import LogQueryEngine
from monitoringserver.logs.store import LogStore
from monitoringserver.model.logs import LogBatch, LogRecord
from monitoringserver.model.matchers import Matcher


def _fill(store: LogStore) -> None:
    recs = [
        LogRecord(0, '{"status": 500, "path": "/a"}', "h1", "error", "web", "f", {"job": "x"}),
        LogRecord(10, '{"status": 200, "path": "/b"}', "h1", "info", "web", "f", {"job": "x"}),
        LogRecord(20, 'status=404 path="/c d"', "h2", "warning", "", "g", {"env": "prod"}),
        LogRecord(30, "plain 1", "h2", "info", "", "g", {}),
    ]
    store.insert(LogBatch.from_records(recs[:2]))
    store.flush()
    store.insert(LogBatch.from_records(recs[2:]))


def test_count_series_groups_and_buckets(store: LogStore, engine: LogQueryEngine) -> None:
    _fill(store)
    out = engine.count_series(LogQuery(start_ms=0, end_ms=39), 20, ["server_id"])
    got = {s.labels["server_id"]: (s.ts_ms, s.lines) for s in out}
    assert got == {"h1": ([0], [2]), "h2": ([20], [2])}
    total = engine.count_series(LogQuery(start_ms=0, end_ms=39), 10, [])
    assert total[0].labels == {}
    assert (total[0].ts_ms, total[0].lines) == ([0, 10, 20, 30], [1, 1, 1, 1])
    assert total[0].bytes[3] == len("plain 1")
    full = engine.count_series(LogQuery(start_ms=0, end_ms=39), 40, None)
    assert {tuple(sorted(s.labels.items())) for s in full} >= {
        (("level", "info"), ("logger", "web"), ("server_id", "h1"), ("source", "f"))
    }
    with pytest.raises(BadDataError):
        engine.count_series(LogQuery(), 10, None)


@pytest.mark.parametrize(
    ("query", "count"),
    [
        (LogQuery(parsers=("json",), numeric=(NumericFilter("status", ">=", 500),)), 1),
        (LogQuery(parsers=("json",), matchers=(Matcher.eq("path", "/b"),)), 1),
        (LogQuery(parsers=("logfmt",), matchers=(Matcher.eq("path", "/c d"),)), 1),
        (LogQuery(parsers=("logfmt",), numeric=(NumericFilter("status", "==", 404),)), 1),
        (LogQuery(parsers=("json", "logfmt"), numeric=(NumericFilter("status", "<", 450),)), 2),
        (LogQuery(matchers=(Matcher.eq("env", "prod"),)), 1),
        (LogQuery(matchers=(Matcher.eq("detected_level", "warning"),)), 1),
    ],
)
def test_parsers_and_numeric_filters(
    store: LogStore, engine: LogQueryEngine, query: LogQuery, count: int
) -> None:
    _fill(store)
    assert len(engine.query(query).batch) == count


def test_labels_and_series(store: LogStore, engine: LogQueryEngine) -> None:
    _fill(store)
    assert engine.label_names(None, None) == [
        "env",
        "job",
        "level",
        "logger",
        "server_id",
        "source",
    ]
    assert engine.label_names(20, 40) == ["env", "level", "server_id", "source"]
    assert engine.label_values("server_id", None, None) == ["h1", "h2"]
    assert engine.label_values("job", None, None) == ["x"]
    assert engine.label_values("level", 15, None) == ["info", "warning"]
    series = engine.series(LogQuery(matchers=(Matcher.eq("server_id", "h2"),)))
    assert series == [
        {"level": "info", "server_id": "h2", "source": "g"},
        {"level": "warning", "server_id": "h2", "source": "g"},
    ]
    assert len(engine.archives()) == 1
    with pytest.raises(BadDataError):
        engine.query(LogQuery(parsers=("xml",), matchers=(Matcher.eq("a", "b"),)))
    with pytest.raises(BadDataError):
        NumericFilter("a", "~", 1)


def test_query_gives_up_when_archives_keep_changing(
    store: LogStore, engine: LogQueryEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(store)
    monkeypatch.setattr(store, "generation", lambda: None)
    with pytest.raises(StorageError, match="kept changing"):
        engine.query(LogQuery())


def test_deleted_archive_file_is_retried(store: LogStore, engine: LogQueryEngine) -> None:
    _fill(store)
    calls = {"n": 0}
    real = store.entries

    def flaky(flt=None, *, blooms=True):  # type: ignore[no-untyped-def]
        entries = real(flt, blooms=blooms)
        calls["n"] += 1
        if calls["n"] == 1 and entries:
            entries[0].path.rename(entries[0].path.with_suffix(".moved"))
        elif calls["n"] == 3:
            for p in store.directory.glob("*.moved"):
                p.rename(p.with_suffix(".parquet"))
        return entries

    store.entries = flaky  # type: ignore[method-assign]
    assert len(engine.query(LogQuery()).batch) == 4
