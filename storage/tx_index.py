"""Lookups of committed transactions by tx_id, by (signer, nonce) and by customer.

Each lookup is a set of (key, seq) pairs, the key being the first 8 bytes of a hash, so
keys land at random places. Inserting a block's worth of random keys into B-trees of
millions would dirty a page per key on every commit (even in a small table: a block's
commit would write out most of its pages). So this is a small log-structured merge tree:
the keys of recent blocks are held in memory (at most `merge_at` entries), then merged in
sorted order into level 1; a level that outgrows `ratio` times the one before is merged
into the next. A merge touches each page of the target table at most once, so the cost
per key stays small as the chain grows, and every level is a plain SQLite table.

Every block is checked for (signer, nonce) pairs seen before, and nearly all of them are
new. A Bloom filter over the nonce keys in the levels (as an LSM tree keeps one per
table) answers most of those checks without reading a page; it is written with the
levels, in the same transaction, and grows by rebuilding from them.

All of it is derived data: the stored blocks hold what the keys are computed from, so
on open the in-memory part is rebuilt from the blocks after `merged`. A hit is always
confirmed against the stored block, so a key collision costs a read, never a wrong
answer.
"""
from __future__ import annotations

import hashlib
import sqlite3
from collections import defaultdict
from itertools import chain
from typing import Callable, Iterable

import msgpack

from .bloom import Bloom
from .sqlite import select_in, transaction

NAMES = ("txid", "nonce", "subject")
Fetch = Callable[[str, list[int]], list[tuple[int, object]]]


def short(b: bytes) -> int:
    return int.from_bytes(b[:8], "big", signed=True)


def nonce_key(signer: str, nonce: str) -> bytes:
    return hashlib.sha256(signer.encode() + b"\x00" + nonce.encode()).digest()[:16]


def subject_key(subject: str) -> int:
    return short(hashlib.sha256(subject.encode()).digest())


class TxIndex:
    def __init__(self, conn: sqlite3.Connection, fetch: Fetch, merge_at: int = 50_000, ratio: int = 8,
                 names: tuple[str, ...] = NAMES) -> None:
        """`fetch(field, seqs)` reads ("tx_id", "sn" or "subject", seq) pairs back from the
        stored blocks, to confirm a hit. `names`: the lookups kept (a replay that only
        checks blocks needs no more than "nonce", for the duplicate check)."""
        self.conn = conn
        self.names = names
        self.fetch = fetch
        self.merge_at = merge_at
        self.ratio = ratio
        meta = dict(conn.execute("SELECT k, v FROM ledger_meta WHERE k IN "
                                 "('idx_merged', 'idx_levels', 'idx_nonce_bloom')"))
        self.merged = int(meta.get("idx_merged", b"-1"))  # entries with seq <= merged are in the levels
        self.levels: list[int] = msgpack.unpackb(meta["idx_levels"]) if "idx_levels" in meta else []
        self.bloom = Bloom.from_bytes(meta["idx_nonce_bloom"]) if "idx_nonce_bloom" in meta else Bloom.sized(0)
        # in memory: key -> seq, and the rare further seqs of a key in `extra`
        self.mem: dict[str, dict[int, int]] = {n: {} for n in names}
        self.extra: dict[str, dict[int, list[int]]] = {n: defaultdict(list) for n in names}
        self.mem_entries = 0

    @staticmethod
    def _table(name: str, level: int) -> str:
        return f"idx_{name}_{level}"

    def remember(self, base: int, ids: list[bytes], sns: list[bytes], subjects: list[str | None]) -> None:
        """Hold one block's keys in memory (transaction i of the block has seq base + i)."""
        seqs = range(base, base + len(ids))
        self._hold("nonce", zip([int.from_bytes(s[:8], "big", signed=True) for s in sns], seqs))
        if "txid" in self.mem:
            self._hold("txid", zip([int.from_bytes(i[:8], "big", signed=True) for i in ids], seqs))
        if "subject" in self.mem:
            keyed = {s: subject_key(s) for s in set(subjects) if s is not None}
            self._hold("subject", [(keyed[s], seq) for s, seq in zip(subjects, seqs) if s is not None])

    def _hold(self, name: str, pairs: Iterable[tuple[int, int]]) -> None:
        mem, extra = self.mem[name], self.extra[name]
        before = len(mem)
        for k, seq in pairs:
            if mem.setdefault(k, seq) != seq:
                extra[k].append(seq)
                self.mem_entries += 1
        self.mem_entries += len(mem) - before

    def _candidates(self, name: str, keys: list[int], deep: list[int] | None = None) -> list[int]:
        """Seqs filed under any of `keys` in memory, and under any of `deep` (default:
        `keys`) in the levels."""
        if name not in self.mem:
            raise LookupError(f"this index keeps no {name} lookups")
        mem, extra = self.mem[name], self.extra[name]
        seqs = [mem[k] for k in keys if k in mem]
        if extra:
            seqs += [s for k in keys if k in extra for s in extra[k]]
        deep = keys if deep is None else deep
        for level, size in enumerate(self.levels, start=1):
            if size and deep:
                seqs += [r[0] for r in select_in(self.conn, f"SELECT seq FROM {self._table(name, level)} "
                                                            "WHERE k IN ({})", deep)]
        return seqs

    # -- lookups ----------------------------------------------------------------------
    def seen_nonces(self, sns: list[bytes]) -> set[bytes]:
        keys = [int.from_bytes(s[:8], "big", signed=True) for s in sns]
        might = self.bloom.might_contain
        seqs = self._candidates("nonce", keys, [k for k in keys if might(k)])
        return {v for _, v in self.fetch("sn", seqs)} & set(sns) if seqs else set()

    def seq_of(self, tx_id: bytes) -> int | None:
        """The seq of the first committed transaction with this id."""
        hits = [s for s, v in self.fetch("tx_id", self._candidates("txid", [short(tx_id)])) if v == tx_id]
        return min(hits) if hits else None

    def subject_seqs(self, subject: str, after: int, limit: int) -> list[int]:
        """Seqs of transactions touching `subject` after `after`, oldest first."""
        seqs = sorted(s for s in self._candidates("subject", [subject_key(subject)]) if s > after)
        return [s for s, v in sorted(self.fetch("subject", seqs)) if v == subject][:limit]

    # -- writing ------------------------------------------------------------------------
    def note_block(self, base: int, ids: list[bytes], sns: list[bytes], subjects: list[str | None]) -> None:
        """The keys of a block just committed; merged into the levels (a transaction of
        its own) once enough have gathered. A crash before the merge loses nothing: the
        blocks are read back on open."""
        self.remember(base, ids, sns, subjects)
        if ids and self.mem_entries >= self.merge_at:
            self.merge(base + len(ids) - 1)

    def merge(self, upto: int) -> None:
        levels = list(self.levels) or [0]
        new_nonces = list(self.mem["nonce"])
        with transaction(self.conn) as c:
            for name in self.names:
                rows = sorted(chain(self.mem[name].items(), ((k, s) for k, seqs in self.extra[name].items() for s in seqs)))
                c.execute(f"CREATE TABLE IF NOT EXISTS {self._table(name, 1)} "
                          "(k INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (k, seq)) WITHOUT ROWID")
                c.executemany(f"INSERT OR IGNORE INTO {self._table(name, 1)} VALUES (?, ?)", rows)
            levels[0] += self.mem_entries
            level = 1
            while level <= len(levels) and levels[level - 1] > self.merge_at * self.ratio ** level:
                if level == len(levels):
                    levels.append(0)
                for name in self.names:
                    src, dst = self._table(name, level), self._table(name, level + 1)
                    c.execute(f"CREATE TABLE IF NOT EXISTS {dst} "
                              "(k INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (k, seq)) WITHOUT ROWID")
                    c.execute(f"INSERT OR IGNORE INTO {dst} SELECT k, seq FROM {src} ORDER BY k, seq")
                    c.execute(f"DELETE FROM {src}")
                levels[level] += levels[level - 1]
                levels[level - 1] = 0
                level += 1
            bloom = self.bloom
            if bloom.count + len(new_nonces) <= bloom.capacity:
                bloom = bloom.copy()
                bloom.add_all(new_nonces)
            else:   # grown: rebuilt from every level
                bloom = Bloom.sized(2 * (bloom.count + len(new_nonces)))
                for level, size in enumerate(levels, start=1):
                    if size:
                        bloom.add_all(k for (k,) in c.execute(f"SELECT k FROM {self._table('nonce', level)}"))
            c.executemany("INSERT OR REPLACE INTO ledger_meta VALUES (?, ?)", [
                ("idx_merged", str(upto).encode()), ("idx_levels", msgpack.packb(levels)),
                ("idx_nonce_bloom", bloom.to_bytes())])
        self.merged, self.levels, self.bloom = upto, levels, bloom
        for name in self.names:
            self.mem[name].clear()
            self.extra[name].clear()
        self.mem_entries = 0
