"""Reading the ledger back: blocks, transactions by id, a customer's history a page at
a time, and the world state as the API shows it. `LedgerReads` holds no state of its own
beyond its connection and index, so a read-only store in a reader process serves as well
as the node's own (see storage.ledger_store for the layout of a block row)."""
from __future__ import annotations

import sqlite3
import struct
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import msgpack
import numpy as np

from crmledger.ledger import stateroot
from crmledger.ledger.block import BlockHeader
from crmledger.ledger.rules import CODES
from crmledger.ledger.statekeys import DEADLINE_PREFIX, deadline_of, k_consent, k_customer, k_loyalty, k_ticket
from crmledger.ledger.tx import Tx

from .index.tx_index import TxIndex, nonce_key, shorts
from .sqlite import select_in

POS_BITS = 20  # up to a million transactions per block
POS_MASK = (1 << POS_BITS) - 1
CODE_NUM = {c: i for i, c in enumerate(CODES)}
# per-transaction columns of a block row: name -> (column, width in bytes; None: msgpack list)
_FIELDS = {"tx_id": ("ids", 32), "sn": ("sns", 16), "code": ("codes", 1), "subject": ("subjects", None)}



def seq_of(height: int, pos: int) -> int:
    return (height << POS_BITS) | pos


def _cut(blob: bytes, width: int) -> list[bytes]:
    return [blob[i:i + width] for i in range(0, len(blob), width)]


def _by_height(seqs: list[int]) -> dict[int, list[int]]:
    """Seqs grouped by the block they name, in order within each."""
    out: dict[int, list[int]] = defaultdict(list)
    for s in seqs:
        out[s >> POS_BITS].append(s)
    return out


def _end(ends: bytes, pos: int) -> int:
    return struct.unpack_from(">I", ends, 4 * pos)[0] if pos >= 0 else 0


class BlockRejected(Exception):
    """A block that cannot extend the chain (why is the message)."""


class StoredTx(NamedTuple):
    tx_id: str
    code: str
    envelope: bytes   # stored form


class HistoryEntry(NamedTuple):
    height: int
    pos: int
    timestamp: int
    tx_id: str
    code: str
    envelope: bytes   # stored form


@dataclass(frozen=True, slots=True)
class TxRecord:
    tx_id: str
    height: int
    pos: int
    code: str


class LedgerReads:
    conn: sqlite3.Connection
    index: TxIndex | None
    acc: int
    _candidates: dict[str, tuple[int, np.ndarray]]
    height: int

    # -- reading ---------------------------------------------------------------------------
    @property
    def state_root(self) -> str:
        return stateroot.root_hex(self.acc)

    def get_raw(self, key: bytes) -> bytes | None:
        row = self.conn.execute("SELECT v FROM state WHERE k=?", (key,)).fetchone()
        return row[0] if row else None

    def get(self, key: bytes):
        raw = self.get_raw(key)
        return None if raw is None else msgpack.unpackb(raw, raw=False)

    # -- the world state as the API shows it ------------------------------------------------
    def customer(self, cid: str) -> dict | None:
        return self.get(k_customer(cid))

    def consents(self, cid: str) -> dict[str, dict]:
        """Each org's consent from the customer, by org."""
        return {k.split(b"\x00", 1)[1].decode(): v for k, v in self.scan(k_consent(cid, ""))}

    def ticket(self, tid: str) -> dict | None:
        return self.get(k_ticket(tid))

    def balances(self, cid: str) -> dict[str, int]:
        """The customer's loyalty balance in each program."""
        return {k.split(b"\x00", 1)[1].decode(): v["balance"] for k, v in self.scan(k_loyalty(cid, ""))}

    def next_deadline(self) -> int | None:
        """When the earliest pending ticket deadline falls (Unix ms)."""
        row = self.conn.execute("SELECT k FROM state WHERE k >= ? AND k < ? ORDER BY k LIMIT 1",
                                (DEADLINE_PREFIX, DEADLINE_PREFIX[:-1] + b"0")).fetchone()
        return deadline_of(row[0])[0] if row else None

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, object]]:
        hi = prefix[:-1] + bytes([prefix[-1] + 1])
        for k, v in self.conn.execute("SELECT k, v FROM state WHERE k >= ? AND k < ? ORDER BY k", (prefix, hi)):
            yield k, msgpack.unpackb(v, raw=False)

    def _fetch(self, field: str, seqs: list[int]) -> list[tuple[int, object]]:
        """(seq, value of `field`) for each seq that names a stored transaction."""
        column, width = _FIELDS[field]
        by_height = _by_height(seqs)
        out: list[tuple[int, object]] = []
        for height, blob in select_in(self.conn, f"SELECT height, {column} FROM blocks WHERE height IN ({{}})",
                                      by_height):
            if width is None:
                vals = msgpack.unpackb(blob, raw=False)
                out += [(s, vals[s & POS_MASK]) for s in by_height[height] if (s & POS_MASK) < len(vals)]
            else:   # only the items asked for, not the whole column
                n = len(blob) // width
                out += [(s, blob[(s & POS_MASK) * width:((s & POS_MASK) + 1) * width])
                        for s in by_height[height] if (s & POS_MASK) < n]
        return out

    def tx_record(self, tx_id: str) -> TxRecord | None:
        seq = self.index.seq_of(bytes.fromhex(tx_id))
        if seq is None:
            return None
        (_, code), = self._fetch("code", [seq])
        return TxRecord(tx_id, seq >> POS_BITS, seq & POS_MASK, CODES[code[0]])

    def committed_among(self, txs: list[Tx]) -> set[str]:
        """The tx_ids of `txs` that are committed: those whose signer and nonce the nonce
        filter has never seen (nearly all, for transactions a node is sent) are
        answered at once, without a lookup."""
        if not txs:
            return set()
        maybe = self.index.bloom.contains(shorts(b"".join(nonce_key(t.signer, t.nonce) for t in txs), 16))
        return {t.tx_id for t, m in zip(txs, maybe.tolist()) if m and self.tx_record(t.tx_id) is not None}

    def committed_record(self, tx: Tx) -> TxRecord | None:
        """`tx_record` of a transaction at hand: a new one (whose signer and nonce were
        never committed, as for nearly every one a node is sent) is answered by the nonce
        filter, without a lookup."""
        if not self.index.may_have_nonce(nonce_key(tx.signer, tx.nonce)):
            return None
        return self.tx_record(tx.tx_id)

    def block_header(self, height: int) -> tuple[BlockHeader, bytes, str] | None:
        row = self.conn.execute("SELECT header, sig, hash FROM blocks WHERE height=?", (height,)).fetchone()
        if row is None:
            return None
        return BlockHeader.from_map(msgpack.unpackb(row[0], raw=False)), row[1], row[2].hex()

    def block_bytes(self, height: int) -> bytes | None:
        """Block `height` in the form it was proposed (for a node catching up)."""
        got = self.block_header(height)
        if got is None:
            return None
        header, sig, _ = got
        envs = [t.envelope for t in self.block_txs(height)]
        return msgpack.packb([header.to_map(), sig, envs], use_bin_type=True)

    def block_txs(self, height: int) -> list[StoredTx]:
        """Each transaction of a block, in order."""
        row = self.conn.execute("SELECT ids, codes, ends, body FROM blocks WHERE height=?", (height,)).fetchone()
        if row is None:
            return []
        ids, codes, ends, body = row
        offsets = [0, *struct.unpack(f">{len(ends) // 4}I", ends)]
        envs = [body[a:b] for a, b in zip(offsets, offsets[1:])] or [b""] * len(codes)
        return [StoredTx(i.hex(), CODES[c], e) for i, c, e in zip(_cut(ids, 32), codes, envs)]

    def block_tx_ids(self, height: int) -> list[str]:
        """The tx_ids of a block, in order (without reading its bodies)."""
        row = self.conn.execute("SELECT ids FROM blocks WHERE height=?", (height,)).fetchone()
        return [] if row is None else [i.hex() for i in _cut(row[0], 32)]

    def index_columns(self, height: int) -> tuple[bytes, bytes] | None:
        """The nonce keys and customers of a block's transactions as stored, from which
        the index is built."""
        return self.conn.execute("SELECT sns, subjects FROM blocks WHERE height=?", (height,)).fetchone()

    def history_candidates(self, subject: str) -> np.ndarray:
        """Sorted seqs that may touch a customer, from the in-memory index (so on the
        thread that applies blocks); `history_page` confirms and reads them. The last few
        customers' are kept until the next block, for a client paging through."""
        hit = self._candidates.get(subject)
        if hit is not None and hit[0] == self.height:
            return hit[1]
        seqs = self.index.subject_candidates(subject)
        self._candidates[subject] = (self.height, seqs)
        if len(self._candidates) > 32:
            del self._candidates[next(iter(self._candidates))]
        return seqs

    def history_page(self, subject: str, candidates: np.ndarray, *, after: int | None = None,
                     descending: bool = False, limit: int = 100) -> tuple[list[HistoryEntry], bool]:
        """Up to `limit` transactions touching `subject` among `candidates`, oldest (or
        newest) first, strictly after the seq `after` in that order; and whether more
        follow. Reads only stored blocks, so any store over the same file serves (a
        read-only one in a reader thread)."""
        if after is not None:
            cut = np.searchsorted(candidates, after, "left" if descending else "right")
            candidates = candidates[:cut] if descending else candidates[cut:]
        if descending:
            candidates = candidates[::-1]
        found: list[int] = []
        step = max(64, limit + 1)
        for i in range(0, len(candidates), step):
            chunk = candidates[i:i + step].tolist()
            hits = {s for s, v in self._fetch("subject", chunk) if v == subject}
            found += [s for s in chunk if s in hits]
            if len(found) > limit:
                break
        more = len(found) > limit
        found = found[:limit]
        by_height = _by_height(found)
        stamps = {h: msgpack.unpackb(hdr, raw=False)["timestamp"] for h, hdr in select_in(
            self.conn, "SELECT height, header FROM blocks WHERE height IN ({})", by_height)}
        rows: dict[int, HistoryEntry] = {}
        for height, ids, codes, ends in select_in(
                self.conn, "SELECT height, ids, codes, ends FROM blocks WHERE height IN ({})", by_height):
            with self.conn.blobopen("blocks", "body", height, readonly=True) as body:
                for s in by_height[height]:
                    pos = s & POS_MASK
                    start, end = _end(ends, pos - 1), _end(ends, pos)
                    body.seek(start)
                    rows[s] = HistoryEntry(height, pos, stamps[height], ids[32 * pos:32 * pos + 32].hex(),
                                           CODES[codes[pos]], body.read(end - start))
        return [rows[s] for s in found], more

    def history(self, subject: str, limit: int = 1000, after_seq: int = -1) -> list[HistoryEntry]:
        """Transactions touching a customer, oldest first."""
        return self.history_page(subject, self.history_candidates(subject), after=after_seq, limit=limit)[0]

    def iter_blocks(self, start: int = 1) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        """(height, stored hash, header bytes, sig) in height order, streaming."""
        yield from self.conn.execute("SELECT height, hash, header, sig FROM blocks WHERE height >= ? ORDER BY height",
                                     (start,))

    def iter_state(self) -> Iterator[tuple[bytes, bytes]]:
        yield from self.conn.execute("SELECT k, v FROM state ORDER BY k")
