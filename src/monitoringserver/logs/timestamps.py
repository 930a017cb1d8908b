"""Timestamp parsing shared by the log formats. Results are int milliseconds, UTC."""

from __future__ import annotations

import datetime as dt
import re

__all__ = [
    "epoch_to_ms",
    "parse_clf_time",
    "parse_iso_ms",
    "parse_syslog_bsd_time",
    "parse_ts_value",
]

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_CLF = re.compile(r"(\d{1,2})/(\w{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))? ([+-]\d{4})")
_BSD = re.compile(r"(\w{3}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?")


def epoch_to_ms(value: float) -> int:
    """Epoch seconds, milliseconds, microseconds or nanoseconds (by magnitude) to ms."""
    v = abs(value)
    if v < 1e11:
        return int(value * 1000)
    if v < 1e14:
        return int(value)
    if v < 1e17:
        return int(value / 1000)
    return int(value / 1_000_000)


def parse_iso_ms(text: str) -> int | None:
    """RFC 3339 / ISO 8601 (``Z`` or offset; naive means UTC; ``,`` fraction allowed)."""
    s = text.strip()
    if len(s) < 10:
        return None
    s = s.replace(",", ".", 1) if "," in s[19:24] else s
    try:
        parsed = dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def parse_ts_value(value: object) -> int | None:
    """A JSON timestamp field: number (epoch, unit by magnitude) or ISO/numeric string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return epoch_to_ms(float(value))
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return None
        try:
            return epoch_to_ms(float(s))
        except ValueError:
            return parse_iso_ms(s)
    return None


def _frac_ms(frac: str | None) -> int:
    return int((frac or "0")[:3].ljust(3, "0"))


def parse_clf_time(text: str) -> int | None:
    """Apache/nginx ``10/Oct/2000:13:55:36 -0700``."""
    m = _CLF.fullmatch(text)
    if m is None:
        return None
    day, mon, year, hh, mm, ss, frac, off = m.groups()
    month = _MONTHS.get(mon.lower())
    if month is None:
        return None
    sign = 1 if off[0] == "+" else -1
    tz = dt.timezone(sign * dt.timedelta(hours=int(off[1:3]), minutes=int(off[3:5])))
    try:
        t = dt.datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=tz)
    except ValueError:
        return None
    return int(t.timestamp() * 1000) + _frac_ms(frac)


def parse_syslog_bsd_time(text: str, now_ms: int) -> int | None:
    """RFC 3164 ``Oct  1 13:55:36`` (no year, local time taken as UTC).

    The year is the one that puts the stamp closest to ``now_ms`` (so December lines
    read in January land in the previous year)."""
    m = _BSD.fullmatch(text)
    if m is None:
        return None
    mon, day, hh, mm, ss, frac = m.groups()
    month = _MONTHS.get(mon.lower())
    if month is None:
        return None
    now = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC)
    best: int | None = None
    for year in (now.year - 1, now.year, now.year + 1):
        try:
            t = dt.datetime(year, month, int(day), int(hh), int(mm), int(ss), tzinfo=dt.UTC)
        except ValueError:
            continue
        ms = int(t.timestamp() * 1000) + _frac_ms(frac)
        if best is None or abs(ms - now_ms) < abs(best - now_ms):
            best = ms
    return best
