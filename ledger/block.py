"""Blocks: a header signed by the proposing node, and the transactions in their stored
form. Invalid transactions stay in the block with their result code (as in Fabric);
results are not part of the header, since every node derives them by applying it."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgpack

from .canonical import canonical_bytes
from .consortium import Consortium
from .keys import SigningKey, verify
from .merkle import merkle_root
from .tx import Tx, TxError, decode_tx, stored_tx

BLOCK_PREFIX = b"crmledger/block/v1\n"
MAX_BLOCK_BYTES = 64 << 20


class BlockError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class BlockHeader:
    height: int
    prev_hash: str
    tx_root: str
    state_root: str   # of the state after the previous block
    timestamp: int    # ms, set by the proposer
    proposer: str     # node id from the genesis
    term: int         # Raft term and index of the log entry carrying the block
    index: int

    def to_map(self) -> dict:
        return {"height": self.height, "prev_hash": self.prev_hash, "tx_root": self.tx_root,
                "state_root": self.state_root, "timestamp": self.timestamp,
                "proposer": self.proposer, "term": self.term, "index": self.index}

    def signing_bytes(self) -> bytes:
        return BLOCK_PREFIX + canonical_bytes(self.to_map())

    def hash(self) -> str:
        return hashlib.sha256(self.signing_bytes()).hexdigest()

    @classmethod
    def from_map(cls, m: dict) -> "BlockHeader":
        if type(m) is not dict or set(m) != set(_HEADER_TYPES):
            raise BlockError("header fields are wrong")
        for k, t in _HEADER_TYPES.items():
            if type(m[k]) is not t:
                raise BlockError(f"header.{k} must be {t.__name__}")
        return cls(**m)


_HEADER_TYPES = {"height": int, "prev_hash": str, "tx_root": str, "state_root": str,
                 "timestamp": int, "proposer": str, "term": int, "index": int}


@dataclass(frozen=True, slots=True)
class Block:
    header: BlockHeader
    sig: bytes
    txs: tuple[bytes, ...]      # canonical msgpack envelopes
    tx_ids: tuple[str, ...]

    def encode(self) -> bytes:
        return msgpack.packb([self.header.to_map(), self.sig, list(self.txs)], use_bin_type=True)

    @property
    def hash(self) -> str:
        return self.header.hash()


def _parts(data: bytes) -> tuple[BlockHeader, bytes, tuple[bytes, ...]]:
    try:
        if len(data) > MAX_BLOCK_BYTES:
            raise BlockError("block too large")
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as e:  # any malformed input: msgpack raises several kinds
        raise BlockError(f"not a block: {e}") from None
    if type(obj) is not list or len(obj) != 3 or type(obj[1]) is not bytes or type(obj[2]) is not list:
        raise BlockError("not a block")
    header = BlockHeader.from_map(obj[0])
    txs = tuple(obj[2])
    if not all(type(t) is bytes for t in txs):
        raise BlockError("block transactions must be binary")
    return header, obj[1], txs


def decode_block(data: bytes) -> Block:
    header, sig, txs = _parts(data)
    try:
        ids = tuple(stored_tx(t).tx_id for t in txs)
    except Exception as e:
        raise BlockError(f"a transaction of the block is not readable: {e}") from None
    return Block(header, sig, txs, ids)


def decode_block_txs(data: bytes) -> tuple[Block, list[Tx]]:
    """A block from outside with its transactions, each decoded and its shape checked
    once (signatures not checked here)."""
    header, sig, envs = _parts(data)
    try:
        txs = [decode_tx(t) for t in envs]
    except TxError as e:
        raise BlockError(f"a transaction of the block is malformed: {e.detail}") from None
    return Block(header, sig, envs, tuple(t.tx_id for t in txs)), txs


def make_block(key: SigningKey, *, height: int, prev_hash: str, state_root: str, timestamp: int,
               proposer: str, term: int, index: int, txs: list[bytes], tx_ids: list[str]) -> Block:
    header = BlockHeader(height, prev_hash, merkle_root(tx_ids), state_root, timestamp,
                         proposer, term, index)
    return Block(header, key.sign(header.signing_bytes()), tuple(txs), tuple(tx_ids))


def check_block(block: Block, consortium: Consortium, *, prev_hash: str, height: int, state_root: str,
                check_sig: bool = True) -> str | None:
    """Why `block` cannot follow (height - 1, prev_hash) with that state root, or None."""
    h = block.header
    if h.height != height:
        return f"height {h.height}, expected {height}"
    if h.prev_hash != prev_hash:
        return "prev_hash does not link to the previous block"
    if h.state_root != state_root:
        return "state_root differs from the replayed state"
    if h.tx_root != merkle_root(list(block.tx_ids)):
        return "tx_root does not match the transactions"
    node = consortium.nodes.get(h.proposer)
    if node is None:
        return f"proposer {h.proposer!r} is not a node of the consortium"
    if check_sig and not verify(node.pubkey, block.sig, h.signing_bytes()):
        return "proposer signature does not verify"
    return None

