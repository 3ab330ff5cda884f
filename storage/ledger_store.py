"""Blocks, the transaction index and the world state on SQLite.

`apply_block` runs the ledger rules over a view of the state fetched for the whole block
in a few queries, then writes the block, each transaction with its result, the changed
state keys, the new state accumulator and the applied Raft index in one transaction: a
crash leaves all of a block or none of it. Nothing here holds more than one block in
memory, so memory does not grow with the chain.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Iterator

import msgpack

from consensus import ConfState
from node.ledger import stateroot
from node.ledger.block import Block, BlockHeader, check_block
from node.ledger.canonical import canonical_bytes
from node.ledger.genesis import Genesis
from node.ledger.rules import CODES, BlockOutcome, apply_block, keys_for
from node.ledger.tx import Tx

from .raft_store import write_conf_state
from .sqlite import select_in, transaction
from .tx_index import TxIndex, nonce_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (height INTEGER PRIMARY KEY, hash BLOB NOT NULL,
    header BLOB NOT NULL, sig BLOB NOT NULL, ntx INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS txs (seq INTEGER PRIMARY KEY, tx_id BLOB NOT NULL, sn BLOB NOT NULL,
    code INTEGER NOT NULL, subject TEXT, env BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
"""
POS_BITS = 20  # up to a million transactions per block
CODE_NUM = {c: i for i, c in enumerate(CODES)}


def seq_of(height: int, pos: int) -> int:
    return (height << POS_BITS) | pos




@dataclass(frozen=True, slots=True)
class TxRecord:
    tx_id: str
    height: int
    pos: int
    code: str


class _BlockView:
    """What the rules read while one block is applied, fetched for the whole block in a
    few queries (then per key, for anything not foreseen)."""
    __slots__ = ("store", "state", "sns")

    def __init__(self, store: "LedgerStore", txs: list[Tx], sns: list[bytes]) -> None:
        self.store = store
        keys = {k for tx in txs for k in keys_for(tx)}
        self.state: dict[bytes, bytes | None] = dict.fromkeys(keys)
        self.state.update(select_in(store.conn, "SELECT k, v FROM state WHERE k IN ({})", keys))
        found = store.index.seen_nonces(sns)
        self.sns = {(tx.signer, tx.nonce) for tx, sn in zip(txs, sns) if sn in found}

    def get(self, key: bytes) -> bytes | None:
        if key in self.state:
            return self.state[key]
        return self.store.get_raw(key)

    def nonce_seen(self, signer: str, nonce: str) -> bool:
        return (signer, nonce) in self.sns


class LedgerStore:
    def __init__(self, conn: sqlite3.Connection, genesis: Genesis, readonly: bool = False,
                 keep_bodies: bool = True) -> None:
        """`keep_bodies=False` stores transactions without their envelopes: a replay
        that only checks results and state needs no more."""
        self.conn = conn
        self.genesis = genesis
        self.keep_bodies = keep_bodies
        if not readonly:
            conn.executescript(_SCHEMA)
        meta = dict(conn.execute("SELECT k, v FROM ledger_meta"))
        stored_genesis = meta.get("genesis")
        if stored_genesis is None and not readonly:
            with transaction(conn, durable=True) as c:
                c.execute("INSERT INTO ledger_meta VALUES ('genesis', ?)", (genesis.hash.encode(),))
        elif stored_genesis is not None and stored_genesis.decode() != genesis.hash:
            raise ValueError("this data directory belongs to a chain with another genesis")
        self.height = int(meta.get("height", b"0"))
        self.head_hash = meta.get("head", genesis.hash.encode()).decode()
        self.acc = int.from_bytes(meta["acc"], "big") if "acc" in meta else stateroot.EMPTY
        self.applied_index = int(meta.get("applied", b"0"))
        self.index = TxIndex(conn)

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

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, object]]:
        hi = prefix[:-1] + bytes([prefix[-1] + 1])
        for k, v in self.conn.execute("SELECT k, v FROM state WHERE k >= ? AND k < ? ORDER BY k", (prefix, hi)):
            yield k, msgpack.unpackb(v, raw=False)

    def tx_record(self, tx_id: str) -> TxRecord | None:
        seq = self.index.seq_of(bytes.fromhex(tx_id))
        if seq is None:
            return None
        code = self.conn.execute("SELECT code FROM txs WHERE seq=?", (seq,)).fetchone()[0]
        return TxRecord(tx_id, seq >> POS_BITS, seq & ((1 << POS_BITS) - 1), CODES[code])

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
        envs = [env for _, _, env in self.block_txs(height)]
        return msgpack.packb([header.to_map(), sig, envs], use_bin_type=True)

    def block_txs(self, height: int) -> list[tuple[str, str, bytes]]:
        """(tx_id, code, stored envelope) of each transaction of a block, in order."""
        rows = self.conn.execute("SELECT tx_id, code, env FROM txs WHERE seq >= ? AND seq < ? ORDER BY seq",
                                 (seq_of(height, 0), seq_of(height + 1, 0)))
        return [(r[0].hex(), CODES[r[1]], r[2]) for r in rows]

    def history(self, subject: str, limit: int = 1000, after_seq: int = -1) -> list[tuple[int, int, str, str, bytes]]:
        """(height, pos, tx_id, code, envelope) touching a customer, oldest first."""
        seqs = self.index.subject_seqs(subject, after_seq, limit)   # confirmed against the rows
        rows = sorted(select_in(self.conn, "SELECT seq, tx_id, code, env FROM txs WHERE seq IN ({})", seqs))
        return [(s >> POS_BITS, s & ((1 << POS_BITS) - 1), t.hex(), CODES[c], e) for s, t, c, e in rows]

    def iter_blocks(self, start: int = 1) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        """(height, stored hash, header bytes, sig) in height order, streaming."""
        yield from self.conn.execute("SELECT height, hash, header, sig FROM blocks WHERE height >= ? ORDER BY height",
                                     (start,))

    def iter_state(self) -> Iterator[tuple[bytes, bytes]]:
        yield from self.conn.execute("SELECT k, v FROM state ORDER BY k")

    # -- writing ---------------------------------------------------------------------------
    def apply_block(self, block: Block, txs: list[Tx], raft_index: int,
                    conf_state: ConfState | None = None, check_sig: bool = True,
                    from_log: bool = True) -> BlockOutcome | str:
        """Apply a committed block whose transactions are parsed and signature-checked.
        Returns the outcome, or why the block cannot extend the chain (then, for a block
        from the Raft log, only the applied index moves: every node rejects the same
        block the same way; a block fetched from a peer leaves nothing behind)."""
        why = check_block(block, self.genesis, prev_hash=self.head_hash, height=self.height + 1,
                          state_root=self.state_root, check_sig=check_sig)
        if why is None and block.header.index != raft_index:
            why = f"header names Raft index {block.header.index}, carried at {raft_index}"
        if why is not None:
            if from_log:
                self.mark_applied(raft_index, conf_state)
            return why
        h = block.header
        ids = [bytes.fromhex(tx.tx_id) for tx in txs]
        sns = [nonce_key(tx.signer, tx.nonce) for tx in txs]
        outcome = apply_block(self.genesis, _BlockView(self, txs, sns), txs,
                              height=h.height, timestamp=h.timestamp)
        acc = stateroot.update(self.acc, outcome.changes)
        head = h.hash()
        base = seq_of(h.height, 0)
        bodies = block.txs if self.keep_bodies else [b""] * len(txs)
        rows = [(base + i, ids[i], sns[i], CODE_NUM[r.code], r.subject, stored)
                for i, (r, stored) in enumerate(zip(outcome.results, bodies))]
        with transaction(self.conn) as c:
            c.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?)",
                      (h.height, bytes.fromhex(head), canonical_bytes(h.to_map()), block.sig, len(txs)))
            c.executemany("INSERT INTO txs VALUES (?, ?, ?, ?, ?, ?)", rows)
            c.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)",
                          [(k, new) for k, _, new in outcome.changes if new is not None])
            c.executemany("DELETE FROM state WHERE k=?",
                          [(k,) for k, _, new in outcome.changes if new is None])
            self._write_meta(c, height=h.height, head=head, acc=acc, applied=raft_index)
            if conf_state is not None:
                write_conf_state(c, conf_state, raft_index)
        self.height, self.head_hash, self.acc, self.applied_index = h.height, head, acc, raft_index
        self.index.note_block([(r[0], r[1], r[2], r[4]) for r in rows])
        return outcome

    def mark_applied(self, raft_index: int, conf_state: ConfState | None = None) -> None:
        """A committed entry that is not a block (a leader's no-op, a configuration change)."""
        with transaction(self.conn) as c:
            c.execute("INSERT OR REPLACE INTO ledger_meta VALUES ('applied', ?)", (str(raft_index).encode(),))
            if conf_state is not None:
                write_conf_state(c, conf_state, raft_index)
        self.applied_index = raft_index

    @staticmethod
    def _write_meta(c: sqlite3.Connection, *, height: int, head: str, acc: int, applied: int) -> None:
        c.executemany("INSERT OR REPLACE INTO ledger_meta VALUES (?, ?)", [
            ("height", str(height).encode()), ("head", head.encode()),
            ("acc", acc.to_bytes(stateroot.NBYTES, "big")), ("applied", str(applied).encode())])

    def sync(self) -> None:
        """Make everything applied so far durable (before the Raft log is compacted)."""
        self.conn.execute("PRAGMA wal_checkpoint(FULL)")
