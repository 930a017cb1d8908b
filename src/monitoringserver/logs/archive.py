"""Archive files of the log store: options, manifest rows, and writing one archive.

An archive is a Parquet file (zstd, Parquet V2) of lines moved out of the head table,
with a token index kept in the manifest (a :class:`~.keyset.KeySet`; bloom filters in
archives written before, or with ``index_pairs``). Three file layouts exist, told apart
by the manifest's ``hash_version`` (:func:`layout_of`):

* ``plain``: ``HEAD_COLUMNS`` as they are, sorted by host, source, logger, time; what a
  flush writes by default (the cheapest to encode: archiving runs beside ingest);
* ``idcols``: ids in 16-byte columns (:mod:`.idcols`), sorted likewise; what a flush
  writes with ``flush_layout = "idcols"`` (~8 % smaller, ~1.5 µs more CPU per line);
* ``tmpl``: template + typed variables (:mod:`.templates`), sorted by host, source,
  logger, template, time; what compaction writes (smallest; encoded with numpy,
  :mod:`.tmplsplit`, ~4 µs per line).

Readers go through :func:`files_source`, which rebuilds the messages of every layout.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from monitoringserver.errors import BadDataError
from monitoringserver.logs import idcols, templates
from monitoringserver.logs.api import ArchiveInfo
from monitoringserver.logs.bloom import TokenBloom
from monitoringserver.logs.idcols import IDCOLS_SUFFIX
from monitoringserver.logs.keyset import FRESH_BITS, KeySet, bits_for
from monitoringserver.logs.patterns import IDS_SQL, PAIRS_SQL, TOKENS_SQL
from monitoringserver.logs.schema import HEAD_COLUMNS
from monitoringserver.logs.templates import TEMPLATES_SUFFIX
from monitoringserver.logs.tokenkeys import (
    CHUNK_LINES,
    GROUPS_DROPPED_SUFFIX,
    NUMPY_KEYS_SUFFIX,
    chunked_key_hashes,
)

__all__ = [
    "ARCHIVE_COLS",
    "GROUPS_DROPPED_SUFFIX",
    "IDCOLS_SUFFIX",
    "IDS_SUFFIX",
    "KEYSET_SUFFIX",
    "LAYOUTS",
    "NO_PREFILTER",
    "NUMPY_KEYS_SUFFIX",
    "PAIRS_SUFFIX",
    "PREFILTER_COLUMNS",
    "TEMPLATES_SUFFIX",
    "ArchiveEntry",
    "LogStoreOptions",
    "TokenFilter",
    "archive_info",
    "build_archive",
    "files_source",
    "fsync_path",
    "head_source",
    "layout_of",
    "load_filter",
    "mergeable_filters",
    "sql_path",
]

PAIRS_SUFFIX = "+pairs"
#: In ``hash_version``: the token index is a :class:`~.keyset.KeySet` (else a bloom filter).
KEYSET_SUFFIX = "+ks1"
#: The token index of an archive: either kind answers ``might_contain_all``.
TokenFilter = TokenBloom | KeySet
#: In ``hash_version``: the filter also holds the id keys of ``IDS_SQL`` (archives
#: written before those existed lack the suffix and are never pruned by id keys).
IDS_SUFFIX = "+ids"
#: File layouts, oldest first (see the module docstring).
LAYOUTS = ("plain", "idcols", "tmpl")
#: Stored columns :func:`.templates.needle_prefilter` conditions use; :func:`files_source`
#: provides them for every layout (``prefilter=True``).
PREFILTER_COLUMNS = ("tmpl", "uuids", "hexids")
#: Stand-ins for :data:`PREFILTER_COLUMNS` under which every prefilter condition holds.
NO_PREFILTER = "message AS tmpl, []::UUID[] AS uuids, []::UUID[] AS hexids"
ARCHIVE_COLS = (
    "id, path, min_ts, max_ts, hosts, attr_keys, lines, raw_bytes, stored_bytes, created_ms, "
    "bloom, hash_version"
)


@dataclass(frozen=True, slots=True)
class LogStoreOptions:
    """``compression_level``: zstd level of archives (1..22). ``flush_lines`` /
    ``flush_interval_s``: when the head becomes an archive. ``row_group_lines``: Parquet
    row group size. ``compact_dictionary_limit``: DuckDB's ``DICTIONARY_SIZE_LIMIT``
    for compacted archives: a column chunk whose dictionary would be larger is
    written without one (delta or plain): the integer fields with many values
    (sizes, ports, ids) then do not repeat a large dictionary in every row group
    (~6 % smaller files; templates and small fields keep theirs). ``retention_s`` /
    ``max_total_bytes``: automatic rotation by age and by total stored size (None =
    off). ``accept_future_s``: lines stamped further ahead are rejected (``too_new``);
    lines older than ``retention_s`` are rejected (``too_old``).
    ``index_fp_rate``: false positives per probed key of a compacted archive's token
    index (a :class:`~.keyset.KeySet`, ~9 bits per distinct key at 0.01; a fresh
    archive's index keeps :data:`~.keyset.FRESH_BITS`-bit fingerprints, ~0.01 %, so
    that merging can choose the rate). ``index_pairs``: bloom filters (of
    ``bloom_bits_per_key`` bits per key) that also hold pairs of consecutive runs, so
    needles made of short groups prune archives too; costs ~5x the flush CPU and ~4x
    the filter size. Compaction merges the oldest ``compact_min_archives`` (or more)
    fresh archives, up to ``compact_max_lines`` lines, into one at ``compaction_level``.
    ``flush_layout``: file layout of fresh archives, ``"plain"`` (cheapest to write,
    ~8 % larger) or ``"idcols"`` (ids in binary columns, ~1.5 µs more CPU per line);
    compaction rewrites both as templates."""

    compression_level: int = 3
    flush_lines: int = 1_000_000
    flush_interval_s: float = 300.0
    row_group_lines: int = 65_536
    compact_dictionary_limit: int = 5000
    retention_s: float | None = 7 * 86_400.0
    max_total_bytes: int | None = None
    bloom_bits_per_key: int = 16
    index_fp_rate: float = 0.01
    index_pairs: bool = False
    compaction_level: int = 9
    compact_min_archives: int = 4
    compact_max_lines: int = 4_000_000
    accept_future_s: float = 600.0
    flush_layout: str = "plain"

    def __post_init__(self) -> None:
        if not 1 <= self.compression_level <= 22:
            raise BadDataError("cannot configure log store: compression_level must be 1..22")
        if not 1 <= self.compaction_level <= 22:
            raise BadDataError("cannot configure log store: compaction_level must be 1..22")
        if self.flush_layout not in ("plain", "idcols"):
            raise BadDataError("cannot configure log store: flush_layout must be plain or idcols")
        if not 0 < self.index_fp_rate < 1:
            raise BadDataError("cannot configure log store: index_fp_rate must be in (0, 1)")
        if (
            self.flush_lines < 1
            or self.row_group_lines < 1
            or self.compact_dictionary_limit < 1
            or self.flush_interval_s <= 0
        ):
            raise BadDataError("cannot configure log store: flush limits must be positive")


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """A manifest row with what queries need for pruning."""

    info: ArchiveInfo
    path: Path
    attr_keys: tuple[str, ...]
    bloom: TokenFilter | None
    pairs_indexed: bool = False
    ids_indexed: bool = False
    id_columns: bool = False
    layout: str = "plain"
    #: The filter's keys are :mod:`.tokenkeys` hashes (else DuckDB ``hash()``).
    numpy_keys: bool = False
    #: The index leaves out UUID group runs (:func:`.tokenkeys.uuid_group_tokens`).
    groups_dropped: bool = False


def layout_of(hash_version: str) -> str:
    """The file layout of an archive from its manifest ``hash_version``."""
    flags = {"+" + f for f in hash_version.split("+")[1:]}
    if TEMPLATES_SUFFIX in flags:
        return "tmpl"
    return "idcols" if IDCOLS_SUFFIX in flags else "plain"


def fsync_path(path: Path) -> None:
    """fsync a file or a directory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def archive_info(r: tuple[Any, ...]) -> ArchiveInfo:
    """A manifest row (``ARCHIVE_COLS``, optionally followed by the bloom's size)."""
    sized = len(r) > 12
    index = int(r[12] or 0) if sized else (len(r[10]) if r[10] is not None else 0)
    return ArchiveInfo(r[0], r[2], r[3], tuple(r[4]), r[6], r[7], r[8], r[9], index)


def sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def head_source(cutoff: int) -> str:
    """The head rows a flush archives: everything inserted up to batch ``cutoff``."""
    return f"(SELECT {', '.join(HEAD_COLUMNS)} FROM log_head WHERE batch <= {int(cutoff)})"  # noqa: S608


def files_source(files: Sequence[tuple[Path, str]], *, prefilter: bool = False) -> str:
    """Archive files as one relation of ``HEAD_COLUMNS`` with their lines rebuilt.
    ``files``: (path, layout); layouts may be mixed. ``prefilter``: also the
    :data:`PREFILTER_COLUMNS` (stand-ins that keep every row for layouts without them)."""
    parts: list[str] = []
    cols = ", ".join(HEAD_COLUMNS)
    for layout in LAYOUTS:
        paths = [p for p, lay in files if lay == layout]
        if not paths:
            continue
        if layout == "tmpl":
            rel = templates.restored_relation(paths, PREFILTER_COLUMNS if prefilter else ())
            parts.append(f"SELECT * FROM {rel}")  # noqa: S608 -- quoted paths
            continue
        if layout == "idcols":
            rel = idcols.restored_relation([(p, True) for p in paths])
        else:
            rel = f"read_parquet([{', '.join(sql_path(p) for p in paths)}])"
        more = f", {NO_PREFILTER}" if prefilter else ""
        parts.append(f"SELECT {cols}{more} FROM {rel}")  # noqa: S608
    if not parts:
        raise ValueError("files_source needs at least one file")
    return "(" + " UNION ALL ".join(parts) + ")"


def load_filter(data: bytes) -> TokenFilter:
    """The token index stored in a manifest row (either kind, told by its magic)."""
    return KeySet.from_bytes(data) if data[:4] == b"LKS1" else TokenBloom.from_bytes(data)


def _filter(
    cur: duckdb.DuckDBPyConnection,
    opts: LogStoreOptions,
    src: str | None,
    sources: Sequence[KeySet] | None,
    *,
    compacted: bool,
) -> TokenFilter:
    """The token index of an archive: the union of ``sources`` (their key sets), or
    the keys of the lines of ``src`` (:mod:`.tokenkeys`, UUID groups left out) at
    :data:`FRESH_BITS` (fresh) or at ``index_fp_rate`` (``compacted``); with
    ``index_pairs`` a bloom filter of DuckDB ``hash()`` of the
    ``TOKENS_SQL``/``IDS_SQL``/``PAIRS_SQL`` tokens (the older, slower way)."""
    if sources is not None and not opts.index_pairs:
        return KeySet.merged(sources, opts.index_fp_rate)
    if src is None:
        raise ValueError("an index needs either lines or source key sets")
    if opts.index_pairs:
        key_sql = f"{TOKENS_SQL} UNION ALL {IDS_SQL} UNION ALL {PAIRS_SQL}"
        sql = f"SELECT DISTINCT hash(tok) AS h FROM ({key_sql.replace('{src}', src)})"  # noqa: S608
        hashes = np.asarray(cur.execute(sql).fetchnumpy()["h"], dtype=np.uint64)
        return TokenBloom.build(hashes, bits_per_key=opts.bloom_bits_per_key)
    cur.execute(f"SELECT message FROM {src}")  # noqa: S608

    def chunks() -> Iterator[list[str]]:
        while rows := cur.fetchmany(CHUNK_LINES):
            yield [r[0] for r in rows]

    keys = chunked_key_hashes(chunks(), groups_dropped=True)
    bits = bits_for(len(keys), opts.index_fp_rate) if compacted else FRESH_BITS
    return KeySet.build(keys, bits)


def mergeable_filters(
    rows: Sequence[tuple[Any, ...]], opts: LogStoreOptions
) -> list[KeySet] | None:
    """The key sets of manifest rows ``(id, path, lines, hash_version, bloom)`` when
    every one is a :class:`~.keyset.KeySet` of the same keys, so that the archive
    merged from them takes their union; else None (compaction then reads the lines
    again)."""
    if opts.index_pairs:
        return None
    out: list[KeySet] = []
    need = (KEYSET_SUFFIX, GROUPS_DROPPED_SUFFIX, NUMPY_KEYS_SUFFIX, IDS_SUFFIX)
    for r in rows:
        flags = {"+" + f for f in str(r[3]).split("+")[1:]}
        if r[4] is None or any(f not in flags for f in need) or PAIRS_SUFFIX in flags:
            return None
        out.append(KeySet.from_bytes(bytes(r[4])))
    return out


def build_archive(
    cur: duckdb.DuckDBPyConnection,
    directory: Path,
    opts: LogStoreOptions,
    src: str,
    created: int,
    *,
    level: int,
    layout: str = "idcols",
    key_sets: Sequence[KeySet] | None = None,
) -> tuple[ArchiveInfo, Path, list[object]] | None:
    """Write the rows of relation ``src`` (:func:`head_source` or :func:`files_source`)
    to a new archive file in ``layout`` (``"plain"``, ``"idcols"`` or ``"tmpl"``) at zstd ``level``
    (temporary name, fsync, rename) and compute its manifest row; None when there are
    none. Runs on a read cursor: the caller publishes the row (and removes the
    sources) on the writer. ``layout == "tmpl"`` marks a compacted archive (its index
    at ``index_fp_rate``). ``key_sets``: the indexes of the archives ``src`` is made of
    (:func:`mergeable_filters`), united instead of reading the lines again."""
    dictionary = ""
    if layout == "tmpl":
        encoded = ""  # the relation of templates.encoded_tables, below
        dictionary = f", DICTIONARY_SIZE_LIMIT {int(opts.compact_dictionary_limit)}"
        # By template text, not its hash: similar templates (zero-padding variants of
        # one line shape) then sit next to each other too (~2 % smaller, sorts slower).
        order = "server_id, source, logger, tmpl, ts"
    elif layout == "idcols":
        encoded = idcols.split_relation(src)
        order = "server_id, source, logger, ts"
    elif layout == "plain":
        encoded = src
        order = "server_id, source, logger, ts"
    else:
        raise ValueError(f"cannot write archive layout {layout!r}")
    row = cur.execute(
        f"SELECT count(*), min(ts), max(ts), coalesce(sum(strlen(message)), 0) FROM {src}"  # noqa: S608
    ).fetchall()[0]
    lines, lo, hi, raw = (int(x) if x is not None else 0 for x in row)
    if lines == 0:
        return None
    archive_id = f"{created:013d}-{secrets.token_hex(4)}"
    final = directory / f"{archive_id}.parquet"
    tmp = directory / f".{archive_id}.parquet.tmp"
    try:
        # The database runs with preserve_insertion_order=false; row-group pruning
        # and compression need the file in exactly this order (and the template
        # encoder its temporary tables in the order it wrote them).
        cur.execute("SET SESSION preserve_insertion_order = true")
        with contextlib.ExitStack() as stack:
            if layout == "tmpl":
                encoded = stack.enter_context(templates.encoded_tables(cur, src))
            cur.execute(
                f"COPY (SELECT * FROM {encoded} ORDER BY {order}) "  # noqa: S608
                f"TO {sql_path(tmp)} (FORMAT parquet, COMPRESSION zstd, "
                f"COMPRESSION_LEVEL {int(level)}, PARQUET_VERSION V2, "
                f"ROW_GROUP_SIZE {int(opts.row_group_lines)}{dictionary})"
            ).fetchall()
        fsync_path(tmp)
        hosts = sorted(
            r[0]
            for r in cur.execute(f"SELECT DISTINCT server_id FROM {src}").fetchall()  # noqa: S608
        )
        keys = sorted(
            r[0]
            for r in cur.execute(
                f"SELECT DISTINCT unnest(json_keys(attrs)) FROM {src} WHERE attrs <> ''"  # noqa: S608
            ).fetchall()
        )
        index = _filter(
            cur, opts, src if key_sets is None else None, key_sets, compacted=layout == "tmpl"
        )
        tmp.rename(final)
        fsync_path(directory)
    except BaseException:
        tmp.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        raise
    stored = final.stat().st_size
    row_out: list[object] = [
        archive_id,
        final.name,
        lo,
        hi,
        hosts,
        keys,
        lines,
        raw,
        stored,
        created,
        index.to_bytes(),
        duckdb.__version__
        + IDS_SUFFIX
        + ("" if opts.index_pairs else NUMPY_KEYS_SUFFIX + KEYSET_SUFFIX + GROUPS_DROPPED_SUFFIX)
        + {"tmpl": TEMPLATES_SUFFIX, "idcols": IDCOLS_SUFFIX, "plain": ""}[layout]
        + (PAIRS_SUFFIX if opts.index_pairs else ""),
    ]
    info = ArchiveInfo(archive_id, lo, hi, tuple(hosts), lines, raw, stored, created, len(index))
    return info, final, row_out
