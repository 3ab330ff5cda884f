"""The state root: a multiset hash of every (key, value) in the world state, updated in
O(changes) per block.

Each entry maps to a 4096-bit number h(k, v) = SHAKE-256("crmledger/state/v1" | len(k) |
k | v); the accumulator is the sum of all entries modulo 2^4096 (AdHash, Bellare and
Micciancio). Changing a key subtracts the old entry and adds the new one, so a block costs
two hashes per changed key whatever the size of the state. The published root is the
SHA-256 of the accumulator. Finding two different states with the same sum is a
generalized-birthday problem of about 2^128 work at this width.
"""
from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np

BITS = 4096
NBYTES = BITS // 8
MASK = (1 << BITS) - 1
_DOMAIN = b"crmledger/state/v1"


def entry(key: bytes, value: bytes) -> bytes:
    """h(k, v) as NBYTES big-endian bytes."""
    return hashlib.shake_256(_DOMAIN + len(key).to_bytes(4, "big") + key + value).digest(NBYTES)


def entry_hash(key: bytes, value: bytes) -> int:
    return int.from_bytes(entry(key, value), "big")


def _total(entries: list[bytes]) -> int:
    """The sum of entries, in one pass over all of them: their 32-bit limbs summed in
    64-bit columns (exact for fewer than 2^32 entries), then the columns carried."""
    if not entries:
        return 0
    cols = np.frombuffer(b"".join(entries), ">u4").reshape(len(entries), NBYTES // 4).sum(axis=0, dtype=np.uint64)
    low = (cols & np.uint64(0xFFFFFFFF)).astype(">u4").tobytes()
    high = (cols >> np.uint64(32)).astype(">u4").tobytes()
    return int.from_bytes(low, "big") + (int.from_bytes(high, "big") << 32)


def update(acc: int, changes: Iterable[tuple[bytes, bytes | None, bytes | None]],
           known: dict[bytes, bytes] | None = None, added: dict[bytes, bytes] | None = None) -> int:
    """`acc` after changing each key from `old` to `new` (None: absent). `known` may hold
    the entry of a key's old value, computed when it was added; the entries added are
    put in `added`."""
    plus: list[bytes] = []
    minus: list[bytes] = []
    for key, old, new in changes:
        if old == new:
            continue
        if old is not None:
            h = known.get(key) if known else None
            minus.append(entry(key, old) if h is None else h)
        if new is not None:
            h = entry(key, new)
            if added is not None:
                added[key] = h
            plus.append(h)
    return (acc + _total(plus) - _total(minus)) & MASK


def root_hex(acc: int) -> str:
    return hashlib.sha256(acc.to_bytes(NBYTES, "big")).hexdigest()


EMPTY = 0
