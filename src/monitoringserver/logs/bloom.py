"""A bloom filter over 64-bit token hashes, built and probed with numpy.

Keys are DuckDB ``hash(token)`` values (UBIGINT), so the store builds a filter from
``SELECT DISTINCT hash(tok) ...`` without moving tokens through Python. Bit ``i`` of
key ``h`` is ``(h1 + i*h2) mod m`` with ``h1``/``h2`` the low/high 32 bits (Kirsch-
Mitzenmacher double hashing). No false negatives; false positives at about
``p = (1 - e^(-k n / m))^k`` (≈1 % with the default 10 bits per key, k = 7).
"""

from __future__ import annotations

import struct

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import StorageError

__all__ = ["TokenBloom"]

_HEADER = struct.Struct("<4sIQ")  # magic, k, m (bits)
_MAGIC = b"LBF1"


class TokenBloom:
    """Immutable after construction; safe to probe from many threads."""

    def __init__(self, bits: NDArray[np.uint8], m: int, k: int) -> None:
        self._bits = bits
        self.m = m
        self.k = k

    @classmethod
    def build(cls, hashes: NDArray[np.uint64], *, bits_per_key: int = 10, k: int = 7) -> TokenBloom:
        n = max(1, len(hashes))
        m = max(64, n * bits_per_key)
        m = (m + 7) // 8 * 8
        bits = np.zeros(m // 8, dtype=np.uint8)
        if len(hashes):
            for pos in cls._positions(np.asarray(hashes, dtype=np.uint64), m, k):
                np.bitwise_or.at(bits, pos >> 3, (1 << (pos & 7)).astype(np.uint8))
        return cls(bits, m, k)

    @staticmethod
    def _positions(hashes: NDArray[np.uint64], m: int, k: int) -> list[NDArray[np.uint64]]:
        h1 = hashes & np.uint64(0xFFFFFFFF)
        h2 = (hashes >> np.uint64(32)) | np.uint64(1)
        mm = np.uint64(m)
        return [(h1 + np.uint64(i) * h2) % mm for i in range(k)]

    def might_contain_all(self, hashes: NDArray[np.uint64]) -> bool:
        """False only if some key was certainly never added."""
        if not len(hashes):
            return True
        ok = np.ones(len(hashes), dtype=bool)
        for pos in self._positions(np.asarray(hashes, dtype=np.uint64), self.m, self.k):
            ok &= (
                (self._bits[pos >> np.uint64(3)] >> (pos & np.uint64(7)).astype(np.uint8)) & 1
            ) == 1
        return bool(ok.all())

    def to_bytes(self) -> bytes:
        return _HEADER.pack(_MAGIC, self.k, self.m) + self._bits.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> TokenBloom:
        if len(data) < _HEADER.size:
            raise StorageError("cannot read bloom filter: too short")
        magic, k, m = _HEADER.unpack_from(data)
        bits = np.frombuffer(data, dtype=np.uint8, offset=_HEADER.size)
        if magic != _MAGIC or len(bits) * 8 != m or not 1 <= k <= 32:
            raise StorageError("cannot read bloom filter: bad header")
        return cls(bits, m, k)

    def __len__(self) -> int:
        """Size in bytes when serialised."""
        return _HEADER.size + len(self._bits)
