"""Merkle tree over tx_ids with leaf/node domain separation (the RFC 6962 shape):
leaf = H(0x00 || tx_id), node = H(0x01 || left || right), and a tree of n leaves splits
at the largest power of two below n. Inclusion proofs are the sibling hashes."""
from __future__ import annotations

import hashlib

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def _leaf(tx_id: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + tx_id).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def _root(leaves: list[bytes]) -> bytes:
    # bottom-up, equivalent to the recursive split: pair neighbours, carry a lone one up
    level, sha = leaves, hashlib.sha256
    while len(level) > 1:
        nxt = [sha(b"\x01" + a + b).digest() for a, b in zip(level[::2], level[1::2])]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_root(tx_ids: list[str]) -> str:
    if not tx_ids:
        return EMPTY_ROOT
    sha = hashlib.sha256
    return _root([sha(b"\x00" + bytes.fromhex(t)).digest() for t in tx_ids]).hex()


def _path(leaves: list[bytes], i: int) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = _split(n)
    if i < k:
        return _path(leaves[:k], i) + [_root(leaves[k:])]
    return _path(leaves[k:], i - k) + [_root(leaves[:k])]


def inclusion_proof(tx_ids: list[str], index: int) -> list[str]:
    if not 0 <= index < len(tx_ids):
        raise IndexError("no such leaf")
    return [h.hex() for h in _path([_leaf(bytes.fromhex(t)) for t in tx_ids], index)]


def verify_inclusion(tx_id: str, index: int, size: int, proof: list[str], root: str) -> bool:
    """RFC 9162 §2.1.3.2: recompute the root from a leaf and its audit path."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = _leaf(bytes.fromhex(tx_id))
    for p in proof:
        h = bytes.fromhex(p)
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(h, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, h)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r.hex() == root
