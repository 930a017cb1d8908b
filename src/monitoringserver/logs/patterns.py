"""Message templates: variable parts (UUIDs, IPs, hex, paths, numbers) masked out.

``template("user 42 from 10.0.0.1 took 3.5ms")`` is ``"user <num> from <ip> took <num>ms"``
and :func:`pattern_id` of a template is a stable 16-hex-digit id (BLAKE2b), the same
on every server and after restarts.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["TOKEN_SQL_REGEX", "needle_tokens", "pattern_id", "template"]

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
_NEEDLE_TOKEN = re.compile(r"[A-Za-z0-9]{3,}")
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


def needle_tokens(needle: str) -> list[str]:
    """Tokens of a substring needle that must be whole tokens of any matching line.

    Only runs with an ASCII separator on both sides inside the needle qualify: the
    first and last run may be parts of longer tokens of the line. ``"id=7f3a9c-41"``
    gives ``["7f3a9c"]``; ``"abc"`` gives nothing (no pruning possible)."""
    out: list[str] = []
    for m in _NEEDLE_TOKEN.finditer(needle):
        s, e = m.span()
        if s > 0 and e < len(needle) and needle[s - 1] in _SEPARATOR and needle[e] in _SEPARATOR:
            out.append(m.group().lower())
    return out
