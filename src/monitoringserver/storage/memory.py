"""Give freed native memory back to the operating system.

Compaction and batch inserts allocate and free large numpy and DuckDB buffers. glibc
keeps freed heap pages in its arenas, and DuckDB's own allocator (jemalloc, statically
linked into DuckDB on Linux) keeps freed pages for reuse for seconds, so resident memory
ratchets up to the largest job ever run and a job's peak stacks on the one before.
``malloc_trim(0)`` returns glibc's free pages; jemalloc's ``arena.<all>.purge`` returns
DuckDB's. Where either is missing (musl, macOS, a DuckDB build without jemalloc) that
part is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable

__all__ = ["release_free_memory"]

#: jemalloc's ``MALLCTL_ARENAS_ALL``: the arena index meaning every arena.
_ALL_ARENAS = 4096


@functools.cache
def _trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        fn: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return fn


_purge: list[Callable[[], int] | None] = []  # found once DuckDB is loaded


def _duckdb_purge() -> Callable[[], int] | None:
    """``mallctl("arena.<all>.purge")`` of the jemalloc inside DuckDB's extension
    module (exported as ``duckdb_je_mallctl``); ``None`` without one, or while DuckDB
    is not loaded (it is looked for again next time)."""
    if _purge:
        return _purge[0]
    module = sys.modules.get("_duckdb")
    origin = getattr(module, "__file__", None)
    if origin is None:
        return None
    try:
        mallctl = ctypes.CDLL(origin).duckdb_je_mallctl
    except (OSError, AttributeError):
        _purge.append(None)
        return None
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    mallctl.argtypes += [ctypes.c_size_t]
    mallctl.restype = ctypes.c_int
    name = f"arena.{_ALL_ARENAS}.purge".encode()

    def purge() -> int:
        rc: int = mallctl(name, None, None, None, 0)
        return rc

    _purge.append(purge)
    return purge


def release_free_memory() -> bool:
    """Trim the C heap and purge DuckDB's allocator; return whether anything could be
    done."""
    trim = _trim()
    purge = _duckdb_purge()
    if trim is not None:
        trim(0)
    if purge is not None:
        purge()
    return trim is not None or purge is not None
