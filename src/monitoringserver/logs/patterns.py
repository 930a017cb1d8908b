"""Message templates: variable parts (UUIDs, IPs, hex, paths, numbers) masked out.

``template("user 42 from 10.0.0.1 took 3.5ms")`` is ``"user <num> from <ip> took <num>ms"``
and :func:`pattern_id` of a template is a stable 16-hex-digit id (BLAKE2b), the same
on every server and after restarts.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "IDS_SQL",
    "PAIRS_SQL",
    "TOKENS_SQL",
    "TOKEN_SQL_REGEX",
    "needle_id_tokens",
    "needle_tokens",
    "pattern_id",
    "template",
]

_VARIABLE = re.compile(
    r"(?P<uuid>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)"
    r"|(?P<ip>\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\b(?:[0-9a-fA-F]{1,4}:){3,7}[0-9a-fA-F]{1,4}\b)"
    r"|(?P<hex>\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b)"
    r"|(?P<path>(?<![\w/])(?:/[\w.\-~%@+]+){2,}/?|(?<![\w/])/[\w.\-~%@+]+\.\w+)"
    r"|(?P<num>(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?)"
)
_MASKS = {"uuid": "<uuid>", "ip": "<ip>", "hex": "<hex>", "path": "<path>", "num": "<num>"}
_MAX_TEMPLATE_INPUT = 1024

#: Tokens for the archive bloom filters: maximal ASCII alphanumeric runs of at least
#: three characters, lower-cased. The store computes the same tokens inside DuckDB
#: with ``regexp_extract_all(lower(message), TOKEN_SQL_REGEX)``.
TOKEN_SQL_REGEX = "[a-z0-9]{3,}"  # noqa: S105 -- not a password
_ANY_RUN = re.compile(r"[A-Za-z0-9]+")
_PAIR_MIN = 7

#: SQL over ``{src}`` (a relation with a ``message`` column): the single keys of every
#: line, as :func:`needle_tokens` expects them.
TOKENS_SQL = "SELECT unnest(regexp_extract_all(lower(message), '[a-z0-9]{3,}')) AS tok FROM {src}"
#: The pair keys (digit-holding pairs of consecutive runs, ``"b8b6 d8fe"``). About five
#: times the cost of the singles, so optional.
PAIRS_SQL = (
    "SELECT unnest(list_filter(list_transform(list_zip(r[1:len(r) - 1], "
    "r[2:len(r)]), lambda p: p[1] || ' ' || p[2]), lambda s: length(s) >= 7 AND "
    "regexp_matches(s, '[0-9]'))) AS tok FROM (SELECT regexp_extract_all(lower(message), "
    "'[a-z0-9]+') AS r FROM {src})"
)
# The SQL below spells these two patterns out (kept equal to them).
_UUID_RE = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_IPV4_RE = "[0-9]{1,3}[.][0-9]{1,3}[.][0-9]{1,3}[.][0-9]{1,3}"
#: SQL over ``{src}``: the id keys of every line, whole tokens of three shapes found
#: anywhere (not only between separators), so that a needle holding one prunes even
#: when it is glued to other characters or the needle starts or ends inside it:
#: every UUID-shaped and every 32-hex-digit window of each maximal ``[0-9a-f-]`` run of
#: 32+ characters (in practice one window per id), and each maximal ``[0-9.]`` run that
#: is exactly an IPv4 address. See :func:`needle_id_tokens` for the probe side.
#: One regex pass finds the maximal ``[0-9a-f.-]`` runs of 7+ characters of the
#: lower-cased line; the ``[0-9a-f-]`` runs are their pieces between dots and the
#: ``[0-9.]`` runs their pieces between ``[a-f-]`` characters (lower-casing never makes
#: or removes a digit or a dot), which costs about a third less than a pass per shape.
IDS_SQL = (
    "SELECT tok FROM (WITH runs AS MATERIALIZED (SELECT unnest(regexp_extract_all("
    "lower(message), '[0-9a-f.-]{7,}')) AS big FROM {src}), "
    "hexruns AS (SELECT unnest(string_split(big, '.')) AS r FROM runs WHERE length(big) >= 32), "
    "dotruns AS (SELECT unnest(regexp_split_to_array(big, '[a-f-]')) AS r FROM runs) "
    "SELECT unnest(list_filter(list_transform(range(1, length(r) - 34), "
    "lambda i: substr(r, i, 36)), lambda w: regexp_full_match(w, "
    "'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'))) AS tok "
    "FROM hexruns WHERE length(r) >= 36 UNION ALL "
    "SELECT unnest(list_filter(list_transform(range(1, length(r) - 30), "
    "lambda i: substr(r, i, 32)), lambda w: regexp_full_match(w, '[0-9a-f]{32}'))) AS tok "
    "FROM hexruns WHERE length(r) >= 32 UNION ALL "
    "SELECT r AS tok FROM dotruns WHERE length(r) >= 7 AND "
    "regexp_full_match(r, '[0-9]{1,3}[.][0-9]{1,3}[.][0-9]{1,3}[.][0-9]{1,3}'))"
)
_NEEDLE_UUID = re.compile(_UUID_RE)
_NEEDLE_HEX32 = re.compile("[0-9a-f]{32}")
_NEEDLE_DOTTED = re.compile("[0-9.]+")
_NEEDLE_IPV4 = re.compile(_IPV4_RE)
_SEPARATOR = frozenset(chr(c) for c in range(128) if not chr(c).isalnum())


def _mask(m: re.Match[str]) -> str:
    return _MASKS[m.lastgroup or "num"]


def template(message: str) -> str:
    """The message with variable parts masked (only its first line, at most 1 KiB)."""
    first = message.split("\n", 1)[0][:_MAX_TEMPLATE_INPUT]
    return _VARIABLE.sub(_mask, first)


def pattern_id(tmpl: str) -> str:
    """A stable id for a template."""
    return hashlib.blake2b(tmpl.encode("utf-8", "replace"), digest_size=8).hexdigest()


def needle_tokens(needle: str) -> tuple[list[str], list[str]]:
    """Index keys that any line containing ``needle`` must hold: ``(singles, pairs)``.

    Singles (always indexed): alphanumeric runs of at least three characters with an
    ASCII separator on both sides inside the needle (the first and last run may be parts
    of longer runs of the line). Pairs (indexed when the store's ``index_pairs`` is on,
    see :data:`PAIRS_SQL`): two consecutive complete runs joined by a space, at least
    seven characters long and holding a digit (the inner groups of a UUID, of an IP).
    ``"id=7f3a9c-41"`` gives ``(["7f3a9c"], [])``; ``"abc"`` gives nothing."""
    runs = [(m.group().lower(), m.start(), m.end()) for m in _ANY_RUN.finditer(needle)]
    complete = [
        (s > 0 and e < len(needle) and needle[s - 1] in _SEPARATOR and needle[e] in _SEPARATOR)
        for _, s, e in runs
    ]
    singles = [r for (r, _, _), ok in zip(runs, complete, strict=True) if ok and len(r) >= 3]
    pairs: list[str] = []
    for k in range(len(runs) - 1):
        if complete[k] and complete[k + 1]:
            pair = f"{runs[k][0]} {runs[k + 1][0]}"
            if len(pair) >= _PAIR_MIN and any(ch.isdigit() for ch in pair):
                pairs.append(pair)
    return singles, pairs


def needle_id_tokens(needle: str) -> list[str]:
    """Id keys (see :data:`IDS_SQL`) that any line containing ``needle`` must hold.

    Every UUID-shaped and every 32-hex-digit substring of the lower-cased needle is a
    window of a ``[0-9a-f-]`` run of the line, so it counts wherever it sits. An IPv4
    address counts only when, inside the needle, characters other than digits and dots
    stand on both sides of it (only then is it a whole ``[0-9.]`` run of the line too).
    ``"req 3F2A...-...: x"`` gives the lower-cased UUID; ``"10.0.0.1"`` alone gives nothing,
    ``"from 10.0.0.1 port"`` gives ``["10.0.0.1"]``."""
    low = needle.lower()
    keys = [m.group() for m in _NEEDLE_UUID.finditer(low)]
    keys += [m.group() for m in _NEEDLE_HEX32.finditer(low)]
    for m in _NEEDLE_DOTTED.finditer(needle):
        inner = m.start() > 0 and m.end() < len(needle)
        if inner and _NEEDLE_IPV4.fullmatch(m.group()):
            keys.append(m.group())
    return keys
