"""InfluxDB line protocol → SampleBatch (``/write``, ``/api/v2/write``).

``measurement[,tag=value...] field=value[,field=value...] [timestamp]``

* every numeric field becomes one sample of ``<measurement>_<field>`` (the
  VictoriaMetrics convention; characters outside ``[a-zA-Z0-9_:]`` become ``_``);
  tags become labels (names sanitised the same way, ``__name__`` refused);
* values: floats, integers (``12i``), unsigned (``12u``), booleans (``t``/``true``/
  ``f``/``false`` → 1/0); string fields are skipped and counted in
  :attr:`InfluxResult.skipped_strings`;
* the timestamp is an integer in ``precision`` units (``ns`` default; ``us``/``u``/``µ``,
  ``ms``, ``s``, ``m``, ``h``) and becomes milliseconds; absent means ``now_ms``;
* backslash escapes (``\\,``, ``\\ ``, ``\\=``) and quoted strings are honoured;
* a malformed line raises :class:`BadDataError` ``cannot parse influx line N: ...``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitoringserver.errors import BadDataError
from monitoringserver.model.labels import METRIC_NAME, Labels, sanitize_metric_name
from monitoringserver.model.samples import SampleBatch

__all__ = ["InfluxResult", "parse_influx", "precision_divisor"]

_DIVISORS_TO_MS = {
    "ns": 1_000_000.0,
    "n": 1_000_000.0,
    "us": 1_000.0,
    "u": 1_000.0,
    "µ": 1_000.0,
    "ms": 1.0,
    "s": 1e-3,
    "m": 1 / 60_000,
    "h": 1 / 3_600_000,
}
_BOOLS = {"t": 1.0, "T": 1.0, "true": 1.0, "True": 1.0, "TRUE": 1.0}
_BOOLS.update({"f": 0.0, "F": 0.0, "false": 0.0, "False": 0.0, "FALSE": 0.0})


def precision_divisor(precision: str | None) -> float:
    """Divide a timestamp in ``precision`` units by this to get milliseconds."""
    found = _DIVISORS_TO_MS.get((precision or "ns").strip())
    if found is None:
        raise BadDataError(
            f"cannot parse precision {precision!r}: expected one of ns, us, ms, s, m, h"
        )
    return found


@dataclass(frozen=True, slots=True)
class InfluxResult:
    batch: SampleBatch
    lines: int
    skipped_strings: int


def _split_unescaped(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quotes and not preceded by a backslash."""
    if "\\" not in text and '"' not in text:
        return text.split(sep)
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    if quoted:
        raise ValueError("unterminated string")
    out.append("".join(cur))
    return out


def _partition(text: str) -> tuple[str, str, str]:
    """``text.partition("=")`` at the first ``=`` not escaped by a backslash."""
    i = text.find("=")
    while i > 0 and text[i - 1] == "\\":
        i = text.find("=", i + 1)
    if i < 0:
        return text, "", ""
    return text[:i], "=", text[i + 1 :]


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ', =\\"':
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _value(text: str) -> float | None:
    """The sample value of a field, or None for a string field."""
    if not text:
        raise ValueError("empty field value")
    if text[0] == '"':
        return None
    last = text[-1]
    if last in "iu":
        return float(int(text[:-1], 10))
    found = _BOOLS.get(text)
    if found is not None:
        return found
    return float(text)


def parse_influx(
    body: str,
    *,
    now_ms: int,
    precision: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> InfluxResult:
    """Parse a line-protocol body. ``extra`` labels are added to every series."""
    divisor = precision_divisor(precision)
    index: dict[Labels, int] = {}
    numbers: list[int] = []
    stamps: list[int] = []
    values: list[float] = []
    strings = 0
    lines = 0
    for lineno, raw in enumerate(body.split("\n"), 1):
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        lines += 1
        try:
            parts = [p for p in _split_unescaped(line, " ") if p]
            if len(parts) not in (2, 3):
                raise ValueError("expected 'measurement[,tags] fields [timestamp]'")
            head = _split_unescaped(parts[0], ",")
            measurement = _unescape(head[0])
            if not measurement:
                raise ValueError("empty measurement")
            tags: list[tuple[str, str]] = list(extra)
            for tag in head[1:]:
                key, sep, value = _partition(tag)
                if not sep or not key:
                    raise ValueError(f"invalid tag {tag!r}")
                name = sanitize_metric_name(_unescape(key)).replace(":", "_")
                if name == METRIC_NAME:
                    raise ValueError("tag __name__ is reserved")
                tags.append((name, _unescape(value)))
            ts = round(int(parts[2], 10) / divisor) if len(parts) == 3 else now_ms
            for field_text in _split_unescaped(parts[1], ","):
                key, sep, value_text = _partition(field_text)
                if not sep or not key:
                    raise ValueError(f"invalid field {field_text!r}")
                number = _value(value_text)
                if number is None:
                    strings += 1
                    continue
                metric = sanitize_metric_name(f"{measurement}_{_unescape(key)}")
                labels = tuple(sorted(dict([*tags, (METRIC_NAME, metric)]).items()))
                labels = tuple(p for p in labels if p[1] != "")
                numbers.append(index.setdefault(labels, len(index)))
                stamps.append(ts)
                values.append(number)
        except (ValueError, OverflowError) as exc:
            raise BadDataError(f"cannot parse influx line {lineno}: {exc}") from exc
    batch = SampleBatch(
        list(index),
        np.asarray(numbers, dtype=np.uint32),
        np.asarray(stamps, dtype=np.int64),
        np.asarray(values, dtype=np.float64),
    )
    return InfluxResult(batch, lines, strings)
