"""Messages as template + typed variables in archive files (the idea behind CLP).

Archive files written with this layout (manifest ``hash_version`` holding
:data:`TEMPLATES_SUFFIX`) store each message as columns instead of text:

* ``tmpl``: the message with its variable parts replaced by one control byte each:
  ``chr(1)`` a lower-case UUID, ``chr(2)`` a run of 32 lower-case hex digits,
  ``chr(4)`` a hex word (8+ hex digits with a letter, any case), ``chr(3)`` a decimal
  integer (a digit run of at most 18 digits not glued to a letter on its left; its
  leading zeros stay in ``tmpl``). Few distinct values: dictionary-encoded.
* ``i1`` … ``i24`` (``BIGINT``) the integers by position, ``irest`` (``BIGINT[]``) the
  ones after the 24th; ``uuids`` / ``hexids`` (``UUID[]``, 16 bytes each) and ``hexw``
  (``VARCHAR[]``) the other variables in order (NULL when none);
* ``verbatim``: true when the message already held one of the control bytes (or an
  id glued to hex text, see :func:`needle_prefilter`); ``tmpl`` is then the message
  itself, ``uuids`` and ``hexids`` are empty lists, the other variables NULL.

The variables are taken out in four passes (UUIDs, hex ids, hex words, integers), each
a ``regexp_extract_all`` and a ``regexp_replace`` with the same pattern over the text
of the previous pass, so each pass's list holds exactly the spans its marker replaced;
an integer is kept only in a form whose decimal text is the span (no leading zero).
:func:`encoded_relation` spells this out in SQL (the definition, and the reference the
tests hold the encoder to); compaction uses :func:`encoded_tables`, the same values
found with numpy (:mod:`.tmplsplit`) at a fraction of the CPU.
:func:`restored_relation` puts the values back (the markers are distinct bytes, so the
order of the passes does not matter on the way back): the exact original text.
Rows are sorted by host, source, logger, template, time: rows of one template sit
together, so each ``i<k>`` column holds one field in long runs (delta and dictionary
encodings then work).

:func:`needle_prefilter` gives cheap conditions over these columns that every line
holding a needle satisfies, so a substring search rebuilds only the candidate lines.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from monitoringserver.logs.schema import HEAD_COLUMNS
from monitoringserver.logs.tmplsplit import Encoded, encode_messages

__all__ = [
    "INT_SLOTS",
    "TEMPLATES_SUFFIX",
    "encoded_relation",
    "encoded_tables",
    "literal_segments",
    "needle_prefilter",
    "restored_relation",
]

TEMPLATES_SUFFIX = "+tmpl"
#: Integer variables stored in their own column by position; the rest go to ``irest``.
INT_SLOTS = 24
#: Lines per numpy pass of :func:`encoded_tables`.
CHUNK_LINES = 65_536
_ENCODERS = 2  # chunks encoded at once (threads); at most one more waits to be inserted
# The list columns of a chunk, as comma-separated text.
_SPARSE = ("ints", "ua", "ha", "wa")

_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_HEX32 = "[0-9a-f]{32}"
# A run of 8+ hex digits with at least one letter (as two alternatives: the first
# letter has 7+ hex digits after it, or the last letter has 7+ before it).
_HEXW = "[0-9]*[a-fA-F][0-9a-fA-F]{7,}|[0-9a-fA-F]{7,}[a-fA-F][0-9]*"
# Group 1: the character before (not a letter/digit/underscore), 2: leading zeros
# (kept in the template), 3: the integer.
_INT = "(^|[^0-9A-Za-z_])(0*)([0-9]{1,18})"
_OTHER = ", ".join(c for c in HEAD_COLUMNS if c != "message")
_MARKED = "regexp_matches(message, '[\\x01-\\x04]')"
# An id marker next to a hex digit, a dash or another marker (see needle_prefilter).
_GLUED = "[0-9a-fA-F\\x01-\\x04-][\\x01\\x02]|[\\x01\\x02][0-9a-fA-F\\x01-\\x04-]"
_HEXISH = frozenset("0123456789abcdefABCDEF-")
_MIN_SEGMENT = 3


def _q(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _ids(found: str, cast: str) -> str:
    return f"CASE WHEN len({found}) = 0 THEN NULL ELSE {found}::{cast}[] END"


def encoded_relation(src: str) -> str:
    """The rows of relation ``src`` (``HEAD_COLUMNS``) in the template layout: every
    column but ``message``, then ``tmpl``, ``verbatim``, ``i1..i24``, ``irest``,
    ``uuids``, ``hexids``, ``hexw`` (the SQL definition; see :func:`encoded_tables`)."""
    p1 = (
        f"SELECT {_OTHER}, {_MARKED} AS verbatim, message, "  # noqa: S608 -- constants
        f"regexp_extract_all(message, '{_UUID}') AS ua, "
        f"regexp_replace(message, '{_UUID}', chr(1), 'g') AS t1 FROM {src}"
    )
    p2 = (
        f"SELECT *, regexp_extract_all(t1, '{_HEX32}') AS ha, "  # noqa: S608
        f"regexp_replace(t1, '{_HEX32}', chr(2), 'g') AS t2 FROM ({p1})"
    )
    p3 = (
        f"SELECT *, regexp_extract_all(t2, '{_HEXW}') AS wa, "  # noqa: S608
        f"regexp_replace(t2, '{_HEXW}', chr(4), 'g') AS t3 FROM ({p2})"
    )
    p4 = (
        f"SELECT *, regexp_extract_all(t3, '{_INT}', 3)::BIGINT[] AS na, "  # noqa: S608
        f"regexp_replace(t3, '{_INT}', '\\1\\2' || chr(3), 'g') AS t4 FROM ({p3})"
    )
    # Lines with an id marker glued to hex text are kept verbatim too (rare), so that
    # ``uuids`` / ``hexids`` alone decide the id prefilters (see needle_prefilter).
    p5 = (
        f"SELECT *, verbatim OR CASE WHEN len(ua) = 0 AND len(ha) = 0 THEN false "  # noqa: S608
        f"ELSE regexp_matches(t4, '{_GLUED}') END AS v FROM ({p4})"
    )
    ints = ", ".join(f"CASE WHEN NOT v THEN na[{k}] END AS i{k}" for k in range(1, INT_SLOTS + 1))
    return (
        f"(SELECT {_OTHER}, CASE WHEN v THEN message ELSE t4 END AS tmpl, "  # noqa: S608
        f"v AS verbatim, {ints}, CASE WHEN NOT v AND len(na) > {INT_SLOTS} "
        f"THEN na[{INT_SLOTS + 1}:] END AS irest, "
        f"CASE WHEN v THEN []::UUID[] ELSE {_ids('ua', 'UUID')} END AS uuids, "
        f"CASE WHEN v THEN []::UUID[] ELSE {_ids('ha', 'UUID')} END AS hexids, "
        f"CASE WHEN NOT v THEN {_ids('wa', 'VARCHAR')} END AS hexw FROM ({p5}))"
    )


def _final(rel: str) -> str:
    """The template-layout columns from ``rel``: ``_OTHER`` and the
    :class:`.tmplsplit.Encoded` fields (``v`` verbatim, ``tmpl`` (the message when
    verbatim), ``ints``/``ua``/``ha``/``wa`` as comma-separated text)."""
    ints = ", ".join(f"CASE WHEN NOT v THEN na[{k}] END AS i{k}" for k in range(1, INT_SLOTS + 1))
    # A row whose other columns are not those its message was read with stops the
    # statement (the two tables did not line up).
    checked = (
        "CASE WHEN rk = rk2 THEN tmpl ELSE error('cannot encode log lines: "
        "an encoded row does not line up with its columns') END"
    )
    return (
        f"(SELECT {_OTHER}, {checked} AS tmpl, v AS verbatim, {ints}, "  # noqa: S608
        f"CASE WHEN NOT v AND len(na) > {INT_SLOTS} THEN na[{INT_SLOTS + 1}:] END AS irest, "
        "CASE WHEN v THEN []::UUID[] ELSE string_split(ua, ',')::UUID[] END AS uuids, "
        "CASE WHEN v THEN []::UUID[] ELSE string_split(ha, ',')::UUID[] END AS hexids, "
        "CASE WHEN NOT v THEN string_split(wa, ',') END AS hexw "
        f"FROM (SELECT *, string_split(ints, ',')::BIGINT[] AS na FROM {rel}))"
    )


def _insert_chunk(
    cur: duckdb.DuckDBPyConnection,
    table: str,
    row_keys: object,
    messages: list[str],
    enc: Encoded,
) -> None:
    """Append the rows of ``enc`` to ``table`` (numpy columns; lists as text; the
    message itself as the template of a verbatim line), each with its row key."""
    name = f"{table}_in"
    tmpl = np.array(enc.tmpl, dtype=object)
    for i in np.flatnonzero(enc.verbatim).tolist():
        tmpl[i] = messages[i]
    cols: dict[str, object] = {"rk": row_keys, "tmpl": tmpl, "v": enc.verbatim}
    for col, values in zip(_SPARSE, (enc.ints, enc.uuids, enc.hexids, enc.hexw), strict=True):
        cols[col] = np.array(values, dtype=object)
    cur.register(name, cols)
    try:
        cur.execute(f"INSERT INTO {table} SELECT * FROM {name}")  # noqa: S608
    finally:
        cur.unregister(name)


@contextlib.contextmanager
def encoded_tables(
    cur: duckdb.DuckDBPyConnection, src: str, *, chunk_lines: int | None = None
) -> Iterator[str]:
    """The rows of relation ``src`` in the template layout, the same values as
    :func:`encoded_relation`, found with numpy (:func:`.tmplsplit.encode_messages`,
    several times cheaper than DuckDB's regex functions, whose cost is per match).

    The rows of ``src`` are copied into a temporary table (``src`` is read once: a
    union of files need not give its rows in the same order twice), their messages
    encoded ``chunk_lines`` (default :data:`CHUNK_LINES`) at a time into a second one;
    the other columns are then copied out and the messages dropped, and the relation
    yielded joins the two tables by position (``cur`` runs with
    ``preserve_insertion_order`` on, so a table scan keeps its order). Each encoded row
    carries a hash of its other columns, checked in the join: a misaligned row fails
    the statement reading the relation, never a silent mix-up. The tables live on
    ``cur`` (a connection of its own) until the block ends."""
    chunk = chunk_lines or CHUNK_LINES
    name = f"_tmpl_{secrets.token_hex(4)}"
    try:
        cur.execute(
            f"CREATE TEMP TABLE {name}_m AS "  # noqa: S608
            f"SELECT {_OTHER}, hash({_OTHER}) AS rk, message FROM {src}"
        )
        cur.execute(
            f"CREATE TEMP TABLE {name}_e (rk UBIGINT, tmpl VARCHAR, v BOOLEAN, "
            "ints VARCHAR, ua VARCHAR, ha VARCHAR, wa VARCHAR)"
        )
        total = int(cur.execute(f"SELECT count(*) FROM {name}_m").fetchall()[0][0])  # noqa: S608
        # numpy releases the GIL for most of the encoding: two chunks at a time use
        # both cores; chunks are fetched and inserted in order on this thread.
        with ThreadPoolExecutor(max_workers=_ENCODERS) as pool:
            pending: deque[tuple[Any, list[str], Future[Encoded]]] = deque()
            for lo in range(0, total, chunk):
                part = cur.execute(
                    f"SELECT rk, message FROM {name}_m WHERE rowid >= ? AND rowid < ?",  # noqa: S608
                    [lo, lo + chunk],
                ).fetchnumpy()
                messages = part["message"].tolist()
                pending.append((part["rk"], messages, pool.submit(encode_messages, messages)))
                if len(pending) > _ENCODERS:
                    keys, done, enc = pending.popleft()
                    _insert_chunk(cur, f"{name}_e", keys, done, enc.result())
            while pending:
                keys, done, enc = pending.popleft()
                _insert_chunk(cur, f"{name}_e", keys, done, enc.result())
        # Keep the other columns (same order: one table's scan), free the messages.
        cur.execute(
            f"CREATE TEMP TABLE {name}_o AS "  # noqa: S608
            f"SELECT {_OTHER}, hash({_OTHER}) AS rk2 FROM {name}_m"
        )
        cur.execute(f"DROP TABLE {name}_m")
        rel = f"(SELECT * FROM {name}_o POSITIONAL JOIN {name}_e)"  # noqa: S608
        yield _final(rel)
    finally:
        for table in ("m", "o", "e"):
            cur.execute(f"DROP TABLE IF EXISTS {name}_{table}")


def _back(text: str, values: str, marker: int, render: str) -> str:
    """``text`` with its ``chr(marker)`` bytes replaced by the rendered ``values``
    (``render`` uses ``v`` for one value); a single value takes the cheap path."""
    one = render.replace("v", f"{values}[1]")
    many = render.replace("v", "p[2]")
    return (
        f"CASE WHEN {values} IS NULL THEN {text} "
        f"WHEN len({values}) = 1 THEN replace({text}, chr({marker}), {one}) "
        f"ELSE array_to_string(list_transform(list_zip(string_split({text}, chr({marker})), "
        f"{values}), lambda p: p[1] || coalesce({many}, '')), '') END"
    )


def restored_relation(files: Sequence[Path], extra: Sequence[str] = ()) -> str:
    """``HEAD_COLUMNS`` of template-layout archive files, messages rebuilt, followed
    by the stored columns named in ``extra`` (e.g. those :func:`needle_prefilter` uses).

    One subquery per kind of variable, each naming its result, keeps the expression
    linear in size (nesting the steps would copy each one into the next three times,
    and planning such a tree costs more than scanning a few row groups)."""
    paths = ", ".join(_q(p) for p in files)
    rel = f"read_parquet([{paths}])"
    steps = (
        ("tmpl", "hexw", 4, "v", "t1"),
        ("t1", "hexids", 2, "replace(v::VARCHAR, '-', '')", "t2"),
        ("t2", "uuids", 1, "v::VARCHAR", "t3"),
    )
    for text, values, marker, render, name in steps:
        rel = f"(SELECT *, {_back(text, values, marker, render)} AS {name} FROM {rel})"  # noqa: S608
    # The integers go back last, by position: split once, then one concat.
    rel = (
        "(SELECT *, CASE WHEN verbatim OR i1 IS NULL THEN NULL "  # noqa: S608
        f"ELSE string_split(t3, chr(3)) END AS s FROM {rel})"
    )
    parts = ", ".join(f"s[{k}], i{k}::VARCHAR" for k in range(1, INT_SLOTS + 1))
    tail = (
        f"CASE WHEN irest IS NULL THEN s[{INT_SLOTS + 1}] ELSE array_to_string("
        f"list_transform(list_zip(s[{INT_SLOTS + 1}:], irest), "
        "lambda p: p[1] || coalesce(p[2]::VARCHAR, '')), '') END"
    )
    message = (
        f"CASE WHEN verbatim THEN tmpl WHEN s IS NULL THEN t3 ELSE concat({parts}, {tail}) END"
    )
    cols = ", ".join(c if c != "message" else f"{message} AS message" for c in HEAD_COLUMNS)
    more = "".join(f", {c}" for c in extra)
    return f"(SELECT {cols}{more} FROM {rel})"  # noqa: S608 -- constants, quoted paths


def literal_segments(needle: str) -> list[str]:
    """Pieces of ``needle`` that stay literal text in ``tmpl`` wherever the needle
    occurs in a message, so ``contains(tmpl, piece)`` holds for every matching line.

    Variables consist of hex digits and dashes only (``[0-9a-fA-F-]``). A character
    outside that set is always literal; so is a run of that set with other characters
    on both sides inside the needle when it is shorter than 8 and holds no decimal
    digit (the same run then stands alone in the line, too short for any variable).
    Pieces shorter than 3 characters are dropped (they prune little)."""
    safe = [c not in _HEXISH for c in needle]
    i = 0
    while i < len(needle):
        if needle[i] not in _HEXISH:
            i += 1
            continue
        j = i
        while j < len(needle) and needle[j] in _HEXISH:
            j += 1
        run = needle[i:j]
        inner = i > 0 and j < len(needle)
        if inner and len(run) < 8 and not any(c.isdigit() for c in run):
            safe[i:j] = [True] * (j - i)
        i = j
    pieces: list[str] = []
    start = None
    for k, ok in enumerate([*safe, False]):
        if ok and start is None:
            start = k
        elif not ok and start is not None:
            pieces.append(needle[start:k])
            start = None
    return [p for p in pieces if len(p) >= _MIN_SEGMENT]


def needle_prefilter(needle: str) -> list[tuple[str, list[object]]]:
    """SQL conditions (with their parameters) over ``tmpl``, ``uuids`` and ``hexids``
    that every line containing ``needle`` satisfies: cheap supersets, to be AND-ed
    with the exact test on the rebuilt message. Each reads one column, so DuckDB
    evaluates it inside the Parquet scan and decodes the other columns only for the
    rows that pass.

    * each :func:`literal_segments` piece is in ``tmpl`` (``tmpl`` is the message
      itself for verbatim lines);
    * a lower-case UUID (or 32-hex id) inside the needle is in ``uuids`` (``hexids``),
      or the list is empty (verbatim lines). A pass finds every occurrence of its
      pattern that no earlier match overlaps; two id-shaped windows overlap only inside
      a longer run of hex digits and dashes, and then the marker of the id taken out
      stands next to a hex digit, a dash or another marker: such lines are verbatim.

    Relations without these columns (the head, older archive layouts) provide
    ``tmpl = message`` and empty id lists, so every condition holds there."""
    out: list[tuple[str, list[object]]] = [
        ("contains(tmpl, ?)", [piece]) for piece in literal_segments(needle)
    ]
    for col, pattern in (("uuids", _UUID), ("hexids", _HEX32)):
        m = re.search(pattern, needle)
        if m is not None:
            cond = f"coalesce(len({col}) = 0 OR list_contains({col}, ?::UUID), false)"
            out.append((cond, [m.group()]))
    return out
