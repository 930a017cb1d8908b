"""Bloom filter keys of log lines, found with numpy over the raw bytes.

The same keys as :data:`~.patterns.TOKENS_SQL` + :data:`~.patterns.IDS_SQL` for ASCII
text (DuckDB's ``lower()`` also turns a few non-ASCII letters into ASCII ones, e.g.
U+0130 into ``i``, which only lengthens or adds runs no needle key can ask for: those
are bounded by ASCII separators inside the needle), so the probe side
(:func:`~.patterns.needle_tokens`, :func:`~.patterns.needle_id_tokens`) is unchanged,
found with a few vectorised passes over the ``"\\n"``-joined lines instead
of regex splits inside DuckDB:

* every maximal run of ASCII letters and digits of at least three characters,
  lower-cased (any byte outside ``[A-Za-z0-9]``, including every byte of a non-ASCII
  character, ends a run);
* every 36-byte window of the line shaped like a lower-case UUID and every window of
  32 lower-case hex digits, wherever it sits (upper-case ids count lower-cased);
* every maximal run of ``[0-9.]`` that is an IPv4 address (four groups of 1-3 digits).

``"\\n"`` belongs to no class, so no key spans two lines. A key is hashed
(:func:`key_hashes`) from its length and its bytes, lower-cased (every key byte is a
letter, digit, ``-`` or ``.``: OR-ing 0x20 lower-cases them all), through a 64-bit
finaliser. Keys longer than 40 bytes count by their first 24 and last 16 bytes only:
two such keys that share those share a hash, a false positive of the filter, never a
false negative. The hash depends on no library
version (the manifest flag :data:`NUMPY_KEYS_SUFFIX` marks filters built this way).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CHUNK_LINES",
    "GROUPS_DROPPED_SUFFIX",
    "NUMPY_KEYS_SUFFIX",
    "chunked_key_hashes",
    "key_hashes",
    "line_key_hashes",
    "uuid_group_tokens",
]

NUMPY_KEYS_SUFFIX = "+nk1"
#: In ``hash_version``: the index leaves out the runs that are groups of a UUID.
GROUPS_DROPPED_SUFFIX = "+ng"
#: Lines per pass: bounds the temporaries to ~10x the text of this many lines.
CHUNK_LINES = 65_536

_U64 = np.uint64
_I64 = np.int64
# Maximal alphanumeric runs made of hex digits only (the regex backs off otherwise).
_HEX_RUN = re.compile("(?<![0-9A-Za-z])[0-9A-Fa-f]+(?![0-9A-Za-z])")
_PAD = 40  # zero bytes around the buffer, so fixed-width gathers stay inside it
_LOWER8 = _U64(0x2020202020202020)
_ONES = _U64(0xFFFFFFFFFFFFFFFF)
# Mask of the first n bytes of a little-endian word, n = 0..8.
_HEAD_MASK = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [0xFFFFFFFFFFFFFFFF], dtype=_U64)
_UUID_DASHES = (8, 13, 18, 23)
# The five hex groups of a UUID window: [start, end) offsets.
_GROUP_STARTS = np.array([0, 9, 14, 19, 24], dtype=_I64)
_GROUP_ENDS = np.array([8, 13, 18, 23, 36], dtype=_I64)
# Length of a group -> whether a dash must stand (before, after) it, inside a UUID.
_GROUP_DASHES = {8: (False, True), 4: (True, True), 12: (True, False)}


def _fmix(h: NDArray[np.uint64]) -> NDArray[np.uint64]:
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


def _words(buf: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """Overlapping little-endian 8-byte words: ``words[i]`` = bytes ``i .. i+7``."""
    return np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))


def _span_prehashes(
    buf: NDArray[np.uint8], starts: NDArray[np.int64], ends: NDArray[np.int64]
) -> NDArray[np.uint64]:
    """A 64-bit value per span from its length and bytes (cheap, not yet mixed:
    :func:`_fmix` it after removing repeats). Spans of up to 40 bytes count whole
    (words at 0, 8, 16 and the last 16 bytes); longer ones by those bytes only."""
    words = _words(buf)
    n = ends - starts
    head = (words[starts] | _LOWER8) & _HEAD_MASK[np.minimum(n, 8)]
    tail = (words[np.maximum(ends - 8, starts)] | _LOWER8) * (n > 8).astype(_U64)
    pre = ((head ^ n.astype(_U64) * _U64(0x9E3779B97F4A7C15)) * _U64(0xBF58476D1CE4E5B9)) ^ (
        tail * _U64(0x94D049BB133111EB)
    )
    long = np.flatnonzero(n > 16)
    if len(long):
        s, e = starts[long], ends[long]
        m1 = words[s + 8] | _LOWER8
        m2 = words[np.minimum(s + 16, e - 8)] | _LOWER8
        m3 = words[e - 16] | _LOWER8
        pre[long] += (
            (m1 * _U64(0xD6E8FEB86659FD93))
            ^ (m2 * _U64(0xA0761D6478BD642F))
            ^ (m3 * _U64(0xE7037ED1A0B428DB))
        )
    return np.asarray(pre, dtype=_U64)


def _is_digit(x: NDArray[np.uint8]) -> NDArray[np.bool_]:
    return (x - np.uint8(48)) < np.uint8(10)


def _is_hex(x: NDArray[np.uint8]) -> NDArray[np.bool_]:
    return _is_digit(x) | (((x | np.uint8(32)) - np.uint8(97)) < np.uint8(6))


def _runs(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Start and end (exclusive) of every maximal run of True in ``mask`` (whose first
    and last element are False)."""
    edges = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    return edges[0::2].astype(_I64), edges[1::2].astype(_I64)


def _hex32_windows(
    buf: NDArray[np.uint8], starts: NDArray[np.int64], ends: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Start of every 32-hex-digit window inside the alphanumeric runs given (hex
    digits are alphanumeric, so every such window lies in one of them)."""
    long = ends - starts >= 32
    starts, ends = starts[long], ends[long]
    if not len(starts):
        return np.empty(0, dtype=_I64)
    lens = ends - starts
    # The bytes of those runs, each followed by one non-hex separator.
    offs = np.cumsum(lens + 1) - (lens + 1)
    idx = np.arange(int(lens.sum() + len(lens)), dtype=_I64)
    run_of = np.repeat(np.arange(len(lens)), lens + 1)
    pos = idx - offs[run_of]
    is_sep = pos == lens[run_of]
    src = np.where(is_sep, 0, starts[run_of] + pos)
    sub = np.where(is_sep, np.uint8(0), buf[src])
    hexmask = np.concatenate([[False], _is_hex(sub), [False]])
    hs, he = _runs(hexmask)
    hs, he = hs - 1, he - 1
    ok = he - hs >= 32
    hs, he = hs[ok], he[ok]
    counts = he - hs - 31
    first = np.repeat(hs, counts)
    step = np.arange(int(counts.sum()), dtype=_I64) - np.repeat(np.cumsum(counts) - counts, counts)
    at = first + step
    return np.asarray(src[at], dtype=_I64)


def _uuid_windows(buf: NDArray[np.uint8]) -> NDArray[np.int64]:
    dash = buf == np.uint8(45)
    d = np.flatnonzero(dash[: len(buf) - 16])
    d = d[d >= 8]
    cand = d[dash[d + 5] & dash[d + 10] & dash[d + 15]] - 8
    if not len(cand):
        return np.asarray(cand, dtype=_I64)
    grid = buf[cand[:, None] + np.arange(36)[None, :]]
    shape = np.ones(36, dtype=bool)
    shape[list(_UUID_DASHES)] = False
    ok = _is_hex(grid[:, shape]).all(axis=1)
    return np.asarray(cand[ok], dtype=_I64)


def _ipv4_runs(buf: NDArray[np.uint8]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Maximal ``[0-9.]`` runs that are IPv4 addresses: found from three dots in a row
    with 1-3 digits between them, then checked whole."""
    dots = np.flatnonzero(buf == np.uint8(46))
    if len(dots) < 3:
        return np.empty(0, dtype=_I64), np.empty(0, dtype=_I64)
    a, b, c = dots[:-2], dots[1:-1], dots[2:]
    near = (b - a >= 2) & (b - a <= 4) & (c - b >= 2) & (c - b <= 4)
    a, c = a[near].astype(_I64), c[near].astype(_I64)
    grid = buf[(a - 4)[:, None] + np.arange(20)[None, :]]  # a-4 .. a+15 covers c+4
    dig = _is_digit(grid)
    dotdig = dig | (grid == np.uint8(46))
    left = np.zeros(len(a), dtype=_I64)
    for k in (1, 2, 3, 4):
        left += np.all(dig[:, 4 - k : 4], axis=1)
    rel_c = c - a + 4
    rows = np.arange(len(a))
    right = np.zeros(len(a), dtype=_I64)
    for k in (1, 2, 3, 4):
        cols = np.minimum(rel_c[:, None] + np.arange(1, k + 1)[None, :], 19)
        right += np.all(dig[rows[:, None], cols], axis=1)
    inner = np.ones(len(a), dtype=bool)
    for j in range(5, 16):  # bytes strictly between a and c: digits or dots
        inside = (j < rel_c) & (j > 4)
        inner &= ~inside | dotdig[:, j]
    before = dotdig[rows, 3 - np.minimum(left, 3)]
    after = dotdig[rows, np.minimum(rel_c + right + 1, 19)]
    ok = (left >= 1) & (left <= 3) & (right >= 1) & (right <= 3) & inner & ~before & ~after
    return (a - left)[ok], (c + right + 1)[ok]


def _buffer_hashes(raw: bytes, *, groups_dropped: bool) -> NDArray[np.uint64]:
    """Unmixed hashes (:func:`_span_prehashes`) of every key of the ``"\\n"``-joined
    lines in ``raw`` (with repeats); ``groups_dropped``: without UUID group runs."""
    buf = np.zeros(len(raw) + 2 * _PAD, dtype=np.uint8)
    buf[_PAD : _PAD + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    low = buf | np.uint8(32)
    alnum = _is_digit(buf) | ((low - np.uint8(97)) < np.uint8(26))
    starts, ends = _runs(alnum)
    h32 = _hex32_windows(buf, starts, ends)
    keep = ends - starts >= 3
    uu = _uuid_windows(buf)
    if groups_dropped and len(uu):
        # A run that is exactly one group of a UUID window is left out: the UUID key
        # stands for it (see uuid_group_tokens for the probe side).
        group_s = (uu[:, None] + _GROUP_STARTS[None, :]).ravel()
        group_e = (uu[:, None] + _GROUP_ENDS[None, :]).ravel()
        keep &= ~np.isin(starts * 64 + (ends - starts), group_s * 64 + (group_e - group_s))
    i4s, i4e = _ipv4_runs(buf)
    all_s = np.concatenate([starts[keep], uu, h32, i4s])
    all_e = np.concatenate([ends[keep], uu + 36, h32 + 32, i4e])
    return _span_prehashes(buf, all_s, all_e)


def key_hashes(keys: Sequence[str] | Iterable[str]) -> NDArray[np.uint64]:
    """The hash of each key (one per key, in order), as the filters hold them. Keys
    are those :func:`~.patterns.needle_tokens` / :func:`~.patterns.needle_id_tokens`
    give (ASCII letters, digits, ``-`` and ``.``)."""
    data = [k.encode("utf-8", "replace") for k in keys]
    if not data:
        return np.empty(0, dtype=_U64)
    lens = np.array([len(d) for d in data], dtype=_I64)
    starts = _PAD + np.cumsum(lens + 1) - (lens + 1)
    raw = b"\n".join(data)
    buf = np.zeros(len(raw) + 2 * _PAD, dtype=np.uint8)
    buf[_PAD : _PAD + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return _fmix(_span_prehashes(buf, starts, starts + lens))


def _distinct(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    values = np.sort(values)
    if not len(values):
        return values
    return np.asarray(values[np.concatenate([[True], values[1:] != values[:-1]])], dtype=_U64)


def chunked_key_hashes(
    chunks: Iterable[Sequence[str]], *, groups_dropped: bool = False
) -> NDArray[np.uint64]:
    """The distinct key hashes of all lines of ``chunks`` (see the module docstring);
    ``groups_dropped``: without the runs that are a group of a UUID window (the keys of
    :data:`GROUPS_DROPPED_SUFFIX` indexes). Memory: about ten bytes per byte of the
    largest chunk, plus 8 bytes per distinct key."""
    parts: list[NDArray[np.uint64]] = []
    for chunk in chunks:
        raw = "\n".join(chunk).encode("utf-8", "replace")
        if raw:
            parts.append(_distinct(_buffer_hashes(raw, groups_dropped=groups_dropped)))
    if not parts:
        return np.empty(0, dtype=_U64)
    return _fmix(_distinct(np.concatenate(parts)))


def line_key_hashes(
    messages: Sequence[str], *, chunk_lines: int = CHUNK_LINES, groups_dropped: bool = False
) -> NDArray[np.uint64]:
    """The distinct key hashes of ``messages``, ``chunk_lines`` lines at a time."""
    return chunked_key_hashes(
        (messages[i : i + chunk_lines] for i in range(0, len(messages), chunk_lines)),
        groups_dropped=groups_dropped,
    )


def uuid_group_tokens(needle: str) -> set[str]:
    """Complete runs of ``needle`` (lower-cased) that may be a group of a UUID in a
    line holding the needle: hex-only runs of 8, 4 or 12 characters with a dash after,
    on both sides, or before them inside the needle. Indexes built with
    ``groups_dropped`` lack such groups, so these tokens must not be probed there (the
    UUID's own key, when the needle holds all of it, prunes instead)."""
    out: set[str] = set()
    for m in _HEX_RUN.finditer(needle):
        dashes = _GROUP_DASHES.get(m.end() - m.start())
        if dashes is None:
            continue
        before = m.start() > 0 and needle[m.start() - 1] == "-"
        after = m.end() < len(needle) and needle[m.end()] == "-"
        if (before or not dashes[0]) and (after or not dashes[1]):
            out.add(m.group().lower())
    return out
