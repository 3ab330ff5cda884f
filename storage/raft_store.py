"""The Raft log and hard state on SQLite: the durable implementation of the consensus
core's `Storage`. Every write is fsynced before it returns, so term, vote and entries are
on disk before any answer that depends on them leaves the node. Reads of recent entries
are served from a bounded in-memory tail.

It shares the node's database with the ledger, so that the configuration as of the
applied index (`conf` in `raft_meta`) is written in the same transaction as each applied
block (see `write_conf_state`)."""
from __future__ import annotations

import sqlite3
from collections import deque
from pathlib import Path
from typing import Sequence

import msgpack

from crmledger.consensus import (
    CompactedError, ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta,
    SnapshotOutOfDate, UnavailableError,
)
from crmledger.consensus.storage import limit_size

from .sqlite import connect, transaction

TAIL_ENTRIES = 4096        # recent entries kept in memory for followers a little behind,
TAIL_BYTES = 16 << 20      # within this many bytes of entry data

_SCHEMA = """
CREATE TABLE IF NOT EXISTS raft_log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL,
                                     type INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS raft_meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
"""


def _pack_conf(cs: ConfState) -> list:
    return [sorted(cs.voters), sorted(cs.learners), sorted(cs.promoting)]


def _unpack_conf(v: list) -> ConfState:
    return ConfState(frozenset(v[0]), frozenset(v[1]), frozenset(v[2]))


def _pack_snapshot(s: Snapshot) -> bytes:
    return msgpack.packb([s.index, s.term, _pack_conf(s.meta.conf_state), s.data], use_bin_type=True)


def _unpack_snapshot(b: bytes) -> Snapshot:
    i, t, cs, data = msgpack.unpackb(b, raw=False)
    return Snapshot(SnapshotMeta(i, t, _unpack_conf(cs)), data)


def write_conf_state(c: sqlite3.Connection, cs: ConfState, index: int) -> None:
    """Record the configuration as of applied index `index`, inside the caller's
    transaction (the one that records `index` as applied)."""
    c.execute("INSERT OR REPLACE INTO raft_meta VALUES ('conf', ?)", (msgpack.packb([index, _pack_conf(cs)]),))


class SqliteRaftStorage:
    def __init__(self, conn: sqlite3.Connection, fsync: bool = True) -> None:
        self.conn = conn
        self.fsync = fsync  # False only where a power cut is not part of the test
        conn.executescript(_SCHEMA)
        meta = dict(conn.execute("SELECT k, v FROM raft_meta"))
        self.hard_state = HardState(*msgpack.unpackb(meta["hs"])) if "hs" in meta else HardState()
        self.snap = _unpack_snapshot(meta["snap"]) if "snap" in meta else Snapshot()
        conf = msgpack.unpackb(meta["conf"]) if "conf" in meta else None
        self._conf = (conf[0], _unpack_conf(conf[1])) if conf else None  # (index, conf)
        # entries up to `offset` are compacted; its term is still known
        self._offset = tuple(msgpack.unpackb(meta["offset"])) if "offset" in meta \
            else (self.snap.index, self.snap.term)
        row = conn.execute("SELECT MAX(idx) FROM raft_log").fetchone()
        self._last = max(row[0] or 0, self._offset[0])
        self._tail: deque[Entry] = deque()
        self._tail_bytes = 0
        self._extend_tail(self._select(max(self._offset[0] + 1, self._last - TAIL_ENTRIES + 1), self._last + 1))

    def _extend_tail(self, entries: Sequence[Entry]) -> None:
        tail = self._tail
        for e in entries:
            tail.append(e)
            self._tail_bytes += len(e.data)
        while tail and (len(tail) > TAIL_ENTRIES or self._tail_bytes > TAIL_BYTES):
            self._tail_bytes -= len(tail.popleft().data)

    def _trim_tail_from(self, index: int) -> None:
        tail = self._tail
        while tail and tail[-1].index >= index:
            self._tail_bytes -= len(tail.pop().data)

    @classmethod
    def open(cls, path: str | Path, fsync: bool = True) -> "SqliteRaftStorage":
        return cls(connect(path), fsync)

    def bootstrap(self, snap: Snapshot, hs: HardState) -> None:
        """A founding member's first state (see consensus.bootstrap_snapshot)."""
        self.save(hs, (), snap)

    # -- reads (the core's Storage) ---------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        """The hard state, and the configuration as of the later of the snapshot and
        the last applied configuration recorded with `write_conf_state`."""
        if self._conf is not None and self._conf[0] > self.snap.index:
            return self.hard_state, self._conf[1]
        return self.hard_state, self.snap.meta.conf_state

    def first_index(self) -> int:
        return self._offset[0] + 1

    def last_index(self) -> int:
        return self._last

    def snapshot(self) -> Snapshot:
        return self.snap

    def term(self, index: int) -> int:
        if index == self._offset[0]:
            return self._offset[1]
        if index < self._offset[0]:
            raise CompactedError(index)
        if index > self._last:
            raise UnavailableError(index)
        if self._tail and index >= self._tail[0].index:
            return self._tail[index - self._tail[0].index].term
        row = self.conn.execute("SELECT term FROM raft_log WHERE idx=?", (index,)).fetchone()
        if row is None:
            raise UnavailableError(index)
        return row[0]

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        if lo <= self._offset[0]:
            raise CompactedError(lo)
        if hi > self._last + 1:
            raise UnavailableError(hi)
        if self._tail and lo >= self._tail[0].index:
            off = self._tail[0].index
            ents = [self._tail[i - off] for i in range(lo, hi)]
        else:
            ents = self._select(lo, hi, max_size)
        return limit_size(ents, max_size)

    def _select(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        out, size = [], 0
        for idx, term, typ, data in self.conn.execute(
                "SELECT idx, term, type, data FROM raft_log WHERE idx >= ? AND idx < ? ORDER BY idx", (lo, hi)):
            e = Entry(term, idx, data, EntryType(typ))
            size += e.size()
            out.append(e)
            if max_size is not None and size > max_size:
                break
        return out

    # -- writes -----------------------------------------------------------------------
    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None = None, durable: bool = True) -> None:
        """A Ready's writes in one transaction: snapshot, entries, hard state (fsynced
        unless `durable` is False: a hard state that only moves the commit index)."""
        with transaction(self.conn, durable=self.fsync and durable) as c:
            if snapshot is not None:
                self._apply_snapshot(c, snapshot)
            if entries:
                self._append(c, entries)
            if hard_state is not None:
                c.execute("INSERT OR REPLACE INTO raft_meta VALUES ('hs', ?)",
                          (msgpack.packb([hard_state.term, hard_state.vote, hard_state.commit]),))
        if hard_state is not None:
            self.hard_state = hard_state

    def append(self, entries: Sequence[Entry]) -> None:
        self.save(None, entries)

    def set_hard_state(self, hs: HardState) -> None:
        self.save(hs, ())

    def apply_snapshot(self, snap: Snapshot) -> None:
        self.save(None, (), snap)

    def _append(self, c: sqlite3.Connection, entries: Sequence[Entry]) -> None:
        first = self.first_index()
        entries = [e for e in entries if e.index >= first]
        if not entries:
            return
        start = entries[0].index
        if start > self._last + 1:
            raise UnavailableError(f"gap: appending {start} after {self._last}")
        if start <= self._last:
            c.execute("DELETE FROM raft_log WHERE idx >= ?", (start,))
            self._trim_tail_from(start)
        if self._tail and self._tail[-1].index != start - 1:
            self._trim_tail_from(0)  # keep the tail contiguous
        c.executemany("INSERT INTO raft_log VALUES (?, ?, ?, ?)",
                      [(e.index, e.term, int(e.type), e.data) for e in entries])
        self._extend_tail(entries)
        self._last = entries[-1].index

    def _apply_snapshot(self, c: sqlite3.Connection, snap: Snapshot) -> None:
        if snap.index <= self.snap.index:
            raise SnapshotOutOfDate(snap.index)
        c.execute("DELETE FROM raft_log")
        c.execute("INSERT OR REPLACE INTO raft_meta VALUES ('snap', ?)", (_pack_snapshot(snap),))
        c.execute("INSERT OR REPLACE INTO raft_meta VALUES ('offset', ?)", (msgpack.packb([snap.index, snap.term]),))
        self.snap = snap
        self._offset = (snap.index, snap.term)
        self._trim_tail_from(0)
        self._last = snap.index

    def create_snapshot(self, index: int, cs: ConfState, data: bytes) -> Snapshot:
        if index <= self.snap.index:
            raise SnapshotOutOfDate(index)
        if index > self._last:
            raise UnavailableError(index)
        snap = Snapshot(SnapshotMeta(index, self.term(index), cs), data)
        with transaction(self.conn, durable=self.fsync) as c:
            c.execute("INSERT OR REPLACE INTO raft_meta VALUES ('snap', ?)", (_pack_snapshot(snap),))
        self.snap = snap
        return snap

    def compact(self, index: int) -> None:
        """Drop entries up to `index`, which the snapshot must cover."""
        if index <= self._offset[0]:
            raise CompactedError(index)
        if index > self.snap.index:
            raise UnavailableError(f"compacting to {index} beyond the snapshot at {self.snap.index}")
        offset = (index, self.term(index))
        with transaction(self.conn, durable=self.fsync) as c:
            c.execute("DELETE FROM raft_log WHERE idx <= ?", (index,))
            c.execute("INSERT OR REPLACE INTO raft_meta VALUES ('offset', ?)", (msgpack.packb(list(offset)),))
        self._offset = offset
        while self._tail and self._tail[0].index <= index:
            self._tail_bytes -= len(self._tail.popleft().data)
