"""Personal data, off the chain (SPEC §3): each customer's profiles with their salts, in
a database of their own with `secure_delete`, so that erasing a customer overwrites the
bytes in the file, and the write-ahead log is truncated so no copy lingers there."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import msgpack

from crmledger.ledger.canonical import canonical_bytes

from .sqlite import connect, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (customer_id TEXT NOT NULL, profile_hash TEXT NOT NULL,
    salt BLOB NOT NULL, profile BLOB NOT NULL, PRIMARY KEY (customer_id, profile_hash)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erased (customer_id TEXT PRIMARY KEY) WITHOUT ROWID;
"""


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

    def put(self, customer_id: str, profile_hash: str, salt: bytes, profile: dict[str, str]) -> bool:
        """Keep a profile whose hash was checked by the caller; False once erased."""
        if self.is_erased(customer_id):
            return False
        with transaction(self.conn, durable=True) as c:
            c.execute("INSERT OR REPLACE INTO profiles VALUES (?, ?, ?, ?)",
                      (customer_id, profile_hash, salt, canonical_bytes(profile)))
        return True

    def get(self, customer_id: str, profile_hash: str) -> tuple[bytes, dict[str, str]] | None:
        row = self.conn.execute("SELECT salt, profile FROM profiles WHERE customer_id=? AND profile_hash=?",
                                (customer_id, profile_hash)).fetchone()
        return None if row is None else (row[0], msgpack.unpackb(row[1], raw=False))

    def is_erased(self, customer_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM erased WHERE customer_id=?", (customer_id,)).fetchone() is not None

    def erase(self, customer_id: str) -> None:
        """Delete every profile and salt of the customer, for good."""
        with transaction(self.conn, durable=True) as c:
            c.execute("DELETE FROM profiles WHERE customer_id=?", (customer_id,))
            c.execute("INSERT OR IGNORE INTO erased VALUES (?)", (customer_id,))
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
