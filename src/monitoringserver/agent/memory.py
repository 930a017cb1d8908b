"""Keep the standalone agent process small: what it loads, and what it gives back.

Used only by ``agent/main.py`` (the agent's own process), never by the server's
built-in local agent, whose heap belongs to the server.

* :func:`keep_ssl_out` keeps CPython's ``ssl`` module (OpenSSL: about 4 MiB of RSS)
  out of the process: nothing in the agent needs it. ``asyncio`` imports ``ssl`` only
  to offer TLS on its own sockets, which the agent never uses: the connection to the
  server is encrypted by gRPC's built-in BoringSSL, and the container collector talks
  plain HTTP on the engine's unix socket through ``http.client``, which runs without
  ``ssl`` (that is why it does not use httpx, which imports ``ssl``).
* :func:`release_memory` returns freed heap pages to the kernel (start-up and each
  collection cycle allocate and free a few MiB; glibc keeps them otherwise).
* :func:`limit_malloc_arenas` caps glibc's per-thread malloc arenas (the agent runs
  a few gRPC threads; each arena it would create keeps its own free pages), unless
  ``MALLOC_ARENA_MAX`` is set in the environment, which wins.
* :func:`freeze_startup_objects` moves everything allocated during start-up into the
  garbage collector's permanent generation, so later collections do not walk it.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import sys

__all__ = [
    "freeze_startup_objects",
    "keep_ssl_out",
    "limit_malloc_arenas",
    "release_memory",
]

_M_ARENA_MAX = -8  # glibc <malloc.h>


def keep_ssl_out() -> bool:
    """Make later ``import ssl`` fail (asyncio then runs without TLS support).

    Only effective before anything imported ``ssl`` or ``asyncio`` (a process that
    already has them, such as a test runner, is left alone). Returns whether the
    block is in place.
    """
    if "ssl" in sys.modules or "asyncio" in sys.modules:
        return sys.modules.get("ssl", 0) is None
    sys.modules["ssl"] = None  # type: ignore[assignment]
    return True


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library when it is glibc (musl has neither malloc_trim nor mallopt)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The interpreter's own symbol table includes the C library it runs on.
        libc = ctypes.CDLL(None)
        libc.malloc_trim  # noqa: B018 (probe: raises AttributeError off glibc)
    except (OSError, AttributeError):
        return None
    return libc


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """``mallopt(M_ARENA_MAX, arenas)`` unless ``MALLOC_ARENA_MAX`` is set; call it
    before threads start. Returns whether the limit was applied."""
    libc = _libc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_memory() -> bool:
    """Collect cyclic garbage, then give free heap pages back (glibc ``malloc_trim``).

    Returns whether pages could be trimmed (False off glibc). Costs about a
    millisecond per call with the start-up objects frozen.
    """
    gc.collect()
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def freeze_startup_objects() -> None:
    """Collect, then freeze every live object (see :func:`gc.freeze`)."""
    gc.collect()
    gc.freeze()
