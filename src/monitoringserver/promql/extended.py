"""Extended range selectors (experimental in Prometheus): ``anchored`` and ``smoothed``.

* ``x[r] anchored``: the window also takes the newest sample at or before its start
  (within the lookback) as its first point; ``increase``/``rate``/``delta`` are
  last - first without extrapolation, ``changes``/``resets`` count from that anchor.
  At least one sample must lie inside the window.
* ``x[r] smoothed``: the values at both window edges are interpolated linearly between
  the neighbouring samples (for counters across a reset, from zero); without a sample
  before the start the first one inside is used, without one after the end the last is
  carried forward. ``increase`` = right - left + resets in between.
* ``x smoothed``: an instant selector interpolating between the samples around ``t``.

Our parser does not know the keywords; :func:`rewrite` turns them into a marker matcher
(``__ext_mode__``) on the selector, which the evaluator strips again.
"""

from __future__ import annotations

import re

import numpy as np

from monitoringserver.errors import BadDataError, ExecutionError
from monitoringserver.metrics.api import SeriesData
from monitoringserver.model.samples import is_stale_nan
from monitoringserver.promql.parser import EXT_MODE_LABEL as MODE_LABEL
from monitoringserver.promql.values import F64, I64, B, Matrix, Vector

__all__ = ["range_extended", "rewrite", "smoothed_vector"]

_KEYWORD = re.compile(r"\b(anchored|smoothed)\b")
_MODIFIER_TAIL = re.compile(r"(?:\s*(?:@\s*[-+]?[\w.]+(?:\(\))?|offset\s+-?[\w.]+))+\s*$")
_ALLOWED = {
    "anchored": ("changes", "delta", "increase", "rate", "resets"),
    "smoothed": ("delta", "increase", "rate"),
}


def _match_back(q: str, close_at: int, open_: str, close: str) -> int:
    depth = 0
    for i in range(close_at, -1, -1):
        if q[i] == close:
            depth += 1
        elif q[i] == open_:
            depth -= 1
            if depth == 0:
                return i
    raise BadDataError("cannot parse query: unbalanced brackets")


def rewrite(query: str) -> str:
    """Replace ``anchored``/``smoothed`` keywords by a marker matcher on their selector."""
    out = query
    while True:
        m = _KEYWORD.search(out)
        if m is None:
            return out
        head = out[: m.start()].rstrip()
        tail_m = _MODIFIER_TAIL.search(head)
        modifiers = tail_m.group(0) if tail_m else ""
        sel_end = len(head) - len(modifiers)
        j = sel_end - 1
        while j >= 0 and head[j].isspace():
            j -= 1
        if j >= 0 and head[j] == "]":
            j = _match_back(head, j, "[", "]") - 1
        marker = f'{MODE_LABEL}="x_{m.group(1)}"'
        if j >= 0 and head[j] == "}":
            k = _match_back(head, j, "{", "}")
            inner = head[k + 1 : j].strip()
            new_head = head[: k + 1] + marker + ("," + inner if inner else "") + head[j:]
        elif j >= 0 and (head[j].isalnum() or head[j] in "_:"):
            new_head = head[: j + 1] + "{" + marker + "}" + head[j + 1 :]
        else:
            raise BadDataError(f"cannot parse query: {m.group(1)} must follow a selector")
        out = new_head + out[m.end() :]


def check_function(mode: str, func: str) -> None:
    if func not in _ALLOWED[mode]:
        raise ExecutionError(
            f"{mode} modifier can only be used with: {', '.join(_ALLOWED[mode])} - not with {func}"
        )


def _clean(s: SeriesData) -> tuple[I64, F64]:
    stale = is_stale_nan(s.values)
    return s.ts_ms[~stale], s.values[~stale]


def _interp(t0: I64, v0: F64, t1: I64, v1: F64, at: I64, *, counter: bool) -> F64:
    with np.errstate(all="ignore"):
        frac = np.where(t1 > t0, (at - t0) / (t1 - t0), 0.0)
        linear = v0 + (v1 - v0) * frac
        if counter:
            return np.asarray(np.where(v1 < v0, v1 * frac, linear), dtype=np.float64)
        return np.asarray(linear, dtype=np.float64)


def smoothed_vector(series: list[SeriesData], eff: I64, lookback_ms: int) -> Vector:
    """Instant values interpolated between the samples around each ``eff``."""
    n, steps = len(series), len(eff)
    values = np.zeros((n, steps))
    present = np.zeros((n, steps), dtype=np.bool_)
    for i, s in enumerate(series):
        ts, v = _clean(s)
        if not len(ts):
            continue
        q = np.searchsorted(ts, eff, side="right") - 1
        ok = (q >= 0) & (ts[np.maximum(q, 0)] > eff - lookback_ms)
        qc = np.clip(q, 0, len(ts) - 1)
        nx = np.minimum(qc + 1, len(ts) - 1)
        has_next = (q + 1 < len(ts)) & (ts[nx] <= eff + lookback_ms)
        interp = _interp(ts[qc], v[qc], ts[nx], v[nx], eff, counter=False)
        values[i] = np.where(has_next, interp, v[qc])
        present[i] = ok
    return Vector([s.labels for s in series], values, present, np.zeros(n, dtype=np.bool_))


def range_extended(
    mode: str, func: str, series: list[SeriesData], m: Matrix, *, lookback_ms: int
) -> tuple[F64, B]:
    """``[series, steps]`` results of ``func`` over an anchored or smoothed range."""
    check_function(mode, func)
    n, steps = len(series), len(m.eff_ms)
    out = np.zeros((n, steps))
    ok = np.zeros((n, steps), dtype=np.bool_)
    for i, s in enumerate(series):
        ts, v = _clean(s)
        if len(ts):
            fn = _anchored if mode == "anchored" else _smoothed
            out[i], ok[i] = fn(func, ts, v, m.eff_ms, m.range_ms, lookback_ms=lookback_ms)
    return out, ok


def _drops(v: F64, first: I64, last: I64) -> F64:
    """Sum of the values before each drop at indices in ``(first, last]``."""
    drops = np.flatnonzero(v[1:] < v[:-1]) + 1
    if not len(drops):
        return np.zeros(first.shape)
    cum = np.concatenate([[0.0], np.cumsum(v[drops - 1])])
    return np.asarray(
        cum[np.searchsorted(drops, last, side="right")]
        - cum[np.searchsorted(drops, first, side="right")],
        dtype=np.float64,
    )


def _anchored(
    func: str, ts: I64, v: F64, eff: I64, range_ms: int, *, lookback_ms: int
) -> tuple[F64, B]:
    start = eff - range_ms
    lo = np.searchsorted(ts, start, side="right")
    hi = np.searchsorted(ts, eff, side="right")
    ok = hi > lo
    anchor = (lo >= 1) & (ts[np.maximum(lo - 1, 0)] > start - lookback_ms)
    first = np.where(anchor, lo - 1, lo)
    first = np.clip(first, 0, len(ts) - 1)
    last = np.clip(hi - 1, 0, len(ts) - 1)
    with np.errstate(all="ignore"):
        if func in ("changes", "resets"):
            flags = np.concatenate(
                [[0], (v[1:] != v[:-1]) if func == "changes" else (v[1:] < v[:-1])]
            ).astype(np.int64)
            c = np.cumsum(flags)
            return (c[last] - c[first]).astype(np.float64), ok
        result = v[last] - v[first]
        if func in ("increase", "rate"):
            result = result + _drops(v, first, last)
        if func == "rate":
            result = result / (range_ms / 1000.0)
    return np.asarray(result, dtype=np.float64), ok


def _smoothed(
    func: str, ts: I64, v: F64, eff: I64, range_ms: int, *, lookback_ms: int
) -> tuple[F64, B]:
    counter = func in ("increase", "rate")
    start = eff - range_ms
    last_i = len(ts) - 1
    p = np.searchsorted(ts, start, side="right") - 1  # newest at or before start
    q = np.searchsorted(ts, eff, side="right") - 1  # newest at or before end
    nxt = p + 1  # first inside the window (or after it)
    has_prev = (p >= 0) & (ts[np.clip(p, 0, last_i)] > start - lookback_ms)
    ok = (q >= 0) & (nxt <= last_i)
    pc, qc, nc = np.clip(p, 0, last_i), np.clip(q, 0, last_i), np.clip(nxt, 0, last_i)
    left = np.where(has_prev, _interp(ts[pc], v[pc], ts[nc], v[nc], start, counter=counter), v[nc])
    has_after = q + 1 <= last_i
    qn = np.clip(q + 1, 0, last_i)
    right = np.where(has_after, _interp(ts[qc], v[qc], ts[qn], v[qn], eff, counter=counter), v[qc])
    with np.errstate(all="ignore"):
        result = right - left
        if counter:
            inside = nxt <= q  # at least one sample in (start, end]
            corr = np.where(inside, _drops(v, nc, qc), 0.0)
            corr += np.where(inside & has_prev & (v[nc] < left), left, 0.0)
            corr += np.where(inside & (right < v[qc]), v[qc], 0.0)
            corr += np.where(~inside & (right < left), left, 0.0)
            result = result + corr
        if func == "rate":
            result = result / (range_ms / 1000.0)
    return np.asarray(result, dtype=np.float64), ok
