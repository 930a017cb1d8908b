"""Influx line protocol parsing."""

from __future__ import annotations

import pytest

from monitoringserver.errors import BadDataError
from monitoringserver.ingest.influx import parse_influx, precision_divisor


def test_fields_tags_types_and_timestamp() -> None:
    body = (
        'cpu,host=h1,region=eu usage_idle=90.5,usage_user=2i,up=t,msg="x y, z" '
        "1700000000000000000\n"
        "\n# comment\n"
        "mem free=5u\n"
    )
    result = parse_influx(body, now_ms=42)
    rows = sorted(result.batch.rows())
    assert result.lines == 2
    assert result.skipped_strings == 1
    assert rows == [
        ((("__name__", "cpu_up"), ("host", "h1"), ("region", "eu")), 1700000000000, 1.0),
        ((("__name__", "cpu_usage_idle"), ("host", "h1"), ("region", "eu")), 1700000000000, 90.5),
        ((("__name__", "cpu_usage_user"), ("host", "h1"), ("region", "eu")), 1700000000000, 2.0),
        ((("__name__", "mem_free"),), 42, 5.0),
    ]


def test_escapes_precision_and_extra() -> None:
    body = r"my\ meas,ta\,g=v\ 1\=x f\=x=1 1700000000"
    (row,) = parse_influx(body, now_ms=0, precision="s", extra=(("db", "d"),)).batch.rows()
    assert row == (
        (("__name__", "my_meas_f_x"), ("db", "d"), ("ta_g", "v 1=x")),
        1700000000000,
        1.0,
    )


@pytest.mark.parametrize(
    ("precision", "divisor"), [(None, 1e6), ("ns", 1e6), ("us", 1e3), ("ms", 1.0), ("s", 1e-3)]
)
def test_precision(precision: str | None, divisor: float) -> None:
    assert precision_divisor(precision) == divisor


@pytest.mark.parametrize(
    "line",
    [
        "cpu",
        "cpu a=",
        "cpu,host a=1",
        "cpu a=1 notatime",
        ",x=1 a=1",
        'cpu a="open',
        "cpu a=1x",
        "cpu,__name__=x a=1",
        "cpu =1",
    ],
)
def test_errors(line: str) -> None:
    with pytest.raises(BadDataError, match="cannot parse influx line 1: "):
        parse_influx(line, now_ms=0)
    with pytest.raises(BadDataError, match="precision"):
        precision_divisor("weeks")
