"""The archive id keys computed in DuckDB (``IDS_SQL``) equal their definition."""

from __future__ import annotations

import re

import duckdb
import pytest

from monitoringserver.logs.patterns import IDS_SQL, TOKENS_SQL

_UUID = re.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX32 = re.compile("[0-9a-f]{32}")
_IPV4 = re.compile("[0-9]{1,3}[.][0-9]{1,3}[.][0-9]{1,3}[.][0-9]{1,3}")


def _reference(message: str) -> set[str]:
    """The definition: UUID and 32-hex windows of maximal ``[0-9a-f-]`` runs of the
    lower-cased line, and maximal ``[0-9.]`` runs that are IPv4 addresses."""
    low = message.lower()
    keys: set[str] = set()
    for run in re.findall("[0-9a-f-]+", low):
        keys.update(w for i in range(len(run) - 35) if _UUID.fullmatch(w := run[i : i + 36]))
        keys.update(w for i in range(len(run) - 31) if _HEX32.fullmatch(w := run[i : i + 32]))
    keys.update(r for r in re.findall("[0-9.]+", message) if _IPV4.fullmatch(r))
    return keys


MESSAGES = [
    "req 3F2A9C1E-0B4D-4E5F-8A6B-7C8D9E0F1A2B done",
    "id=3f2a9c1e-0b4d-4e5f-8a6b-7c8d9e0f1a2bdeadbeef-00",
    "trace 4bf92f3577b34da6a3ce929d0e0e47364bf92f35 x",
    "from 10.0.0.1 port 22 and 192.168.1.254:8080 via 1.2.3.4.5",
    "v1.2.3.4-beta 10.0.0.1a 10.0.0.10.0.0.1 ab10.20.30.40cd",
    "glued 4bf92f3577b34da6a3ce929d0e0e4736.10.1.2.3-ffffffffffffffffffffffffffffffff",
    "née 10.1.1.1 İd 3f2a9c1e-0b4d-4e5f-8a6b-7c8d9e0f1a2b Kelvin",
    '{"request_id":"a3e1c7f0-9a1b-4c2d-8e3f-001122334455","trace_id":"00f067aa0ba902b7aa"}',
    "---------------------------------------- 1234567 .......",
    "",
]


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute("CREATE TABLE m (message VARCHAR)")
    c.executemany("INSERT INTO m VALUES (?)", [[m] for m in MESSAGES])
    return c


@pytest.mark.parametrize("message", MESSAGES)
def test_id_keys_of_one_line(con: duckdb.DuckDBPyConnection, message: str) -> None:
    src = "(SELECT ? AS message)"
    rows = con.execute(IDS_SQL.replace("{src}", src), [message]).fetchall()
    assert {r[0] for r in rows} == _reference(message)


def test_id_keys_inside_the_archive_key_query(con: duckdb.DuckDBPyConnection) -> None:
    union = f"{TOKENS_SQL} UNION ALL {IDS_SQL}".replace("{src}", "m")
    got = {r[0] for r in con.execute(f"SELECT DISTINCT tok FROM ({union})").fetchall()}
    expected = set().union(*(_reference(m) for m in MESSAGES))
    assert expected <= got
