"""Timestamps as clients send them (RFC 3339 or epoch numbers) → int milliseconds, UTC."""

from __future__ import annotations

import datetime as dt
import math

__all__ = ["parse_timestamp_ms"]

#: Numeric timestamps below this are seconds, at or above it milliseconds (1e11 s is year 5138).
_SECONDS_LIMIT = 1e11


def parse_timestamp_ms(value: str | float | None, *, now_ms: int) -> int:
    """RFC 3339 text, epoch seconds (< 1e11) or epoch milliseconds → int ms; None → ``now_ms``.

    Raises ``ValueError`` with a short reason when the value cannot be a timestamp.
    """
    if value is None:
        return now_ms
    if isinstance(value, bool):
        raise TypeError("expected a timestamp, got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("expected a finite timestamp")
        if abs(value) < _SECONDS_LIMIT:
            return round(value * 1000)
        if abs(value) >= 1e18:
            raise ValueError(f"timestamp {value!r} is out of range")
        return int(value)
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            return parse_timestamp_ms(float(text), now_ms=now_ms)
        except ValueError:
            raise ValueError(
                f"cannot parse timestamp {value!r}: expected RFC 3339 or epoch seconds/ms"
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return round(parsed.timestamp() * 1000)
