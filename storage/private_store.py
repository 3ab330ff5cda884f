"""Personal data, off the chain (SPEC §3): profiles, ticket texts and review texts, each
with its salt and keyed by the salted hash the chain keeps. It is in a database of its
own with `secure_delete`, so that a purge overwrites the bytes in the file, and the
write-ahead log is truncated after it so no copy lingers there. Also kept: which
customers are erased (nothing of theirs is taken again), and the purges whose receipts
(`privacy.purged`) are not on the chain yet."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import NamedTuple

import msgpack

from crmledger.ledger.canonical import canonical_bytes

from .sqlite import connect, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS private (hash TEXT PRIMARY KEY, kind TEXT NOT NULL, customer_id TEXT NOT NULL,
    ref TEXT NOT NULL, salt BLOB NOT NULL, value BLOB NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS private_by_customer ON private (customer_id);
CREATE TABLE IF NOT EXISTS erased (customer_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts_due (cause TEXT NOT NULL, kind TEXT NOT NULL, customer_id TEXT NOT NULL,
    PRIMARY KEY (cause, kind)) WITHOUT ROWID;
"""
KINDS = ("profile", "ticket", "review")


class Item(NamedTuple):
    kind: str          # profile | ticket | review
    hash: str          # the salted hash on the chain
    customer_id: str
    ref: str           # the customer (profile), ticket or review it belongs to
    salt: bytes
    value: dict | str  # a profile map, or a text


class PrivateStore:
    def __init__(self, path: str | Path) -> None:
        # personal data is readable by the node's user only: the file (SQLite gives its
        # -wal and -shm files the same mode) is made 0600 before SQLite opens it
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(path, 0o600)
        self.conn: sqlite3.Connection = connect(path, secure_delete=True)
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def put(self, item: Item) -> bool:
        """Keep an item whose hash was checked by the caller; False once its customer is
        erased."""
        return self.put_many([item]) == 1

    def put_many(self, items: list[Item]) -> int:
        """Keep items whose hashes were checked by the caller, in one durable write; those
        of erased customers are not taken. Returns how many were kept."""
        keep = [i for i in items if not self.is_erased(i.customer_id)]
        if keep:
            with transaction(self.conn, durable=True) as c:
                c.executemany("INSERT OR REPLACE INTO private VALUES (?, ?, ?, ?, ?, ?)",
                              [(i.hash, i.kind, i.customer_id, i.ref, i.salt, canonical_bytes(i.value))
                               for i in keep])
        return len(keep)

    def get(self, hash_: str) -> Item | None:
        row = self.conn.execute("SELECT kind, customer_id, ref, salt, value FROM private WHERE hash=?",
                                (hash_,)).fetchone()
        if row is None:
            return None
        return Item(row[0], hash_, row[1], row[2], row[3], msgpack.unpackb(row[4], raw=False))

    def held(self, hashes: list[str]) -> set[str]:
        return {h for h in hashes if self.conn.execute("SELECT 1 FROM private WHERE hash=?", (h,)).fetchone()}

    def hashes_of(self, customer_id: str) -> list[tuple[str, str]]:
        """(hash, kind) of everything held about the customer."""
        return self.conn.execute("SELECT hash, kind FROM private WHERE customer_id=?", (customer_id,)).fetchall()

    def profiles(self) -> list[tuple[str, str]]:
        """(customer_id, hash) of every profile version held."""
        return self.conn.execute("SELECT customer_id, hash FROM private WHERE kind='profile'").fetchall()

    def assign(self, pairs: list[tuple[str, str]]) -> None:
        """Name the customer of items taken before their ticket was known: (hash, customer)."""
        with transaction(self.conn) as c:
            c.executemany("UPDATE private SET customer_id=? WHERE hash=? AND customer_id=''",
                          [(cid, h) for h, cid in pairs])

    def is_erased(self, customer_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM erased WHERE customer_id=?", (customer_id,)).fetchone() is not None

    def purge(self, hashes: list[str], *, erase: str | None = None, cause: str | None = None) -> set[str]:
        """Delete the items with these hashes for good (and, with `erase`, everything of
        that customer, who is then marked erased); with `cause`, a receipt is due for
        each kind deleted. Returns the kinds deleted."""
        with transaction(self.conn, durable=True) as c:
            rows = c.execute("SELECT kind, customer_id FROM private WHERE customer_id=?", (erase,)).fetchall() \
                if erase is not None else []
            for h in hashes:
                rows += c.execute("SELECT kind, customer_id FROM private WHERE hash=?", (h,)).fetchall()
            if erase is not None:
                c.execute("DELETE FROM private WHERE customer_id=?", (erase,))
                c.execute("INSERT OR IGNORE INTO erased VALUES (?)", (erase,))
            c.executemany("DELETE FROM private WHERE hash=?", [(h,) for h in hashes])
            if cause is not None:
                c.executemany("INSERT OR IGNORE INTO receipts_due VALUES (?, ?, ?)",
                              [(cause, kind, cid) for kind, cid in rows])
        if rows:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {kind for kind, _ in rows}

    def receipts_due(self) -> list[tuple[str, str, str]]:
        """(cause, kind, customer_id) of purges whose receipt is not known on the chain."""
        return self.conn.execute("SELECT cause, kind, customer_id FROM receipts_due").fetchall()

    def receipt_done(self, cause: str, kind: str) -> None:
        with transaction(self.conn, durable=True) as c:
            c.execute("DELETE FROM receipts_due WHERE cause=? AND kind=?", (cause, kind))
