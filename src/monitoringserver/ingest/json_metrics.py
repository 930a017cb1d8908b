"""Seed-002 JSON metrics: bytes in, one columnar :class:`SampleBatch` out.

Body: one object or a list of objects
``{"server_id": str, "timestamp"?: RFC 3339 | epoch s | epoch ms, "metrics": {...},
"labels"?: {str: str}}``. ``metrics`` maps names to finite numbers or to nested objects
whose keys are joined with ``_`` (``disk_io.read_iops`` → ``disk_io_read_iops``);
characters outside ``[a-zA-Z0-9_:]`` become ``_``. Each sample's series is
``{__name__=<flattened name>, server_id=<server_id>, <labels>...}``.

Rules:

* numeric timestamps below ``1e11`` are epoch seconds, larger ones epoch milliseconds;
  strings are RFC 3339 (``Z`` or an offset; no offset means UTC); absent means *now*;
* values must be JSON numbers: strings (including ``"NaN"``/``"Inf"``), booleans and
  ``null`` are refused; numbers too large for a float64 are refused;
* unknown top-level fields are ignored;
* a structurally invalid body (malformed JSON, wrong types, bad names, bad timestamp
  syntax) is refused as a whole with :class:`BadDataError` naming the place
  (``$[3].metrics.cpu: ...``); out-of-window timestamps are per-item problems: those
  items' samples are counted under ``too_old`` / ``too_far_in_future`` and the rest of the
  batch is kept (see :func:`split_by_window`).

Performance: no per-sample objects. Each distinct ``(server_id, labels, name)`` gets a
stable integer in :class:`SeriesCache` (label sets are built once, on first sight); a
request turns into a list of those integers, a list of values and per-item timestamps,
which numpy turns into the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError
from monitoringserver.model.labels import (
    METRIC_NAME,
    Labels,
    get,
    make_labels,
    sanitize_metric_name,
    validate_label_name,
)
from monitoringserver.model.samples import SampleBatch
from monitoringserver.util.timestamps import parse_timestamp_ms

__all__ = [
    "JsonMetricsDecoder",
    "ParsedMetrics",
    "SeriesCache",
    "WindowResult",
    "split_by_server",
    "split_by_window",
]

_RESERVED_LABELS = frozenset({METRIC_NAME, "server_id"})
_MAX_DEPTH = 8


class _Item(msgspec.Struct):
    server_id: str
    metrics: dict[str, Any]
    timestamp: str | int | float | None = None
    labels: dict[str, str] | None = None


_BodyType = _Item | list[_Item]


class SeriesCache:
    """Maps ``(server_id, extra labels)`` and a raw metric name to a stable series number.

    Numbers index :attr:`labels`, which holds each series' canonical label set. When more
    than ``max_series`` entries accumulate the cache starts over (bounded memory) and
    :attr:`generation` increases; numbers are only meaningful with their generation.

    The cache also remembers which series were stored successfully (:meth:`mark_stored`):
    a batch made only of such series cannot create series, so the caller may skip the
    per-server split that attributes new series to their source.
    """

    def __init__(self, max_series: int = 500_000) -> None:
        self.max_series = max_series
        self.generation = 0
        self.labels: list[Labels] = []
        self._by_base: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, int]] = {}
        self._stored = np.zeros(1024, dtype=np.bool_)

    def __len__(self) -> int:
        return len(self.labels)

    def names_for(self, server_id: str, extra: tuple[tuple[str, str], ...]) -> dict[str, int]:
        """The name → series-number map of one ``(server_id, labels)`` pair."""
        base = (server_id, extra)
        names = self._by_base.get(base)
        if names is None:
            names = {}
            self._by_base[base] = names
        return names

    def add(
        self,
        names: dict[str, int],
        raw_name: str,
        server_id: str,
        extra: tuple[tuple[str, str], ...],
    ) -> int:
        number = len(self.labels)
        labels = make_labels(
            [(METRIC_NAME, sanitize_metric_name(raw_name)), ("server_id", server_id), *extra]
        )
        self.labels.append(labels)
        names[raw_name] = number
        if number >= len(self._stored):
            self._stored = np.concatenate([self._stored, np.zeros_like(self._stored)])
        return number

    def all_stored(self, numbers: NDArray[np.int64], generation: int) -> bool:
        """Whether every series in ``numbers`` (of ``generation``) was stored before."""
        return generation == self.generation and bool(self._stored[numbers].all())

    def mark_stored(self, numbers: NDArray[np.int64], generation: int) -> None:
        if generation == self.generation:
            self._stored[numbers] = True

    def maybe_reset(self) -> None:
        """Start over when full; call between decodes only."""
        if len(self.labels) > self.max_series:
            self.labels = []
            self._by_base = {}
            self._stored = np.zeros(1024, dtype=np.bool_)
            self.generation += 1


@dataclass(frozen=True, slots=True)
class ParsedMetrics:
    """A decoded body: the batch, and for every sample the index of its item in the body.

    ``series_numbers[i]`` is the :class:`SeriesCache` number of ``batch.series[i]`` in
    cache generation ``generation``.
    """

    batch: SampleBatch
    item_of_sample: NDArray[np.int64]
    items: int
    series_numbers: NDArray[np.int64]
    generation: int


@dataclass(frozen=True, slots=True)
class WindowResult:
    """Samples inside the accepted window, and what was refused (counts by reason)."""

    batch: SampleBatch
    rejected: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Walk:
    """What flattening one item needs besides the current level."""

    names: dict[str, int]
    server_id: str
    extra: tuple[tuple[str, str], ...]
    numbers: list[int]
    values: list[float]
    where: str


class JsonMetricsDecoder:
    """Decodes seed-002 bodies. One instance per process; not thread-safe (event loop only)."""

    def __init__(self, cache: SeriesCache | None = None) -> None:
        self.cache = cache if cache is not None else SeriesCache()
        self._decoder = msgspec.json.Decoder(_BodyType)

    def decode(self, body: bytes, *, now_ms: int) -> ParsedMetrics:
        """Parse ``body``.

        Raises :class:`BadDataError` ``cannot parse metrics body: <where>: <what>``.
        """
        try:
            decoded = self._decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise BadDataError(f"cannot parse metrics body: {_msgspec_where(exc)}") from exc
        except msgspec.DecodeError as exc:
            raise BadDataError(f"cannot parse metrics body: $: {exc}") from exc
        items = decoded if isinstance(decoded, list) else [decoded]
        single = not isinstance(decoded, list)
        self.cache.maybe_reset()
        numbers: list[int] = []
        values: list[float] = []
        counts: list[int] = []
        item_ts: list[int] = []
        for i, item in enumerate(items):
            where = "$" if single else f"$[{i}]"
            if not item.server_id:
                raise BadDataError(
                    f"cannot parse metrics body: {where}.server_id: must not be empty"
                )
            try:
                item_ts.append(parse_timestamp_ms(item.timestamp, now_ms=now_ms))
            except (TypeError, ValueError) as exc:
                raise BadDataError(f"cannot parse metrics body: {where}.timestamp: {exc}") from exc
            extra = _extra_labels(item.labels, where) if item.labels else ()
            names = self.cache.names_for(item.server_id, extra)
            before = len(values)
            self._flatten(
                item.metrics, "", "", _Walk(names, item.server_id, extra, numbers, values, where)
            )
            counts.append(len(values) - before)
        return self._build(numbers, values, counts, item_ts, items=len(items))

    def _flatten(self, metrics: dict[str, Any], prefix: str, dotted: str, ctx: _Walk) -> None:
        names = ctx.names
        get = names.get
        add_number = ctx.numbers.append
        add_value = ctx.values.append
        for key, value in metrics.items():
            kind = type(value)
            if kind is float or kind is int:
                raw = prefix + key if prefix else key
                number = get(raw)
                if number is None:
                    if not raw:
                        raise BadDataError(
                            f"cannot parse metrics body: {ctx.where}.metrics: empty metric name"
                        )
                    number = self.cache.add(names, raw, ctx.server_id, ctx.extra)
                add_number(number)
                add_value(value)
            elif kind is dict:
                if dotted.count(".") >= _MAX_DEPTH:
                    raise BadDataError(
                        f"cannot parse metrics body: {ctx.where}.metrics.{dotted}{key}: "
                        f"nested deeper than {_MAX_DEPTH} levels"
                    )
                self._flatten(value, f"{prefix}{key}_", f"{dotted}{key}.", ctx)
            else:
                raise BadDataError(
                    f"cannot parse metrics body: {ctx.where}.metrics.{dotted}{key}: "
                    f"expected a number or an object, got {_kind_name(value)}"
                )

    def _build(
        self,
        numbers: list[int],
        values: list[float],
        counts: list[int],
        item_ts: list[int],
        *,
        items: int,
    ) -> ParsedMetrics:
        try:
            vals = np.array(values, dtype=np.float64)
        except OverflowError as exc:  # an integer beyond float64
            raise BadDataError(f"cannot parse metrics body: $: number out of range: {exc}") from exc
        finite = np.isfinite(vals)
        item_of_sample = np.repeat(np.arange(items, dtype=np.int64), counts)
        if not finite.all():
            bad = int(np.argmin(finite))
            raise BadDataError(
                f"cannot parse metrics body: $[{int(item_of_sample[bad])}].metrics: "
                "number out of the float64 range"
            )
        ids = np.array(numbers, dtype=np.int64)
        unique, inverse = np.unique(ids, return_inverse=True)
        table = self.cache.labels
        series = [table[n] for n in unique.tolist()]
        ts = np.repeat(np.array(item_ts, dtype=np.int64), counts)
        batch = SampleBatch(series, inverse.astype(np.uint32).reshape(-1), ts, vals)
        return ParsedMetrics(
            batch=batch,
            item_of_sample=item_of_sample,
            items=items,
            series_numbers=unique,
            generation=self.cache.generation,
        )


def split_by_window(
    parsed: ParsedMetrics, *, min_ms: int, max_ms: int, max_errors: int = 10
) -> WindowResult:
    """Keep samples with ``min_ms <= ts <= max_ms``; count the rest by reason.

    ``errors`` describes up to ``max_errors`` refused items (``$[i].timestamp: ...``).
    """
    ts = parsed.batch.ts_ms
    too_old = ts < min_ms
    too_new = ts > max_ms
    if not (too_old.any() or too_new.any()):
        return WindowResult(batch=parsed.batch)
    rejected: dict[str, int] = {}
    errors: list[str] = []
    for reason, mask, what in (
        ("too_old", too_old, f"older than the accepted window (before {min_ms} ms)"),
        ("too_far_in_future", too_new, f"too far in the future (after {max_ms} ms)"),
    ):
        n = int(mask.sum())
        if not n:
            continue
        rejected[reason] = n
        bad_items = np.unique(parsed.item_of_sample[mask])[: max(0, max_errors - len(errors))]
        for i in bad_items.tolist():
            first = int(np.argmax(parsed.item_of_sample == i))
            errors.append(f"$[{i}].timestamp: {int(ts[first])} ms is {what}")
    keep = ~(too_old | too_new)
    return WindowResult(batch=parsed.batch.select(keep), rejected=rejected, errors=errors)


def split_by_server(batch: SampleBatch) -> list[tuple[str, SampleBatch]]:
    """The batch per ``server_id`` label, in first-seen order (one entry when one server).

    Each part keeps the full ``series`` list (the store resolves only the series a part
    uses), so this costs one mask per server and no label work.
    """
    server_of_series: dict[str, int] = {}
    codes = np.fromiter(
        (
            server_of_series.setdefault(get(lbl, "server_id"), len(server_of_series))
            for lbl in batch.series
        ),
        dtype=np.int64,
        count=len(batch.series),
    )
    if len(server_of_series) <= 1:
        return [(next(iter(server_of_series), ""), batch)]
    per_sample = codes[batch.series_idx]
    return [(server, batch.select(per_sample == code)) for server, code in server_of_series.items()]


def _extra_labels(labels: dict[str, str], where: str) -> tuple[tuple[str, str], ...]:
    for name in labels:
        if name in _RESERVED_LABELS:
            raise BadDataError(
                f"cannot parse metrics body: {where}.labels.{name}: reserved label name"
            )
        try:
            validate_label_name(name)
        except BadDataError as exc:
            raise BadDataError(f"cannot parse metrics body: {where}.labels.{name}: {exc}") from exc
    return tuple(sorted((k, v) for k, v in labels.items() if v != ""))


def _kind_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"a string ({value[:20]!r}; NaN and Inf are not accepted)"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _msgspec_where(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    message, sep, path = text.rpartition(" - at `")
    if not sep:
        return f"$: {text[0].lower() + text[1:] if text else text}"
    path = path.rstrip("`")
    return f"{path}: {message[0].lower() + message[1:]}"
