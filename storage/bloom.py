"""A Bloom filter over 64-bit keys that are already hashes (the index keys): three probes
by double hashing (Kirsch and Mitzenmacher) into a power-of-two bit array. No false
negatives; at 10 to 32 bits per key, false positives for 1.7% to 0.1% of absent keys.
Its size is capped at `MAX_BITS` (16 MB), so memory stays bounded however long the
chain: beyond about 13 million keys the false positives grow, and each one costs only
the read the filter would have saved."""
from __future__ import annotations

from typing import Iterable

_M64 = (1 << 64) - 1
MIN_BITS = 1 << 16
MAX_BITS = 1 << 27


class Bloom:
    __slots__ = ("bits", "mask", "count")

    def __init__(self, bits: bytearray, count: int) -> None:
        nbits = len(bits) * 8
        if nbits < 8 or nbits & (nbits - 1):
            raise ValueError("a Bloom filter's size is a power of two bits")
        self.bits, self.mask, self.count = bits, nbits - 1, count

    @classmethod
    def sized(cls, n: int) -> "Bloom":
        """Empty, for about `n` keys at 16 or more bits each (at most MAX_BITS)."""
        nbits = MIN_BITS
        while nbits < 16 * n and nbits < MAX_BITS:
            nbits <<= 1
        return cls(bytearray(nbits // 8), 0)

    @property
    def capacity(self) -> int:
        """Keys it holds at 10 bits each or more; grow it beyond that (a filter at
        MAX_BITS does not grow)."""
        nbits = self.mask + 1
        return nbits // 10 if nbits < MAX_BITS else 1 << 62

    def might_contain(self, key: int) -> bool:
        u, m, b = key & _M64, self.mask, self.bits
        h = u & m
        if not b[h >> 3] >> (h & 7) & 1:
            return False
        step = (u >> 32) | 1
        h = (h + step) & m
        if not b[h >> 3] >> (h & 7) & 1:
            return False
        h = (h + step) & m
        return bool(b[h >> 3] >> (h & 7) & 1)

    def add_all(self, keys: Iterable[int]) -> None:
        m, b, n = self.mask, self.bits, 0
        for key in keys:
            u = key & _M64
            step = (u >> 32) | 1
            h = u & m
            b[h >> 3] |= 1 << (h & 7)
            h = (h + step) & m
            b[h >> 3] |= 1 << (h & 7)
            h = (h + step) & m
            b[h >> 3] |= 1 << (h & 7)
            n += 1
        self.count += n

    def copy(self) -> "Bloom":
        return Bloom(bytearray(self.bits), self.count)

    def to_bytes(self) -> bytes:
        return self.count.to_bytes(8, "big") + bytes(self.bits)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Bloom":
        return cls(bytearray(data[8:]), int.from_bytes(data[:8], "big"))
