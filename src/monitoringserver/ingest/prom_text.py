"""Prometheus text exposition (0.0.4) and OpenMetrics 1.0: parse into a SampleBatch, and write.

Parsing contract (:class:`ExpositionParser`):

* ``# HELP``/``# TYPE``/``# UNIT`` lines fill :attr:`Exposition.types` and ``helps``;
  other comments, blank lines and ``# EOF`` are skipped;
* a sample line is ``name{label="value",...} value [timestamp]``; values are floats,
  ``NaN``, ``+Inf``, ``-Inf``; label values understand ``\\\\``, ``\\"`` and ``\\n``;
* timestamps are int milliseconds in the text format and float seconds in OpenMetrics
  (``openmetrics=True``); samples without one get ``default_ts_ms`` and are flagged in
  :attr:`Exposition.has_ts` (``honor_timestamps``); OpenMetrics exemplars are ignored;
* a malformed line raises :class:`BadDataError` ``cannot parse exposition: line N: ...``;
  a series may repeat (with different timestamps, as in an import); the store keeps the
  last write per ``(series, timestamp)``.

Repeated scrapes mostly see the same series text, so the text before the value is cached
(``series_cache`` entries) → label tuple: a steady-state scrape creates no label objects.

:func:`format_exposition` writes samples back in the text format (used by ``/federate``,
the Pushgateway and seed-004 pages).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from monitoringserver.errors import BadDataError
from monitoringserver.model.labels import METRIC_NAME, Labels
from monitoringserver.model.samples import SampleBatch

__all__ = [
    "Exposition",
    "ExpositionParser",
    "family_of",
    "format_exposition",
    "format_value",
    "parse_float",
]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\.)*)"\s*([,}])')
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}
_SPECIAL = {
    "nan": math.nan,
    "+inf": math.inf,
    "inf": math.inf,
    "-inf": -math.inf,
}
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created", "_info", "_gcount", "_gsum")


def parse_float(text: str) -> float:
    """A Prometheus float (``NaN``, ``+Inf``, Go-style numbers); ``ValueError`` otherwise."""
    special = _SPECIAL.get(text.lower())
    if special is not None:
        return special
    if "_" in text:
        raise ValueError(f"invalid number {text!r}")
    return float(text)


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _ESCAPE.sub(lambda m: _UNESCAPE.get(m.group(1), "\\" + m.group(1)), value)


@dataclass(slots=True)
class Exposition:
    """One parsed exposition: the samples, and per-sample whether a timestamp was given."""

    batch: SampleBatch
    has_ts: np.ndarray
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)


class ExpositionParser:
    """Parses expositions; keeps a bounded series-text cache. Not thread-safe."""

    def __init__(self, series_cache: int = 200_000) -> None:
        self.series_cache = series_cache
        self._cache: dict[str, Labels] = {}

    def parse(self, text: str, *, default_ts_ms: int, openmetrics: bool = False) -> Exposition:
        if len(self._cache) > self.series_cache:
            self._cache = {}
        types: dict[str, str] = {}
        helps: dict[str, str] = {}
        index: dict[Labels, int] = {}
        numbers: list[int] = []
        values: list[float] = []
        stamps: list[int] = []
        has_ts: list[bool] = []
        cache = self._cache
        for lineno, raw in enumerate(text.split("\n"), 1):
            line = raw.strip()
            if not line:
                continue
            if line[0] == "#":
                self._comment(line, types, helps)
                continue
            try:
                head, value, ts = self._split(line, openmetrics)
                labels = cache.get(head)
                if labels is None:
                    labels = _parse_series(head)
                    cache[head] = labels
                numbers.append(index.setdefault(labels, len(index)))
                values.append(parse_float(value))
                if ts is None:
                    stamps.append(default_ts_ms)
                    has_ts.append(False)
                else:
                    stamps.append(round(parse_float(ts) * 1000) if openmetrics else int(ts, 10))
                    has_ts.append(True)
            except (ValueError, OverflowError) as exc:
                raise BadDataError(f"cannot parse exposition: line {lineno}: {exc}") from exc
        batch = SampleBatch(
            list(index),
            np.asarray(numbers, dtype=np.uint32),
            np.asarray(stamps, dtype=np.int64),
            np.asarray(values, dtype=np.float64),
        )
        return Exposition(batch, np.asarray(has_ts, dtype=bool), types, helps)

    @staticmethod
    def _comment(line: str, types: dict[str, str], helps: dict[str, str]) -> None:
        parts = line[1:].strip().split(None, 2)
        if len(parts) >= 3 and parts[0] == "TYPE":
            types[parts[1]] = parts[2].strip().lower()
        elif len(parts) >= 2 and parts[0] == "HELP":
            helps[parts[1]] = _unescape(parts[2]) if len(parts) == 3 else ""

    @staticmethod
    def _split(line: str, openmetrics: bool) -> tuple[str, str, str | None]:
        """``(series text, value text, timestamp text or None)``."""
        if openmetrics and " # " in line:
            cut = line.find(" # ", _series_end(line))
            if cut >= 0:
                line = line[:cut]
        close = line.rfind("}")
        if close >= 0:
            head, rest = line[: close + 1], line[close + 1 :]
        else:
            sep = min((i for i in (line.find(" "), line.find("\t")) if i >= 0), default=-1)
            if sep < 0:
                raise ValueError("expected a value after the metric name")
            head, rest = line[:sep], line[sep:]
        fields = rest.split()
        if len(fields) == 1:
            return head, fields[0], None
        if len(fields) == 2:
            return head, fields[0], fields[1]
        raise ValueError(f"expected 'value [timestamp]' after the series, got {rest.strip()!r}")


def _series_end(line: str) -> int:
    """Index just past the series text of ``line`` (labels scanned exactly)."""
    brace = line.find("{")
    space = line.find(" ")
    if brace < 0 or 0 <= space < brace:
        return space if space >= 0 else len(line)
    pos = brace + 1
    while True:
        m = _LABEL.match(line, pos)
        if m is None:
            close = line.find("}", pos)
            return close + 1 if close >= 0 else len(line)
        pos = m.end()
        if m.group(3) == "}":
            return pos


def _parse_series(head: str) -> Labels:
    brace = head.find("{")
    name = (head if brace < 0 else head[:brace]).strip()
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid metric name {name!r}")
    pairs: dict[str, str] = {METRIC_NAME: name}
    if brace >= 0:
        pos = brace + 1
        body = head[pos:].strip()
        if body != "}":
            while True:
                m = _LABEL.match(head, pos)
                if m is None:
                    raise ValueError(f"invalid labels in {head!r}")
                label = m.group(1)
                if label in pairs:
                    raise ValueError(f"duplicate label {label!r} in {head!r}")
                pairs[label] = _unescape(m.group(2))
                pos = m.end()
                if m.group(3) == "}":
                    break
                if head[pos:].strip() == "}":  # trailing comma
                    break
        elif head.rstrip()[-1] != "}":
            raise ValueError(f"invalid labels in {head!r}")
    return tuple(sorted((k, v) for k, v in pairs.items() if v != ""))


def family_of(name: str, types: Mapping[str, str]) -> str:
    """The metric family ``name`` belongs to (``x_bucket`` → ``x`` when ``x`` is typed)."""
    if name in types:
        return name
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in types:
            return name[: -len(suffix)]
    return name


def format_value(value: float) -> str:
    """A float as Prometheus writes it (``NaN``, ``+Inf``, integers without ``.0``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_exposition(
    samples: Iterable[tuple[Labels, float, int | None]],
    *,
    types: Mapping[str, str] | None = None,
    helps: Mapping[str, str] | None = None,
) -> str:
    """Text format 0.0.4: samples grouped by family, ``# HELP``/``# TYPE`` once per family.

    ``samples`` are ``(labels, value, ts_ms or None)``; families without a known type are
    written as ``untyped``. Output ends with a newline (empty input gives ``""``).
    """
    types = types or {}
    helps = helps or {}
    families: dict[str, list[str]] = {}
    for labels, value, ts in samples:
        name = ""
        rest: list[str] = []
        for k, v in labels:
            if k == METRIC_NAME:
                name = v
            else:
                rest.append(f'{k}="{_escape(v)}"')
        series = f"{name}{{{','.join(rest)}}}" if rest else name
        stamp = "" if ts is None else f" {ts}"
        families.setdefault(family_of(name, types), []).append(
            f"{series} {format_value(value)}{stamp}"
        )
    out: list[str] = []
    for family in sorted(families):
        if family in helps:
            text = helps[family].replace("\\", "\\\\").replace("\n", "\\n")
            out.append(f"# HELP {family} {text}")
        out.append(f"# TYPE {family} {types.get(family, 'untyped')}")
        out.extend(families[family])
    return "\n".join(out) + "\n" if out else ""
