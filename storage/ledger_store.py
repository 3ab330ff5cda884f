"""Blocks, the transaction index and the world state on SQLite.

A block is stored as one row, as Fabric keeps its block files: the header, the
proposer's signature, the envelopes end to end with their end offsets, and columns of
fixed-width per-transaction fields (tx_ids, nonce keys, result codes) plus the list of
customers each transaction touches. A transaction is found by (height, position) through
the index in `tx_index`, and read back by slicing those columns.

`apply_block` runs the ledger rules over a view of the state fetched for the whole block
(from a bounded cache of recently used keys, then in a few queries), then writes the
block, the changed state keys, the new state accumulator and the applied Raft index in one
transaction: a crash leaves all of a block or none of it. Nothing here holds more than
one block and the bounded caches in memory, so memory does not grow with the chain.
"""
from __future__ import annotations

import logging
import sqlite3
import struct
from itertools import accumulate

import msgpack
import numpy as np

from crmledger.consensus import ConfState
from crmledger.ledger import stateroot
from crmledger.ledger.block import Block, check_block
from crmledger.ledger.canonical import canonical_bytes
from crmledger.ledger.consortium import CONSORTIUM_KEY, Consortium, in_force
from crmledger.ledger.genesis import Genesis
from crmledger.ledger.rules import BlockOutcome, apply_block
from crmledger.ledger.statekeys import due_before, keys_for
from crmledger.ledger.tx import Tx

from .index.cache import RecentCache
from .ledger_reads import (  # noqa: F401  (the records are part of this module's interface)
    CODE_NUM, POS_BITS, POS_MASK, BlockRejected, HistoryEntry, LedgerReads, StoredTx, TxRecord, seq_of,
)
from .raft_store import write_conf_state
from .sqlite import select_in, transaction
from .index.state_filter import StateFilter
from .index.tx_index import NAMES, TxIndex, nonce_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (height INTEGER PRIMARY KEY, hash BLOB NOT NULL,
    header BLOB NOT NULL, sig BLOB NOT NULL, ntx INTEGER NOT NULL,
    ids BLOB NOT NULL, sns BLOB NOT NULL, codes BLOB NOT NULL, subjects BLOB NOT NULL,
    ends BLOB NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
"""
_log = logging.getLogger("crmledger.storage")
_SAY_AFTER = 1000   # blocks: reading more back on open is reported as it goes
FORMAT = b"2"   # 2: a block is one row (1: a row per transaction)
class _BlockView:
    """What the rules read while one block is applied, fetched for the whole block: from
    the store's cache of recent keys, then, for the keys its filter says may exist, in a
    few queries (then per key, for anything not foreseen). `hashes` holds the state-root
    entry of each cached value it knows."""
    __slots__ = ("store", "state", "hashes", "sns")

    def __init__(self, store: "LedgerStore", txs: list[Tx], sns: list[bytes]) -> None:
        self.store = store
        cache = store.cache
        self.state: dict[bytes, bytes | None] = {}
        self.hashes: dict[bytes, bytes] = {}
        missing = []
        for k in {k for tx in txs for k in keys_for(tx)}:
            hit = cache.get(k)
            if hit is None:
                missing.append(k)
                continue
            self.state[k] = hit[0]
            if hit[1] is not None:
                self.hashes[k] = hit[1]
        if missing:
            fetched = dict.fromkeys(missing)
            if store.filter is not None:
                missing = store.filter.may_exist(missing)
            fetched.update(select_in(store.conn, "SELECT k, v FROM state WHERE k IN ({})", missing))
            self.state.update(fetched)
            cache.put_all((k, (v, None)) for k, v in fetched.items())
        found = store.index.seen_nonces(sns)
        self.sns = {(tx.signer, tx.nonce) for tx, sn in zip(txs, sns) if sn in found}

    def get(self, key: bytes) -> bytes | None:
        if key in self.state:
            return self.state[key]
        return self.store.get_raw(key)

    def nonce_seen(self, signer: str, nonce: str) -> bool:
        return (signer, nonce) in self.sns

    def due(self, ts: int, limit: int) -> list[bytes]:
        lo, hi = due_before(ts)
        return [k for (k,) in self.store.conn.execute(
            "SELECT k FROM state WHERE k >= ? AND k < ? ORDER BY k LIMIT ?", (lo, hi, limit))]


class LedgerStore(LedgerReads):
    def __init__(self, conn: sqlite3.Connection, genesis: Genesis, readonly: bool = False,
                 keep_bodies: bool = True, cache_keys: int = 20_000, lookups: bool = True) -> None:
        """`keep_bodies=False` stores blocks without their envelopes and indexes them only
        for the duplicate check: a replay that only checks results and state needs no
        more. `cache_keys` bounds the cache of recently used state keys (with their
        state-root entries, about 1 KB each). A store opened with `lookups=False` (to
        read blocks and state in order, as an audit does) has no transaction index in
        memory, and cannot find transactions by id or customer."""
        self.conn = conn
        self.genesis = genesis
        self.keep_bodies = keep_bodies
        self.cache = RecentCache(cache_keys)
        self._consortium: tuple[int, Consortium] | None = None   # (height, the consortium then)
        self._candidates: dict[str, tuple[int, np.ndarray]] = {}
        if not readonly:
            conn.executescript(_SCHEMA)
        meta = dict(conn.execute("SELECT k, v FROM ledger_meta"))
        stored_genesis = meta.get("genesis")
        if stored_genesis is None and not readonly:
            with transaction(conn, durable=True) as c:
                c.executemany("INSERT INTO ledger_meta VALUES (?, ?)",
                              [("genesis", genesis.hash.encode()), ("format", FORMAT)])
        elif stored_genesis is not None and stored_genesis.decode() != genesis.hash:
            raise ValueError("this data directory belongs to a chain with another genesis")
        elif stored_genesis is not None and meta.get("format") != FORMAT:
            raise ValueError("this data directory was written by an older crmledger in another store format: "
                             "start the node on an empty data directory to fetch the chain from its peers")
        self.height = int(meta.get("height", b"0"))
        self.head_hash = meta.get("head", genesis.hash.encode()).decode()
        self.acc = int.from_bytes(meta["acc"], "big") if "acc" in meta else stateroot.EMPTY
        self.applied_index = int(meta.get("applied", b"0"))
        self.index: TxIndex | None = None
        self.filter: StateFilter | None = None
        if not readonly:
            self.filter = StateFilter(conn, self.height)
        if not lookups:
            return
        self.index = TxIndex(conn, self._fetch, names=NAMES if keep_bodies else ("nonce",))
        # the blocks after the last merge (all of them, when the index is rebuilt), a
        # page at a time
        after = max(self.index.merged >> POS_BITS, 0)
        if self.height - after > _SAY_AFTER:
            _log.info("reading the transaction index back from blocks %d to %d", after + 1, self.height)
        while rows := conn.execute("SELECT height, ids, sns, subjects FROM blocks WHERE height > ? "
                                   "ORDER BY height LIMIT 256", (after,)).fetchall():
            for after, ids, sns, subjects in rows:
                self.index.note_block(seq_of(after, 0), ids, sns, msgpack.unpackb(subjects))
            if self.height - (self.index.merged >> POS_BITS) > _SAY_AFTER:
                _log.info("  transaction index: %d/%d blocks", after, self.height)

    def consortium(self) -> Consortium:
        """The consortium in force after the last block applied."""
        if self._consortium is None or self._consortium[0] != self.height:
            self._consortium = (self.height, in_force(self.genesis, self.get_raw(CONSORTIUM_KEY)))
        return self._consortium[1]

    # -- writing ---------------------------------------------------------------------------
    def apply_block(self, block: Block, txs: list[Tx], raft_index: int,
                    conf_state: ConfState | None = None, check_sig: bool = True,
                    from_log: bool = True) -> BlockOutcome:
        """Apply a committed block whose transactions are parsed and signature-checked.
        Raises BlockRejected when the block cannot extend the chain (then, for a block
        from the Raft log, only the applied index moves: every node rejects the same
        block the same way; a block fetched from a peer leaves nothing behind)."""
        why = check_block(block, self.consortium(), prev_hash=self.head_hash, height=self.height + 1,
                          state_root=self.state_root, check_sig=check_sig)
        if why is None and block.header.index != raft_index:
            why = f"header names Raft index {block.header.index}, carried at {raft_index}"
        if why is not None:
            if from_log:
                self.mark_applied(raft_index, conf_state)
            raise BlockRejected(why)
        h = block.header
        ids = b"".join([bytes.fromhex(tx.tx_id) for tx in txs])
        sns = [nonce_key(tx.signer, tx.nonce) for tx in txs]
        sns_joined = b"".join(sns)
        view = _BlockView(self, txs, sns)
        outcome = apply_block(self.genesis, view, txs, height=h.height, timestamp=h.timestamp)
        new_hashes: dict[bytes, bytes] = {}
        acc = stateroot.update(self.acc, outcome.changes, view.hashes, new_hashes)
        head = h.hash()
        subjects = [r.subject for r in outcome.results]
        bodies = block.txs if self.keep_bodies else ()
        with transaction(self.conn) as c:
            c.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                h.height, bytes.fromhex(head), canonical_bytes(h.to_map()), block.sig, len(txs),
                ids, sns_joined, bytes([CODE_NUM[r.code] for r in outcome.results]),
                msgpack.packb(subjects), struct.pack(f">{len(bodies)}I", *accumulate(map(len, bodies))),
                b"".join(bodies)))
            # a key read as absent is inserted (were it there after all, the block fails
            # loudly rather than overwrite it)
            created = [(k, new) for k, old, new in outcome.changes if old is None]
            c.executemany("INSERT INTO state VALUES (?, ?)", created)
            c.executemany("UPDATE state SET v=? WHERE k=?",
                          [(new, k) for k, old, new in outcome.changes if old is not None and new is not None])
            c.executemany("DELETE FROM state WHERE k=?",
                          [(k,) for k, _, new in outcome.changes if new is None])
            if self.filter is not None:
                self.filter.note(c, h.height, [k for k, _ in created])
            self._write_meta(c, height=h.height, head=head, acc=acc, applied=raft_index)
            if conf_state is not None:
                write_conf_state(c, conf_state, raft_index)
        self.height, self.head_hash, self.acc, self.applied_index = h.height, head, acc, raft_index
        self.cache.put_all((k, (new, new_hashes.get(k))) for k, _, new in outcome.changes)
        self.index.note_block(seq_of(h.height, 0), ids, sns_joined, subjects)
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
