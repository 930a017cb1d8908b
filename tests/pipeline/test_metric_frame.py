from __future__ import annotations

import json
import struct

import duckdb
import numpy as np
import pytest

from monitoringserver.errors import StorageError
from monitoringserver.metrics.index import NewSeries, SeriesBlock
from monitoringserver.pipeline.metric_frame import (
    INSERT_SERIES,
    MetricFrame,
    SampleStage,
    decode_frame,
    encode_frame,
    series_columns,
    series_rows,
)

EMPTY_IDS = np.empty(0, dtype=np.uint64)
EMPTY_TS = np.empty(0, dtype=np.int64)
EMPTY_VALUES = np.empty(0, dtype=np.float64)


@pytest.mark.parametrize(
    ("sids", "ts"),
    [
        ([1, 2, 3], [1_700_000_000_000, 1_700_000_000_010, 1_700_000_000_005]),
        ([2**40, 1, 2**63], [0, 2**40, -5]),  # wide ids and a wide time span
        ([], []),
    ],
)
def test_frame_round_trip(sids: list[int], ts: list[int]) -> None:
    frame = MetricFrame(
        np.array(sids, dtype=np.uint64),
        np.array(ts, dtype=np.int64),
        np.array([float("nan"), -0.0, 1.5][: len(sids)], dtype=np.float64),
        (
            SeriesBlock(7, [(("__name__", "m"), ("a", "ü"))], "src"),
            SeriesBlock(8, [(("__name__", "n"),), (("__name__", "n"), ("b", '"\\'))], "other"),
        ),
        "agent-1",
        42,
    )
    out = decode_frame(encode_frame(frame))
    assert out.series_ids.tolist() == sids
    assert out.ts_ms.tolist() == ts
    assert np.array_equal(out.values.view(np.uint64), frame.values.view(np.uint64))
    assert out.new_series == frame.new_series
    assert out.new_series == (
        NewSeries(7, (("__name__", "m"), ("a", "ü")), "src"),
        NewSeries(8, (("__name__", "n"),), "other"),
        NewSeries(9, (("__name__", "n"), ("b", '"\\')), "other"),
    )
    assert (out.agent_id, out.batch_seq) == ("agent-1", 42)


def _v1_record(defs: object, sids: list[int], ts: list[int], values: list[float]) -> bytes:
    """A record as version 1 wrote it (one JSON entry per new series)."""
    text = json.dumps(defs).encode()
    return b"".join(
        [
            struct.pack("<BBq", 1, 0, 5),
            struct.pack("<H", 1),
            b"a",
            struct.pack("<I", len(text)),
            text,
            struct.pack("<I", len(sids)),
            np.array(sids, dtype=np.uint64).tobytes(),
            np.array(ts, dtype=np.int64).tobytes(),
            np.array(values, dtype=np.float64).tobytes(),
        ]
    )


def test_version_1_records_still_decode() -> None:
    defs = [[3, "src", [["__name__", "m"], ["a", "b"]]], [4, "x", [["__name__", "n"]]]]
    out = decode_frame(_v1_record(defs, [3, 4], [10, 20], [1.0, 2.0]))
    assert out.new_series == (
        NewSeries(3, (("__name__", "m"), ("a", "b")), "src"),
        NewSeries(4, (("__name__", "n"),), "x"),
    )
    assert (out.series_ids.tolist(), out.ts_ms.tolist(), out.values.tolist()) == (
        [3, 4],
        [10, 20],
        [1.0, 2.0],
    )
    assert (out.agent_id, out.batch_seq) == ("a", 5)


def _v2_with_sections(blocks: bytes, labels: bytes) -> bytes:
    return b"".join(
        [
            struct.pack("<BBq", 2, 3, -1),
            struct.pack("<H", 0),
            struct.pack("<I", len(blocks)),
            blocks,
            struct.pack("<I", len(labels)),
            labels,
            struct.pack("<I", 0),
            struct.pack("<q", 0),
        ]
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x09\x00" + b"\x00" * 8,
        b"\x01\x03" + b"\x00" * 5,
        _v2_with_sections(b'[[0,"s",2]]', b'[[[["__name__","m"]]]]'),  # a label set short
        _v2_with_sections(b'[[0,"s",1]]', b'[[[["__name__","m"]],[["__name__","n"]]]]'),
        _v2_with_sections(b'[[0,"s",1]]', b"[]"),  # a block without its label sets
        _v2_with_sections(b"[]", b'[[[["__name__","m"]]]]'),  # label sets without a block
        _v2_with_sections(b'[[0,"s"]]', b"[[]]"),
        _v2_with_sections(b'[[0,"s",1]]', b'[[[["__name__"]]]]'),
        _v2_with_sections(b"[]", b"[]")[:-12] + struct.pack("<I", 99),  # runs past the end
    ],
)
def test_bad_records_raise_storage_error(payload: bytes) -> None:
    with pytest.raises(StorageError, match="cannot decode WAL record"):
        decode_frame(payload)


def _inserted(frames: list[MetricFrame]) -> list[tuple[int, list[list[str]], str]]:
    """What :data:`INSERT_SERIES` makes of the frames' series columns."""
    defs = series_columns(frames)
    assert defs is not None
    with duckdb.connect() as con:
        con.execute(
            "CREATE TABLE metric_series (id UBIGINT PRIMARY KEY, labels VARCHAR NOT NULL, "
            "source VARCHAR NOT NULL, min_ts BIGINT, max_ts BIGINT)"
        )
        con.execute(INSERT_SERIES)
        con.execute(INSERT_SERIES)  # a replay inserting the same series again is ignored
        rows = con.execute("SELECT id, labels, source FROM metric_series ORDER BY id").fetchall()
    del defs
    return [(int(i), json.loads(text), str(source)) for i, text, source in rows]


def test_prepared_series_rows_encode_alike_and_feed_the_series_columns() -> None:
    new = (
        SeriesBlock(3, [(("__name__", "m"), ("a", 'ü"\\\u2028\x00'))], "src"),
        SeriesBlock(4, [(("__name__", "n"),), (("__name__", "p"),)], "other"),
    )
    bare = MetricFrame(EMPTY_IDS, EMPTY_TS, EMPTY_VALUES, new)
    prepared = MetricFrame(EMPTY_IDS, EMPTY_TS, EMPTY_VALUES, new, rows=series_rows(new))
    assert encode_frame(prepared) == encode_frame(bare)
    later = MetricFrame(
        EMPTY_IDS, EMPTY_TS, EMPTY_VALUES, (SeriesBlock(6, [(("__name__", "o"),)], "src"),)
    )
    assert series_columns([MetricFrame(EMPTY_IDS, EMPTY_TS, EMPTY_VALUES)]) is None
    assert _inserted([prepared, MetricFrame(EMPTY_IDS, EMPTY_TS, EMPTY_VALUES), later]) == [
        (3, [["__name__", "m"], ["a", 'ü"\\\u2028\x00']], "src"),
        (4, [["__name__", "n"]], "other"),
        (5, [["__name__", "p"]], "other"),
        (6, [["__name__", "o"]], "src"),
    ]


def test_a_queued_frame_without_its_series_objects_still_feeds_the_series_columns() -> None:
    new = (SeriesBlock(7, [(("__name__", "m"),)], "src"),)
    stripped = MetricFrame(EMPTY_IDS, EMPTY_TS, EMPTY_VALUES, (), rows=series_rows(new))
    assert _inserted([stripped]) == [(7, [["__name__", "m"]], "src")]
    # No rows and no series: nothing to insert.
    assert (
        series_columns([MetricFrame(EMPTY_IDS, EMPTY_TS, EMPTY_VALUES, (), rows=series_rows(()))])
        is None
    )


@pytest.mark.parametrize(
    ("sids", "ts"),
    [
        ([5, 3, 9], [1_700_000_000_010, 1_700_000_000_000, 1_700_000_000_020]),
        ([2**33, 1], [0, 2**40]),  # wide ids, wide span: 64-bit columns
    ],
)
def test_given_bounds_give_the_same_record(sids: list[int], ts: list[int]) -> None:
    frame = MetricFrame(
        np.array(sids, dtype=np.uint64),
        np.array(ts, dtype=np.int64),
        np.arange(len(sids), dtype=np.float64),
    )
    record = encode_frame(frame, (max(sids), min(ts), max(ts)))
    assert record == encode_frame(frame)
    out = decode_frame(record)
    assert (out.series_ids.tolist(), out.ts_ms.tolist()) == (sids, ts)


def _batch(first: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.arange(first, first + n, dtype=np.uint64)
    return ids, ids.astype(np.int64) * 10, ids.astype(np.float64) / 2


@pytest.mark.parametrize(
    ("chunk_rows", "sizes", "runs"),
    [
        (100, [3, 0, 4, 5], 1),  # one chunk: views, no copy
        (5, [3, 4, 5], 3),  # each batch overflows the chunk: a new chunk each
        (4, [2, 2, 9, 1], 3),  # a batch larger than a chunk gets one of its own
    ],
)
def test_sample_stage_keeps_batches_in_order(chunk_rows: int, sizes: list[int], runs: int) -> None:
    stage = SampleStage(chunk_rows)
    batches, staged, first = [], [], 0
    for n in sizes:
        cols = _batch(first, n)
        first += n
        batches.append(cols)
        staged.append(stage.add(*cols))
    assert [s is None for s in staged] == [n == 0 for n in sizes]
    assert len({id(s.chunk) for s in staged if s is not None}) == runs
    sids, ts, values = SampleStage.columns(staged)
    for got, i in ((sids, 0), (ts, 1), (values, 2)):
        assert got.tolist() == np.concatenate([b[i] for b in batches]).tolist()
    chunk = next(s.chunk for s in staged if s is not None)
    assert np.shares_memory(sids, chunk.sids) == (runs == 1)
    # A later slice of the same chunk alone is a view of it too.
    assert SampleStage.columns(staged[-1:])[1].tolist() == batches[-1][1].tolist()


def test_sample_stage_edge_cases() -> None:
    assert [len(c) for c in SampleStage.columns([None])] == [0, 0, 0]
    with pytest.raises(ValueError, match="chunk_rows 0"):
        SampleStage(0)
