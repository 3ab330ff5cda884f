"""Which world-state keys may exist: a Bloom filter over every key ever written.

Most keys a block reads that are not in the cache of recent keys do not exist yet (a new
customer's record, a first consent, a new ticket), and asking SQLite for an absent key
costs as much as for a present one. The filter answers "absent" for nearly all of them
without a read. It must never miss a key that exists (the rules would then see a record
as absent), so it is kept exactly, with the state, in the block's own transaction:
  * each block adds the keys it creates, and records their hashes in `state_created`;
  * every `CHECKPOINT` blocks the whole filter is written to `ledger_meta` with the
    height it covers, and the records up to that height are dropped;
  * on open, the filter is read back and the records after its height are added;
  * when it fills up, it is rebuilt from a scan of the state; with no filter stored (a
    new store, or one written before the filter existed), it is built the same way.
Deleted keys stay in the filter until the next rebuild; they cost only a read.
"""
from __future__ import annotations

import sqlite3
from typing import Iterable

import numpy as np

from .bloom import Bloom, crc_keys

CHECKPOINT = 128   # blocks between two writes of the whole filter
_SCHEMA = "CREATE TABLE IF NOT EXISTS state_created (height INTEGER PRIMARY KEY, hashes BLOB NOT NULL)"


def key_hashes(keys: list[bytes]) -> np.ndarray:
    return crc_keys(keys, len(keys))


class StateFilter:
    def __init__(self, conn: sqlite3.Connection, height: int, initial: int = 50_000) -> None:
        """For a writable store at `height`."""
        self.initial = initial
        conn.execute(_SCHEMA)
        meta = dict(conn.execute("SELECT k, v FROM ledger_meta WHERE k IN ('state_filter', 'state_filter_height')"))
        self.stale = "state_filter" not in meta   # the stored filter is not this one: write it next
        if self.stale:
            self.bloom, self.height = self._scan(conn), height
        else:
            self.bloom = Bloom.from_bytes(meta["state_filter"])
            self.height = int(meta["state_filter_height"])
            for (hashes,) in conn.execute("SELECT hashes FROM state_created WHERE height > ?", (self.height,)):
                self.bloom.add_all(np.frombuffer(hashes, np.uint64))

    def _scan(self, c: sqlite3.Connection) -> Bloom:
        n = c.execute("SELECT count(*) FROM state").fetchone()[0]
        bloom = Bloom.sized(max(self.initial, 2 * n))
        cur = c.execute("SELECT k FROM state")
        while rows := cur.fetchmany(10_000):
            bloom.add_all(key_hashes([k for (k,) in rows]))
        return bloom

    def may_exist(self, keys: list[bytes]) -> list[bytes]:
        """The keys that may exist (the rest certainly do not)."""
        if not keys:
            return keys
        return [k for k, m in zip(keys, self.bloom.contains(key_hashes(keys)).tolist()) if m]

    def note(self, c: sqlite3.Connection, height: int, created: Iterable[bytes]) -> None:
        """In the transaction of block `height`, after its state is written: the keys it
        created."""
        hashes = key_hashes(list(created))
        if self.bloom.count + len(hashes) > self.bloom.capacity:
            self.bloom, self.stale = self._scan(c), True   # the scan sees this block's writes
        else:
            self.bloom.add_all(hashes)
        if self.stale or height - self.height >= CHECKPOINT:
            c.executemany("INSERT OR REPLACE INTO ledger_meta VALUES (?, ?)", [
                ("state_filter", self.bloom.to_bytes()), ("state_filter_height", str(height).encode())])
            c.execute("DELETE FROM state_created WHERE height <= ?", (height,))
            self.height, self.stale = height, False
        elif len(hashes):
            c.execute("INSERT INTO state_created VALUES (?, ?)", (height, hashes.tobytes()))
