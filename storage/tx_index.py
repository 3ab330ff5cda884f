"""Lookups into the transaction table by tx_id, by (signer, nonce) and by customer.

Each lookup is a set of (key, seq) pairs, the key being the first 8 bytes of a hash, so
keys land at random places. Inserting a block's worth of random keys into B-trees of
millions would dirty a page per key on every commit. So this is a small log-structured
merge tree: the keys of recent blocks are held in memory (at most `merge_at` entries),
then merged in sorted order into level 1; a level that outgrows `ratio` times the one
before is merged into the next. A merge touches each page of the target table at most
once, so the cost per key stays small as the chain grows, and every level is a plain
SQLite table.

All of it is derived data: the transaction rows hold what the keys are computed from,
so on open the in-memory part is rebuilt from the rows after `merged`. A hit is always
confirmed against the row itself, so a key collision costs a read, never a wrong answer.
"""
from __future__ import annotations

import hashlib
import sqlite3
from collections import defaultdict

import msgpack

from .sqlite import select_in, transaction

NAMES = ("txid", "nonce", "subject")


def short(b: bytes) -> int:
    return int.from_bytes(b[:8], "big", signed=True)


def nonce_key(signer: str, nonce: str) -> bytes:
    return hashlib.sha256(signer.encode() + b"\x00" + nonce.encode()).digest()[:16]


def subject_key(subject: str) -> int:
    return short(hashlib.sha256(subject.encode()).digest())


class TxIndex:
    def __init__(self, conn: sqlite3.Connection, merge_at: int = 50_000, ratio: int = 8) -> None:
        self.conn = conn
        self.merge_at = merge_at
        self.ratio = ratio
        meta = dict(conn.execute("SELECT k, v FROM ledger_meta WHERE k IN ('idx_merged', 'idx_levels')"))
        self.merged = int(meta.get("idx_merged", b"-1"))  # rows with seq <= merged are in the levels
        self.levels: list[int] = msgpack.unpackb(meta["idx_levels"]) if "idx_levels" in meta else []
        self.mem: dict[str, dict[int, list[int]]] = {n: defaultdict(list) for n in NAMES}
        self.mem_entries = 0
        for seq, tx_id, sn, subject in conn.execute(
                "SELECT seq, tx_id, sn, subject FROM txs WHERE seq > ? ORDER BY seq", (self.merged,)):
            self._remember(seq, tx_id, sn, subject)

    def _table(self, name: str, level: int) -> str:
        return f"idx_{name}_{level}"

    def _remember(self, seq: int, tx_id: bytes, sn: bytes, subject: str | None) -> None:
        self.mem["txid"][short(tx_id)].append(seq)
        self.mem["nonce"][short(sn)].append(seq)
        self.mem_entries += 2
        if subject is not None:
            self.mem["subject"][subject_key(subject)].append(seq)
            self.mem_entries += 1

    def _candidates(self, name: str, keys: set[int]) -> list[int]:
        """Seqs filed under any of `keys`, from memory and every level."""
        mem = self.mem[name]
        seqs = [s for k in keys if k in mem for s in mem[k]]
        for level, size in enumerate(self.levels, start=1):
            if size:
                seqs += [r[0] for r in select_in(self.conn, f"SELECT seq FROM {self._table(name, level)} "
                                                            "WHERE k IN ({})", keys)]
        return seqs

    def _rows(self, column: str, seqs: list[int]) -> list[tuple[int, object]]:
        return select_in(self.conn, f"SELECT seq, {column} FROM txs WHERE seq IN ({{}})", seqs)

    # -- lookups ----------------------------------------------------------------------
    def seen_nonces(self, sns: list[bytes]) -> set[bytes]:
        seqs = self._candidates("nonce", {short(s) for s in sns})
        return {v for _, v in self._rows("sn", seqs)} & set(sns) if seqs else set()

    def seq_of(self, tx_id: bytes) -> int | None:
        """The seq of the first committed transaction with this id."""
        hits = [s for s, v in self._rows("tx_id", self._candidates("txid", {short(tx_id)})) if v == tx_id]
        return min(hits) if hits else None

    def subject_seqs(self, subject: str, after: int, limit: int) -> list[int]:
        """Seqs of transactions touching `subject` after `after`, oldest first."""
        seqs = sorted(s for s in self._candidates("subject", {subject_key(subject)}) if s > after)
        return [s for s, v in sorted(self._rows("subject", seqs)) if v == subject][:limit]

    # -- writing ------------------------------------------------------------------------
    def note_block(self, rows: list[tuple[int, bytes, bytes, str | None]]) -> None:
        """The (seq, tx_id, sn, subject) of a block just committed; merges them into the
        levels (a transaction of its own) once enough have gathered. A crash before the
        merge loses nothing: the rows are read back on open."""
        for seq, tx_id, sn, subject in rows:
            self._remember(seq, tx_id, sn, subject)
        if rows and self.mem_entries >= self.merge_at:
            self.merge(rows[-1][0])

    def merge(self, upto: int) -> None:
        levels = list(self.levels) or [0]
        with transaction(self.conn) as c:
            for name in NAMES:
                c.execute(f"CREATE TABLE IF NOT EXISTS {self._table(name, 1)} "
                          "(k INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (k, seq)) WITHOUT ROWID")
                c.executemany(f"INSERT OR IGNORE INTO {self._table(name, 1)} VALUES (?, ?)",
                              sorted((k, s) for k, seqs in self.mem[name].items() for s in seqs))
            levels[0] += self.mem_entries
            level = 1
            while level <= len(levels) and levels[level - 1] > self.merge_at * self.ratio ** level:
                if level == len(levels):
                    levels.append(0)
                for name in NAMES:
                    src, dst = self._table(name, level), self._table(name, level + 1)
                    c.execute(f"CREATE TABLE IF NOT EXISTS {dst} "
                              "(k INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (k, seq)) WITHOUT ROWID")
                    c.execute(f"INSERT OR IGNORE INTO {dst} SELECT k, seq FROM {src} ORDER BY k, seq")
                    c.execute(f"DELETE FROM {src}")
                levels[level] += levels[level - 1]
                levels[level - 1] = 0
                level += 1
            c.executemany("INSERT OR REPLACE INTO ledger_meta VALUES (?, ?)", [
                ("idx_merged", str(upto).encode()), ("idx_levels", msgpack.packb(levels))])
        self.merged, self.levels = upto, levels
        for name in NAMES:
            self.mem[name].clear()
        self.mem_entries = 0
