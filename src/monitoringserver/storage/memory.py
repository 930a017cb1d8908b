"""Give freed native memory back to the operating system.

Compaction and batch inserts allocate and free large numpy and DuckDB buffers; glibc
keeps freed heap pages in its arenas, so resident memory ratchets up to the largest job
ever run. ``malloc_trim(0)`` returns those pages. On a C library without it (musl,
macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["release_free_memory"]


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


def release_free_memory() -> bool:
    """Trim the C heap; return whether anything could be done."""
    fn = _trim()
    if fn is None:
        return False
    fn(0)
    return True
