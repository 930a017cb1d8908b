"""Bloom keys found with numpy (``tokenkeys``) equal the SQL definition, and a needle's
probe keys are always among the keys of a line that contains it."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoringserver.logs.bloom import TokenBloom
from monitoringserver.logs.patterns import IDS_SQL, TOKENS_SQL, needle_id_tokens, needle_tokens
from monitoringserver.logs.tokenkeys import key_hashes, line_key_hashes

LINES = [
    "req 3F2A9C1E-0B4D-4E5F-8A6B-7C8D9E0F1A2B done",
    "id=3f2a9c1e-0b4d-4e5f-8a6b-7c8d9e0f1a2bdeadbeef-00",
    "trace 4bf92f3577b34da6a3ce929d0e0e47364bf92f35 x",
    "from 10.0.0.1 port 22 and 192.168.1.254:8080 via 1.2.3.4.5",
    "v1.2.3.4-beta 10.0.0.1a 10.0.0.10.0.0.1 ab10.20.30.40cd 1.2.3.4",
    "glued 4bf92f3577b34da6a3ce929d0e0e4736.10.1.2.3-ffffffffffffffffffffffffffffffff",
    "née 10.1.1.1 İd 3f2a9c1e-0b4d-4e5f-8a6b-7c8d9e0f1a2b Kelvin",
    '{"request_id":"a3e1c7f0-9a1b-4c2d-8e3f-001122334455","trace_id":"00f067aa0ba902b7aa"}',
    "---------------------------------------- 1234567 .......",
    "a-very-long-token-" + "x" * 100 + "-and-more " + "Y" * 300,
    "multi\nline 10.2.3.4\ttab",
    "",
    "ab",
]


def _sql_keys(con: duckdb.DuckDBPyConnection, lines: list[str]) -> set[int]:
    con.execute("CREATE OR REPLACE TEMP TABLE m (message VARCHAR)")
    con.executemany("INSERT INTO m VALUES (?)", [[x] for x in lines])
    union = f"{TOKENS_SQL} UNION ALL {IDS_SQL}".replace("{src}", "m")
    tokens = [r[0] for r in con.execute(f"SELECT DISTINCT tok FROM ({union})").fetchall()]
    return set(key_hashes(tokens).tolist())


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


@pytest.mark.parametrize("line", LINES)
def test_keys_of_one_line_equal_the_sql_keys(con: duckdb.DuckDBPyConnection, line: str) -> None:
    assert set(line_key_hashes([line]).tolist()) == _sql_keys(con, [line])


def test_keys_of_many_lines_are_distinct_and_equal_the_sql_keys(
    con: duckdb.DuckDBPyConnection,
) -> None:
    got = line_key_hashes(LINES * 3)
    assert len(got) == len(set(got.tolist()))
    assert set(got.tolist()) == _sql_keys(con, LINES)
    assert len(line_key_hashes([])) == 0
    for chunk_lines in (1, 2, 5):  # chunks are merged into one distinct set
        assert np.array_equal(line_key_hashes(LINES * 3, chunk_lines=chunk_lines), got)
    assert len(key_hashes([])) == 0


def test_distinct_ids_get_distinct_hashes() -> None:
    # ids that share their first and last eight characters still differ
    ids = [f"aaaaaaaa-{a}-{b}-{c}-bbbbbbbbbbbb" for a, b, c in [("1b2c", "4d3e", "8f90")] * 1]
    ids += ["aaaaaaaa-4d3e-8f90-1b2c-bbbbbbbbbbbb", "aaaaaaaa-8f90-1b2c-4d3e-bbbbbbbbbbbb"]
    ids += ["0123456789abcdef" + "f" * 16, "0123456789abcdef" + "e" * 16]
    assert len(set(key_hashes(ids).tolist())) == len(ids)
    # upper-case input hashes like its lower-case form
    assert key_hashes(["ABCdef"])[0] == key_hashes(["abcdef"])[0]


_ALPHABET = st.sampled_from(
    [*list("0123456789abcdefABCDEF-.:/ =\nxyzXYZ_éİK"), "10.0.0.1", "3f2a9c1e-0b4d"]
)
_LINES = st.lists(
    st.one_of(
        st.lists(_ALPHABET, max_size=60).map("".join),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=80),
        st.uuids().map(lambda u: f"id={u} x"),
        st.uuids().map(lambda u: f"t {u.hex.upper()}{u.hex[:5]}-{u}"),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=_LINES, data=st.data())
def test_arbitrary_lines_match_sql_and_never_miss_a_needle(
    con: duckdb.DuckDBPyConnection, lines: list[str], data: st.DataObject
) -> None:
    got = line_key_hashes(lines)
    if all(x.isascii() for x in lines):
        # DuckDB's lower() turns a few non-ASCII letters into ASCII ones ("\u0130" -> "i"),
        # so only ASCII lines have exactly the SQL keys; the needle property holds for all.
        assert set(got.tolist()) == _sql_keys(con, lines)
    bloom = TokenBloom.build(got)
    for _ in range(3):
        text = data.draw(st.sampled_from(lines))
        lo = data.draw(st.integers(0, len(text)))
        hi = data.draw(st.integers(lo, len(text)))
        needle = text[lo:hi]
        singles, _ = needle_tokens(needle)
        probe = key_hashes(singles + needle_id_tokens(needle))
        assert set(probe.tolist()) <= set(got.tolist())
        assert bloom.might_contain_all(probe)


def test_merged_filters_hold_every_source_key_and_round_trip() -> None:
    rnd = np.random.default_rng(3)
    parts = [rnd.integers(0, 2**63, size=n, dtype=np.uint64) for n in (1000, 10, 0)]
    blooms = [TokenBloom.build(p) for p in parts]
    merged = TokenBloom.merged(blooms)
    assert merged.segments == 3
    again = TokenBloom.from_bytes(merged.to_bytes())
    assert len(again) == len(merged.to_bytes()) == sum(len(b) for b in blooms) - 4
    for p in parts:
        for key in p[:50]:
            assert again.might_contain_all(np.array([key], dtype=np.uint64))
    # keys of two different segments are never "all in one line" for sure
    pair = np.array([parts[0][0], parts[1][0]], dtype=np.uint64)
    absent = rnd.integers(0, 2**63, size=200, dtype=np.uint64)
    misses = sum(not again.might_contain_all(np.array([a], dtype=np.uint64)) for a in absent)
    assert misses > 180
    assert TokenBloom.merged([merged, blooms[0]]).segments == 4
    assert again.might_contain_all(np.empty(0, dtype=np.uint64))
    assert isinstance(again.might_contain_all(pair), bool)
    with pytest.raises(ValueError, match="at least one"):
        TokenBloom.merged([])


@pytest.mark.parametrize(
    "data",
    [
        b"LBF2" + (1).to_bytes(4, "little"),  # a segment missing
        b"LBF2" + (0).to_bytes(4, "little"),  # no segment
        b"LBF2"
        + (1).to_bytes(4, "little")
        + (7).to_bytes(4, "little")
        + (64).to_bytes(8, "little"),
        b"LBF2"
        + (1).to_bytes(4, "little")
        + (0).to_bytes(4, "little")
        + (64).to_bytes(8, "little")
        + bytes(8),
    ],
)
def test_corrupt_merged_filters_are_refused(data: bytes) -> None:
    from monitoringserver.errors import StorageError

    with pytest.raises(StorageError, match="cannot read bloom filter"):
        TokenBloom.from_bytes(data)
