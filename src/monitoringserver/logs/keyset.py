"""Token indexes of archives as sets of key fingerprints (Elias-Fano coded).

A :class:`KeySet` holds the distinct *fingerprints* of an archive's token keys: the top
``bits`` bits of each 64-bit key hash (:mod:`.tokenkeys`). A key that the archive does
not hold is reported present with probability about ``n / 2**bits`` (``n`` fingerprints);
a key it holds always is (no false negatives). Compared with the bloom filters of
:mod:`.bloom` it

* costs less: about ``log2(1/p) + 2`` bits per key (~9 at 1 %) against ~9.6 for an
  optimal bloom filter (16 were used so that merged archives stay near 1 %);
* merges exactly: the set of an archive made of others is the union of theirs, their
  fingerprints shortened to the bits the union needs for its rate (the top bits of a
  top-``b`` fingerprint are the top bits of the hash), so compaction neither reads the
  lines again nor keeps one filter per source; keys shared by the sources count once.

Layout (``LKS1``): header (magic, ``bits``, low bits ``L``, ``n``, buckets, samples),
then the low ``L`` bits of every fingerprint packed (little-endian bit order), the
high parts as a bitmap (fingerprint ``i`` in bucket ``h`` sets bit ``h + i``; every
bucket ends with a zero bit), and the bitmap position of every
:data:`SAMPLE_BUCKETS`-th bucket, so a probe decodes a few dozen bytes, never the set.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import StorageError

__all__ = ["FRESH_BITS", "SAMPLE_BUCKETS", "KeySet", "bits_for"]

_MAGIC = b"LKS1"
_HEADER = struct.Struct("<4sBBxxQQQ")  # magic, bits, low bits, n, buckets, samples
#: Buckets between two stored bitmap positions (bounds the bytes a probe decodes).
SAMPLE_BUCKETS = 256
#: Fingerprint bits of a fresh archive's set: far more than its own rate needs
#: (~0.01 % at 500 k keys), so that merged archives can still choose theirs.
FRESH_BITS = 32
_U64 = np.uint64


def _distinct(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Sorted distinct ``values`` (sort + mask: ``np.unique`` is ~40x slower here)."""
    values = np.sort(values)
    if len(values) < 2:
        return values
    return np.asarray(values[np.concatenate([[True], values[1:] != values[:-1]])], dtype=_U64)


def bits_for(n: int, fp_rate: float) -> int:
    """Fingerprint bits for ``n`` keys at about ``fp_rate`` false positives per key
    (the nearest power of two: between ``0.71 * fp_rate`` and ``1.41 * fp_rate``)."""
    if not 0 < fp_rate < 1:
        raise ValueError("fp_rate must be in (0, 1)")
    return max(1, min(64, round(math.log2(max(1, n) / fp_rate))))


class KeySet:
    """Immutable; safe to probe from many threads."""

    __slots__ = ("_bitmap", "_buckets", "_lows", "_n", "_samples", "bits", "low_bits")

    def __init__(
        self,
        *,
        bits: int,
        low_bits: int,
        n: int,
        buckets: int,
        lows: bytes,
        bitmap: bytes,
        samples: NDArray[np.uint32],
    ) -> None:
        self.bits = bits
        self.low_bits = low_bits
        self._n = n
        self._buckets = buckets
        self._lows = lows
        self._bitmap = bitmap
        self._samples = samples

    @property
    def keys(self) -> int:
        """Distinct fingerprints held."""
        return self._n

    @classmethod
    def build(cls, hashes: NDArray[np.uint64], bits: int) -> KeySet:
        """The set of the top ``bits`` bits of ``hashes`` (64-bit key hashes, any order,
        repeats allowed)."""
        if not 1 <= bits <= 64:
            raise ValueError("bits must be 1..64")
        fps = np.asarray(hashes, dtype=_U64) >> _U64(64 - bits)
        return cls._encode(_distinct(fps), bits)

    @classmethod
    def merged(cls, sets: Sequence[KeySet], fp_rate: float) -> KeySet:
        """The set of the union of ``sets``, at about ``fp_rate`` per key (or the rate
        of the shortest source fingerprints when those cannot reach it)."""
        if not sets:
            raise ValueError("merged needs at least one key set")
        bits = min(s.bits for s in sets)
        union = _distinct(np.concatenate([s.fingerprints() >> _U64(s.bits - bits) for s in sets]))
        target = min(bits, bits_for(len(union), fp_rate))
        if target < bits:
            union = _distinct(union >> _U64(bits - target))
        return cls._encode(union, target)

    @classmethod
    def _encode(cls, fps: NDArray[np.uint64], bits: int) -> KeySet:
        """``fps``: sorted distinct values below ``2**bits``."""
        n = len(fps)
        low_bits = max(0, math.floor(math.log2(2**bits / n))) if n else 0
        low_bits = min(low_bits, bits, 56)
        highs = (fps >> _U64(low_bits)).astype(np.int64)
        buckets = int(highs[-1]) + 1 if n else 0
        if n + buckets >= 2**32:
            raise ValueError("a key set holds fewer than 2**31 fingerprints")
        flags = np.zeros(n + buckets, dtype=bool)
        flags[highs + np.arange(n, dtype=np.int64)] = True
        bitmap = np.packbits(flags, bitorder="little").tobytes()
        if low_bits:
            lows = fps & _U64((1 << low_bits) - 1)
            shifts = np.arange(low_bits, dtype=_U64)
            grid = ((lows[:, None] >> shifts[None, :]) & _U64(1)).astype(bool)
            low_bytes = np.packbits(grid.ravel(), bitorder="little").tobytes()
        else:
            low_bytes = b""
        starts = np.arange(0, buckets, SAMPLE_BUCKETS, dtype=np.int64)
        samples = (np.searchsorted(highs, starts) + starts).astype(np.uint32)
        return cls(
            bits=bits,
            low_bits=low_bits,
            n=n,
            buckets=buckets,
            lows=low_bytes,
            bitmap=bitmap,
            samples=samples,
        )

    def fingerprints(self) -> NDArray[np.uint64]:
        """Every fingerprint, sorted (decodes the whole set)."""
        n = self._n
        if not n:
            return np.empty(0, dtype=_U64)
        flags = np.unpackbits(
            np.frombuffer(self._bitmap, dtype=np.uint8), count=n + self._buckets, bitorder="little"
        )
        ranks = np.arange(n, dtype=_U64)
        highs = np.asarray(np.flatnonzero(flags).astype(_U64) - ranks, dtype=_U64)
        out: NDArray[np.uint64] = highs << _U64(self.low_bits)
        lb = self.low_bits
        if lb:
            # Each value's bits lie in the 8 bytes from its first byte (lb <= 56).
            buf = np.zeros(len(self._lows) + 8, dtype=np.uint8)
            buf[: len(self._lows)] = np.frombuffer(self._lows, dtype=np.uint8)
            words = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
            start = np.arange(n, dtype=np.int64) * lb
            vals: NDArray[np.uint64] = words[start >> 3] >> (start & 7).astype(_U64)
            out |= vals & _U64((1 << lb) - 1)
        return out

    def _low(self, i: int) -> int:
        lb = self.low_bits
        if not lb:
            return 0
        start = i * lb
        chunk = self._lows[start // 8 : (start + lb + 7) // 8 + 1]
        return (int.from_bytes(chunk, "little") >> (start % 8)) & ((1 << lb) - 1)

    def _holds(self, fp: int) -> bool:
        lb = self.low_bits
        h, low = fp >> lb, fp & ((1 << lb) - 1)
        if h >= self._buckets:
            return False
        s = h // SAMPLE_BUCKETS
        pos = int(self._samples[s])  # bitmap position where bucket s*SAMPLE_BUCKETS starts
        zeros_to_skip = h - s * SAMPLE_BUCKETS
        data = self._bitmap
        size = len(data) * 8
        # Walk the bitmap from pos: skip the zeros that end the buckets before h (a
        # byte at a time while it cannot hold the last of them), then read the ones of
        # bucket h (fingerprint ranks: position - h) up to its zero.
        while pos < size:
            off = pos % 8
            byte = data[pos // 8] >> off
            if zeros_to_skip:
                span = 8 - off
                zeros = span - byte.bit_count()
                if zeros < zeros_to_skip:
                    zeros_to_skip -= zeros
                    pos += span
                    continue
                zeros_to_skip -= 1 - (byte & 1)
            elif byte & 1:
                if self._low(pos - h) == low:
                    return True
            else:
                return False
            pos += 1
        return False

    def might_contain_all(self, hashes: NDArray[np.uint64]) -> bool:
        """False only if some of the 64-bit key ``hashes`` is certainly not held."""
        shift = _U64(64 - self.bits)
        return all(self._holds(int(h)) for h in np.asarray(hashes, dtype=_U64) >> shift)

    def to_bytes(self) -> bytes:
        head = _HEADER.pack(
            _MAGIC, self.bits, self.low_bits, self._n, self._buckets, len(self._samples)
        )
        return head + self._lows + self._bitmap + self._samples.astype("<u4").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeySet:
        if len(data) < _HEADER.size or data[:4] != _MAGIC:
            raise StorageError("cannot read token key set: bad header")
        _, bits, low_bits, n, buckets, count = _HEADER.unpack_from(data)
        low_len = (n * low_bits + 7) // 8
        map_len = (n + buckets + 7) // 8
        want = _HEADER.size + low_len + map_len + 4 * count
        if (
            not 1 <= bits <= 64
            or low_bits > bits
            or count != (buckets + SAMPLE_BUCKETS - 1) // SAMPLE_BUCKETS
            or len(data) != want
        ):
            raise StorageError("cannot read token key set: bad header")
        off = _HEADER.size
        lows = data[off : off + low_len]
        bitmap = data[off + low_len : off + low_len + map_len]
        samples = np.frombuffer(data, dtype="<u4", count=count, offset=off + low_len + map_len)
        return cls(
            bits=bits,
            low_bits=low_bits,
            n=n,
            buckets=buckets,
            lows=lows,
            bitmap=bitmap,
            samples=samples.astype(np.uint32),
        )

    def __len__(self) -> int:
        """Size in bytes when serialised."""
        return (
            _HEADER.size
            + (self._n * self.low_bits + 7) // 8
            + (self._n + self._buckets + 7) // 8
            + 4 * len(self._samples)
        )
