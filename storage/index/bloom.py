"""A Bloom filter over 64-bit keys that are already hashes (the index keys): three probes
by double hashing (Kirsch and Mitzenmacher) into a power-of-two bit array, checked and
filled a whole array of keys at a time. No false negatives; at 10 to 32 bits per key,
false positives for 1.7% to 0.1% of absent keys. Its size is capped at `MAX_BITS`
(16 MB), so memory stays bounded however long the chain: beyond about 13 million keys
the false positives grow, and each one costs only the read the filter would have saved."""
from __future__ import annotations

from typing import Iterable

import zlib

import numpy as np

MIN_BITS = 1 << 16
MAX_BITS = 1 << 27
_U32, _ONE, _SEVEN, _THREE = np.uint64(32), np.uint64(1), np.uint64(7), np.uint64(3)
_MIX = np.uint64(0x9E3779B97F4A7C15)


def crc_keys(items: Iterable[bytes], n: int) -> np.ndarray:
    """A 64-bit key for each of `n` byte strings: its CRC-32 spread over 64 bits by a
    multiplication, computed without a Python step per item. Enough for a filter or an
    index whose hits are confirmed: chosen collisions can only cost reads."""
    crcs = np.fromiter(map(zlib.crc32, items), np.uint64, n)
    return (crcs + np.uint64(1)) * _MIX


def _keys(keys: Iterable[int] | np.ndarray) -> np.ndarray:
    a = keys if isinstance(keys, np.ndarray) else np.fromiter(keys, np.int64)
    return a.astype(np.int64, copy=False).view(np.uint64)


class Bloom:
    __slots__ = ("bits", "mask", "count")

    def __init__(self, bits: np.ndarray, count: int) -> None:
        nbits = len(bits) * 8
        if nbits < 8 or nbits & (nbits - 1):
            raise ValueError("a Bloom filter's size is a power of two bits")
        self.bits, self.mask, self.count = bits, np.uint64(nbits - 1), count

    @classmethod
    def sized(cls, n: int) -> "Bloom":
        """Empty, for about `n` keys at 16 or more bits each (at most MAX_BITS)."""
        nbits = MIN_BITS
        while nbits < 16 * n and nbits < MAX_BITS:
            nbits <<= 1
        return cls(np.zeros(nbits // 8, np.uint8), 0)

    @property
    def capacity(self) -> int:
        """Keys it holds at 10 bits each or more; grow it beyond that (a filter at
        MAX_BITS does not grow)."""
        nbits = int(self.mask) + 1
        return nbits // 10 if nbits < MAX_BITS else 1 << 62

    def _probes(self, keys) -> Iterable[np.ndarray]:
        u = _keys(keys)
        h, step = u & self.mask, (u >> _U32) | _ONE
        for _ in range(3):
            yield h
            h = (h + step) & self.mask

    def contains(self, keys) -> np.ndarray:
        """For each key, whether it may have been added (False: it was not)."""
        hit = None
        for h in self._probes(keys):
            bit = (self.bits[h >> _THREE] >> (h & _SEVEN).astype(np.uint8)) & 1
            hit = bit if hit is None else hit & bit
        return hit.astype(bool)

    def might_contain(self, key: int) -> bool:
        """contains() of one key, in plain integers (a numpy call per probe would cost
        more than the whole answer)."""
        u = key & 0xFFFF_FFFF_FFFF_FFFF
        mask = int(self.mask)
        h, step, bits = u & mask, (u >> 32) | 1, self.bits
        for _ in range(3):
            if not (int(bits[h >> 3]) >> (h & 7)) & 1:
                return False
            h = (h + step) & mask
        return True

    def add_all(self, keys) -> None:
        n = 0
        for h in self._probes(keys):
            np.bitwise_or.at(self.bits, h >> _THREE, np.left_shift(np.uint8(1), (h & _SEVEN).astype(np.uint8)))
            n = len(h)
        self.count += n

    def to_bytes(self) -> bytes:
        return self.count.to_bytes(8, "big") + self.bits.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Bloom":
        return cls(np.frombuffer(data, np.uint8, offset=8).copy(), int.from_bytes(data[:8], "big"))
