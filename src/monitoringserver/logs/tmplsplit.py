"""The template layout's variables (:mod:`.templates`), found with numpy.

The same values as :func:`.templates.encoded_relation`'s four regex passes, for many
messages at once, in a few byte-wide vectorised passes over their ``"\\n"``-joined
bytes (DuckDB's regex functions cost ~0.5 µs per match: lists and strings per row):

* UUID pass (``[0-9a-f]{8}-…-[0-9a-f]{12}``, lower case): the UUID-shaped windows,
  left to right, each skipped when it starts inside the one taken before (only
  possible in its last group: glued ids), replaced by ``chr(1)``;
* 32-hex pass: in each maximal run of ``[0-9a-f]`` left by the UUID pass, the matches
  are its leading 32-digit blocks (``chr(2)``);
* hex-word pass: a maximal ``[0-9a-fA-F]`` run left by the passes before matches, as a
  whole (the greedy alternatives end at the run's end, and a later start in the run
  never matches when the first does not), when it has a letter with 7+ hex digits
  after it or a letter with 7+ before it (``chr(4)``);
* integer pass (``(^|[^0-9A-Za-z_])(0*)([0-9]{1,18})``): every maximal digit run of that
  text whose preceding character is not an ASCII letter, digit or ``_`` holds one
  integer: its leading zeros (all but the last digit of an all-zero run) stay, the next
  at most 18 digits become the integer (``chr(3)``), any digits after those stay (a
  match ends in a digit, so it never takes the character before the next run).

A line that holds a control byte ``chr(1..4)`` already, or whose template has an id
marker next to a hex digit, a dash or another marker (``_GLUED``), is verbatim. An
id marker next to a digit is next to a digit or ``chr(3)`` after the integer pass
too, so that test runs on the text before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Encoded", "encode_messages"]

_MAX_DIGITS = 18
_SEP = 0  # between texts: not a digit, not a word character, not glued to a marker
_FRONT = 8  # separators before the first text (and 4 after the last)
_I64 = np.int64


@dataclass(frozen=True, slots=True)
class Encoded:
    """Per message: ``tmpl`` (variables replaced by their markers); ``ints`` (decimal,
    no leading zero), ``uuids``, ``hexids``, ``hexw``: the variables in order, as
    comma-separated text, None when there are none. ``verbatim``: the line is stored
    as it is (its other fields are then meaningless)."""

    tmpl: list[str]
    ints: list[str | None]
    uuids: list[str | None]
    hexids: list[str | None]
    hexw: list[str | None]
    verbatim: NDArray[np.bool_]


@dataclass(slots=True)
class _Text:
    """Texts joined in one buffer: ``_FRONT`` separators, each text followed by one."""

    buf: NDArray[np.uint8]
    start: NDArray[np.int64]  # where each text starts in buf
    lens: NDArray[np.int64]

    def line_of(self, pos: NDArray[np.int64]) -> NDArray[np.int64]:
        return np.asarray(np.searchsorted(self.start, pos, side="right") - 1, dtype=_I64)


def _joined(texts: Sequence[str]) -> _Text:
    n = len(texts)
    joined = "\0".join(texts)
    raw = joined.encode("utf-8", "surrogatepass")
    if len(raw) == len(joined):
        lens = np.fromiter(map(len, texts), dtype=_I64, count=n)
    else:
        lens = np.fromiter(
            (len(t.encode("utf-8", "surrogatepass")) for t in texts), dtype=_I64, count=n
        )
    buf = np.empty(len(raw) + _FRONT + 4, dtype=np.uint8)
    buf[:_FRONT] = buf[-4:] = _SEP
    buf[_FRONT:-4] = np.frombuffer(raw, dtype=np.uint8)
    return _Text(buf, np.cumsum(lens + 1) - lens + (_FRONT - 1), lens)


def _is_digit(x: NDArray[np.uint8]) -> NDArray[np.bool_]:
    return np.asarray((x - np.uint8(48)) < np.uint8(10), dtype=bool)


def _word(x: NDArray[np.uint8]) -> NDArray[np.bool_]:
    low = x | np.uint8(32)
    word = _is_digit(x) | ((low - np.uint8(97)) < np.uint8(26)) | (x == np.uint8(95))
    return np.asarray(word, dtype=bool)


def _glue(x: NDArray[np.uint8]) -> NDArray[np.bool_]:
    low = x | np.uint8(32)
    glue = (
        _is_digit(x)
        | ((low - np.uint8(97)) < np.uint8(6))
        | ((x - np.uint8(1)) < np.uint8(4))
        | (x == np.uint8(45))
    )
    return np.asarray(glue, dtype=bool)


def _runs(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Start and end of every maximal run of True (``mask`` starts and ends False)."""
    edges = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    return edges[0::2].astype(_I64), edges[1::2].astype(_I64)


def _long_runs(
    mask: NDArray[np.bool_], min_len: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Start and end of every maximal run of True at least ``min_len`` (>= 7) long
    (``mask`` starts and ends with 4 False). Such a run holds a whole aligned 4-byte
    block, so the runs of full blocks (a quarter of the edges to find) locate them;
    each is then widened by the up to 3 True bytes on either side."""
    m = len(mask) // 4 * 4
    full = np.ndarray((m // 4,), dtype="<u4", buffer=mask[:m]) == np.uint32(0x01010101)
    padded = np.concatenate([[False], full, [False]])
    bs, be = _runs(padded)
    start, end = (bs - 1) * 4, (be - 1) * 4
    for _ in range(3):
        start -= mask[start - 1]
        end += mask[end]
    long = end - start >= min_len
    return start[long], end[long]


def _spread(starts: NDArray[np.int64], counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """``starts[i] + j`` for ``j < counts[i]``, all concatenated."""
    total = int(counts.sum())
    if not total:
        return np.empty(0, dtype=_I64)
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts - offsets, counts) + np.arange(total, dtype=_I64)


def _replace(
    text: _Text, s: NDArray[np.int64], e: NDArray[np.int64], marker: NDArray[np.uint8]
) -> _Text:
    """``text`` with the spans ``[s, e)`` (disjoint, inside texts) each replaced by one
    ``marker`` byte."""
    out = text.buf.copy()
    out[s] = marker
    keep = np.ones(len(out), dtype=bool)
    keep[_spread(s + 1, e - s - 1)] = False
    removed = np.bincount(text.line_of(s), weights=e - s - 1, minlength=len(text.lens))
    removed = removed.astype(_I64)
    before = np.cumsum(removed) - removed
    return _Text(out[keep], text.start - before, text.lens - removed)


def _uuid_spans(buf: NDArray[np.uint8], hexlow: NDArray[np.bool_]) -> NDArray[np.int64]:
    dash = buf == np.uint8(45)
    d = np.flatnonzero(dash[: max(0, len(buf) - 28)])
    cand = d[dash[d + 5] & dash[d + 10] & dash[d + 15]] - 8
    if not len(cand):
        return np.asarray(cand, dtype=_I64)
    shape = np.ones(36, dtype=bool)
    shape[[8, 13, 18, 23]] = False
    grid = hexlow[cand[:, None] + np.flatnonzero(shape)[None, :]]
    found = np.asarray(cand[grid.all(axis=1)], dtype=_I64)
    if len(found) > 1 and (np.diff(found) < 36).any():
        # A window starting inside another's last group (glued ids): the regex
        # scan goes on after the match it took, left to right.
        kept: list[int] = []
        for p in found.tolist():
            if not kept or p >= kept[-1] + 36:
                kept.append(p)
        found = np.array(kept, dtype=_I64)
    return found


def _texts(
    raw: bytes, s: NDArray[np.int64], e: NDArray[np.int64], line: NDArray[np.int64], n: int
) -> list[str | None]:
    """The spans ``[s, e)`` of ``raw`` joined with commas per line (None for none)."""
    out: list[str | None] = [None] * n
    for ln, a, b in zip(line.tolist(), s.tolist(), e.tolist(), strict=True):
        piece = raw[a:b].decode("ascii")
        prev = out[ln]
        out[ln] = piece if prev is None else prev + "," + piece
    return out


def encode_messages(messages: Sequence[str]) -> Encoded:
    """The template layout's fields of each message (see the module docstring)."""
    n = len(messages)
    text = _joined(messages)
    buf = text.buf
    raw = buf.tobytes()
    verbatim = np.zeros(n, dtype=bool)
    verbatim[text.line_of(np.flatnonzero((buf - np.uint8(1)) < np.uint8(4)))] = True
    digit = _is_digit(buf)
    low = buf | np.uint8(32)
    letter = (low - np.uint8(97)) < np.uint8(6)
    hexlow = digit | ((buf - np.uint8(97)) < np.uint8(6))
    # UUIDs, then blocks of 32 lower-case hex digits in what is left, then hex words.
    us = _uuid_spans(buf, hexlow)
    taken = np.zeros(len(buf), dtype=bool)
    taken[_spread(us, np.full(len(us), 36, dtype=_I64))] = True
    rs, re_ = _long_runs(hexlow & ~taken, 32)
    blocks = (re_ - rs) // 32
    hs = _spread(rs[blocks > 0], blocks[blocks > 0])
    if len(hs):  # _spread gives start + j: blocks sit 32 apart
        first = np.repeat(rs[blocks > 0], blocks[blocks > 0])
        hs = first + (hs - first) * 32
    taken[_spread(hs, np.full(len(hs), 32, dtype=_I64))] = True
    ws, we = _long_runs((digit | letter) & ~taken, 8)
    lpos = np.flatnonzero(letter) if len(ws) else np.empty(0, dtype=_I64)
    if not len(lpos):  # no letter anywhere: no hex word
        ws, we = ws[:0], we[:0]
    else:
        i = np.searchsorted(lpos, ws)
        j = np.searchsorted(lpos, we) - 1
        has = i <= j
        fl = lpos[np.minimum(i, len(lpos) - 1)]
        ll = lpos[np.maximum(j, 0)]
        ok = has & ((we - fl - 1 >= 7) | (ll - ws >= 7))
        ws, we = ws[ok], we[ok]
    lines = text.line_of
    uuids = _texts(raw, us, us + 36, lines(us), n)
    hexids = _texts(raw, hs, hs + 32, lines(hs), n)
    hexw = _texts(raw, ws, we, lines(ws), n)
    s = np.concatenate([us, hs, ws])
    e = np.concatenate([us + 36, hs + 32, we])
    mark = np.concatenate(
        [
            np.full(len(us), 1, np.uint8),
            np.full(len(hs), 2, np.uint8),
            np.full(len(ws), 4, np.uint8),
        ]
    )
    order = np.argsort(s, kind="stable")
    t3 = _replace(text, s[order], e[order], mark[order])
    return _int_pass(t3, uuids, hexids, hexw, verbatim)


def _int_texts(
    buf: NDArray[np.uint8],
    ds: NDArray[np.int64],
    de: NDArray[np.int64],
    line: NDArray[np.int64],
    n: int,
) -> list[str | None]:
    """The digits ``buf[ds:de]`` of each integer, comma-separated per line (None for a
    line without any): gathered into one buffer, each followed by ``,`` or by
    ``chr(0)`` after the last of its line, then split once."""
    out: list[str | None] = [None] * n
    if not len(ds):
        return out
    count = de - ds
    dest = np.cumsum(count + 1) - (count + 1)
    joined = np.empty(int(count.sum() + len(ds)), dtype=np.uint8)
    joined[_spread(dest, count)] = buf[_spread(ds, count)]
    last = np.concatenate([line[1:] != line[:-1], [True]])
    joined[dest + count] = np.where(last, np.uint8(0), np.uint8(44))
    parts = joined.tobytes().decode("ascii").split("\0")[:-1]
    holder = np.empty(n, dtype=object)
    holder[line[last]] = parts
    return list(holder)


def _int_pass(
    t3: _Text,
    uuids: list[str | None],
    hexids: list[str | None],
    hexw: list[str | None],
    verbatim: NDArray[np.bool_],
) -> Encoded:
    n = len(t3.lens)
    buf = t3.buf
    # An id marker glued to a hex digit, a dash or a marker: verbatim.
    at = np.flatnonzero((buf - np.uint8(1)) < np.uint8(2))
    if len(at):
        hit = at[_glue(buf[at - 1]) | _glue(buf[at + 1])]
        verbatim[t3.line_of(hit)] = True
    digit = _is_digit(buf)
    s, e = _runs(digit)
    ok = ~_word(buf[s - 1])
    s, e = s[ok], e[ok]
    # Leading zeros stay (all but the last digit of an all-zero run).
    ds = s.copy()
    todo = np.flatnonzero(buf[ds] == np.uint8(48))
    while len(todo):
        todo = todo[ds[todo] < e[todo] - 1]
        ds[todo] += 1
        todo = todo[buf[ds[todo]] == np.uint8(48)]
    de = np.minimum(e, ds + _MAX_DIGITS)
    ints = _int_texts(buf, ds, de, t3.line_of(ds), n)
    t4 = _replace(t3, ds, de, np.full(len(ds), 3, np.uint8))
    if not n:
        return Encoded([], ints, uuids, hexids, hexw, verbatim)
    data = t4.buf.tobytes()
    body = data[int(t4.start[0]) : int(t4.start[-1] + t4.lens[-1])]
    if body.count(0) == n - 1:  # no message holds chr(0): one split at the separators
        tmpl = body.decode("utf-8", "surrogatepass").split("\0")
    else:
        starts = (t4.start).tolist()
        ends = (t4.start + t4.lens).tolist()
        tmpl = [
            data[a:b].decode("utf-8", "surrogatepass") for a, b in zip(starts, ends, strict=True)
        ]
    return Encoded(tmpl, ints, uuids, hexids, hexw, verbatim)
