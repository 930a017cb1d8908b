"""Ids as 16-byte columns in archive files, messages rebuilt on read.

Random ids (UUIDs, 32-hex-digit trace ids) are the least compressible part of many
log lines: as text each costs ~18 B after zstd, as a Parquet ``UUID`` (16-byte fixed
binary) exactly 16. Archive files written with this layout (manifest ``hash_version``
ending in :data:`IDCOLS_SUFFIX`) store:

* ``message``: the text with every lower-case UUID replaced by ``chr(1)`` and then every
  remaining run of 32 lower-case hex digits replaced by ``chr(2)``;
* ``uuids`` / ``hexids``: ``UUID[]`` of the replaced values in order (NULL when none).

Lines that already contain ``chr(1)`` or ``chr(2)`` are stored verbatim (both lists
NULL). Only lower-case ids are taken out, so rebuilding (:func:`restored_relation`:
``chr(2)`` first, then ``chr(1)``, the inverse order) gives back the exact text. Every
reader (search, LogQL, compaction, bloom filters) goes through the rebuilt relation,
so substring and regex search see the original lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monitoringserver.logs.schema import HEAD_COLUMNS

__all__ = ["IDCOLS_SUFFIX", "restored_relation", "split_relation"]

IDCOLS_SUFFIX = "+idcols"

_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_HEX32 = "[0-9a-f]{32}"
_OTHER = ", ".join(c for c in HEAD_COLUMNS if c != "message")


def _q(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _take_out(text: str, found: str, pattern: str, marker: str) -> str:
    """``text`` with the ``pattern`` matches listed in ``found`` replaced by ``marker``.
    With one match ``replace`` does it: an id string occurs nowhere else in the text
    without being a further match of the pattern."""
    return (
        f"CASE WHEN len({found}) = 0 THEN {text} "
        f"WHEN len({found}) = 1 THEN replace({text}, {found}[1], {marker}) "
        f"ELSE regexp_replace({text}, '{pattern}', {marker}, 'g') END"
    )


def _as_uuids(found: str) -> str:
    return (
        f"CASE WHEN len({found}) = 0 THEN NULL WHEN len({found}) = 1 THEN [{found}[1]::UUID] "
        f"ELSE list_transform({found}, lambda x: x::UUID) END"
    )


def split_relation(src: str) -> str:
    """The rows of relation ``src`` (``HEAD_COLUMNS``) in the archive layout:
    ``HEAD_COLUMNS`` with the split ``message``, then ``uuids`` and ``hexids``."""
    marked = "contains(message, chr(1)) OR contains(message, chr(2))"
    step1 = (
        f"SELECT {_OTHER}, message, CASE WHEN {marked} THEN [] "  # noqa: S608 -- constants
        f"ELSE regexp_extract_all(message, '{_UUID}') END AS ua FROM {src}"
    )
    step2 = (
        f"SELECT {_OTHER}, ua, m1, CASE WHEN {marked} THEN [] "  # noqa: S608
        f"ELSE regexp_extract_all(m1, '{_HEX32}') END AS ha FROM ("
        f"SELECT {_OTHER}, message, ua, {_take_out('message', 'ua', _UUID, 'chr(1)')} AS m1 "
        f"FROM ({step1}))"
    )
    cols = ", ".join(
        c if c != "message" else f"{_take_out('m1', 'ha', _HEX32, 'chr(2)')} AS message"
        for c in HEAD_COLUMNS
    )
    return (
        f"(SELECT {cols}, {_as_uuids('ua')} AS uuids, "  # noqa: S608 -- constants
        f"{_as_uuids('ha')} AS hexids FROM ({step2}))"
    )


# With one id of a kind (the common case) ``replace`` puts it back (the line then holds
# exactly one marker); more than one goes through the split/zip/join lambda path.
_HEX_BACK = (
    "CASE WHEN hexids IS NULL THEN message "
    "WHEN len(hexids) = 1 THEN replace(message, chr(2), replace(hexids[1]::VARCHAR, '-', '')) "
    "ELSE array_to_string(list_transform(list_zip(string_split(message, chr(2)), hexids), "
    "lambda p: p[1] || coalesce(replace(p[2]::VARCHAR, '-', ''), '')), '') END"
)
_RESTORE = (
    "CASE WHEN uuids IS NULL AND hexids IS NULL THEN message "
    f"WHEN uuids IS NULL THEN {_HEX_BACK} "
    f"WHEN len(uuids) = 1 THEN replace({_HEX_BACK}, chr(1), uuids[1]::VARCHAR) "
    f"ELSE array_to_string(list_transform(list_zip(string_split({_HEX_BACK}, chr(1)), uuids), "
    "lambda p: p[1] || coalesce(p[2]::VARCHAR, '')), '') END"
)


def restored_relation(files: Sequence[tuple[Path, bool]]) -> str:
    """``HEAD_COLUMNS`` of archive files, messages rebuilt. ``files``: (path, whether
    it has the id columns); files of both layouts may be mixed."""
    paths = ", ".join(_q(p) for p, _ in files)
    if not any(split for _, split in files):
        return f"read_parquet([{paths}])"
    cols = ", ".join(c if c != "message" else f"{_RESTORE} AS message" for c in HEAD_COLUMNS)
    return f"(SELECT {cols} FROM read_parquet([{paths}], union_by_name = true))"  # noqa: S608
