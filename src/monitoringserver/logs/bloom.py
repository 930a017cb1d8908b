"""Bloom filters over 64-bit token hashes, built and probed with numpy.

Bit ``i`` of key ``h`` is ``(h1 + i*h2) mod m`` with ``h1``/``h2`` the low/high 32 bits
(Kirsch-Mitzenmacher double hashing). No false negatives; false positives at about
``p = (1 - e^(-k n / m))^k`` (≈1 % with 10 bits per key and k = 7).

A :class:`TokenBloom` is one or more *segments*, each a filter of the keys of some of
the lines: :meth:`TokenBloom.merged` of the filters of archives is the filter of the
archive made of their lines, exact without touching a key (every line lies in one
segment, so the keys of a needle that all occur in one line all hit that segment;
:meth:`might_contain_all` asks whether some segment may hold all of them). The false
positive rate of the merged filter is at most the sum of its segments' rates.

Serialised as ``LBF1`` (one segment, the original format) or ``LBF2`` (a count, then
each segment's k, m and bits).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import StorageError

__all__ = ["TokenBloom"]

_HEADER = struct.Struct("<4sIQ")  # magic, k, m (bits)
_MAGIC = b"LBF1"
_MULTI = struct.Struct("<4sI")  # magic, segments
_MAGIC_MULTI = b"LBF2"
_SEGMENT = struct.Struct("<IQ")  # k, m (bits)

Segment = tuple[NDArray[np.uint8], int, int]  # bits, m, k


class TokenBloom:
    """Immutable after construction; safe to probe from many threads."""

    def __init__(self, bits: NDArray[np.uint8], m: int, k: int) -> None:
        self._segments: tuple[Segment, ...] = ((bits, m, k),)

    @property
    def m(self) -> int:
        """Bits of the first segment."""
        return self._segments[0][1]

    @property
    def k(self) -> int:
        return self._segments[0][2]

    @property
    def segments(self) -> int:
        return len(self._segments)

    @classmethod
    def _of(cls, segments: Sequence[Segment]) -> TokenBloom:
        out = cls.__new__(cls)
        out._segments = tuple(segments)
        return out

    @classmethod
    def build(
        cls,
        hashes: NDArray[np.uint64],
        *,
        bits_per_key: int = 10,
        k: int = 7,
    ) -> TokenBloom:
        """A one-segment filter of ``hashes`` (distinct keys: their count sizes it)."""
        n = max(1, len(hashes))
        m = max(64, n * bits_per_key)
        m = (m + 7) // 8 * 8
        flags = np.zeros(m, dtype=bool)
        if len(hashes):
            for pos in cls._positions(np.asarray(hashes, dtype=np.uint64), m, k):
                flags[pos] = True
        return cls(np.packbits(flags, bitorder="little"), m, k)

    @classmethod
    def merged(cls, blooms: Sequence[TokenBloom]) -> TokenBloom:
        """The filter of the union of the lines of ``blooms`` (their segments)."""
        if not blooms:
            raise ValueError("merged needs at least one filter")
        return cls._of([s for b in blooms for s in b._segments])

    @staticmethod
    def _positions(hashes: NDArray[np.uint64], m: int, k: int) -> list[NDArray[np.uint64]]:
        h1 = hashes & np.uint64(0xFFFFFFFF)
        h2 = (hashes >> np.uint64(32)) | np.uint64(1)
        mm = np.uint64(m)
        return [(h1 + np.uint64(i) * h2) % mm for i in range(k)]

    def might_contain_all(self, hashes: NDArray[np.uint64]) -> bool:
        """False only if no line was certainly holding every key (no segment holds
        them all)."""
        if not len(hashes):
            return True
        keys = np.asarray(hashes, dtype=np.uint64)
        for bits, m, k in self._segments:
            ok = np.ones(len(keys), dtype=bool)
            for pos in self._positions(keys, m, k):
                ok &= (
                    (bits[pos >> np.uint64(3)] >> (pos & np.uint64(7)).astype(np.uint8)) & 1
                ) == 1
            if ok.all():
                return True
        return False

    def to_bytes(self) -> bytes:
        if len(self._segments) == 1:
            bits, m, k = self._segments[0]
            return _HEADER.pack(_MAGIC, k, m) + bits.tobytes()
        parts = [_MULTI.pack(_MAGIC_MULTI, len(self._segments))]
        for bits, m, k in self._segments:
            parts += [_SEGMENT.pack(k, m), bits.tobytes()]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> TokenBloom:
        if data[:4] == _MAGIC_MULTI and len(data) >= _MULTI.size:
            (_, count), off = _MULTI.unpack_from(data), _MULTI.size
            segments: list[Segment] = []
            for _ in range(count):
                if len(data) < off + _SEGMENT.size:
                    raise StorageError("cannot read bloom filter: too short")
                k, m = _SEGMENT.unpack_from(data, off)
                off += _SEGMENT.size
                segments.append(cls._segment(data, off, m, k))
                off += m // 8
            if not segments or off != len(data):
                raise StorageError("cannot read bloom filter: bad header")
            return cls._of(segments)
        if len(data) < _HEADER.size:
            raise StorageError("cannot read bloom filter: too short")
        magic, k, m = _HEADER.unpack_from(data)
        if magic != _MAGIC or len(data) - _HEADER.size != m // 8:
            raise StorageError("cannot read bloom filter: bad header")
        return cls._of([cls._segment(data, _HEADER.size, m, k)])

    @staticmethod
    def _segment(data: bytes, off: int, m: int, k: int) -> Segment:
        if m % 8 or m < 8 or not 1 <= k <= 32 or len(data) < off + m // 8:
            raise StorageError("cannot read bloom filter: bad header")
        return np.frombuffer(data, dtype=np.uint8, count=m // 8, offset=off), m, k

    def __len__(self) -> int:
        """Size in bytes when serialised."""
        head = _HEADER.size if len(self._segments) == 1 else _MULTI.size
        per = 0 if len(self._segments) == 1 else _SEGMENT.size
        return head + sum(per + m // 8 for _, m, _ in self._segments)
