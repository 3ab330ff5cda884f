"""The Raft core's view of stable storage, and an in-memory implementation.

The core only *reads* through `Storage`; the application writes to it while handling a
`Ready` (append entries, save hard state, apply a snapshot) and when it takes a snapshot
of its own state (`create_snapshot`, `compact`). A durable implementation must have made
a write stable before the call returns.
"""
from __future__ import annotations

from typing import Protocol, Sequence

from .errors import CompactedError, SnapshotOutOfDate, UnavailableError
from .messages import (
    EMPTY_HARD_STATE, ConfState, Entry, HardState, Snapshot, SnapshotMeta,
)


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]: ...
    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]: ...
    def term(self, index: int) -> int: ...
    def first_index(self) -> int: ...
    def last_index(self) -> int: ...
    def snapshot(self) -> Snapshot: ...
    # written by the application
    def append(self, entries: Sequence[Entry]) -> None: ...
    def set_hard_state(self, hs: HardState) -> None: ...
    def apply_snapshot(self, snap: Snapshot) -> None: ...
    def create_snapshot(self, index: int, cs: ConfState, data: bytes) -> Snapshot: ...
    def compact(self, index: int) -> None: ...


def limit_size(ents: list[Entry], max_size: int | None) -> list[Entry]:
    """The longest prefix of `ents` within `max_size` bytes, but never empty."""
    if max_size is None or len(ents) <= 1:
        return ents
    size = ents[0].size()
    for i in range(1, len(ents)):
        size += ents[i].size()
        if size > max_size:
            return ents[:i]
    return ents


def bootstrap_snapshot(voters: Sequence[int]) -> Snapshot:
    """The snapshot every founding member starts from: index 1, term 1, the initial
    voters. A server that joins later has none, so the leader sends it a snapshot and
    it learns the configuration from there."""
    return Snapshot(SnapshotMeta(1, 1, ConfState(frozenset(voters))))


class MemoryStorage:
    """Reference implementation; `ents[0]` is a dummy entry at the snapshot index."""

    def __init__(self) -> None:
        self.hard_state = EMPTY_HARD_STATE
        self.snap = Snapshot()
        self.ents: list[Entry] = [Entry(0, 0)]

    @classmethod
    def bootstrapped(cls, voters: Sequence[int]) -> "MemoryStorage":
        s = cls()
        s.apply_snapshot(bootstrap_snapshot(voters))
        s.set_hard_state(HardState(term=1))
        return s

    # -- reads ---------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self.snap.meta.conf_state

    def _offset(self) -> int:
        return self.ents[0].index

    def first_index(self) -> int:
        return self.ents[0].index + 1

    def last_index(self) -> int:
        return self.ents[0].index + len(self.ents) - 1

    def term(self, index: int) -> int:
        off = self.ents[0].index
        if index < off:
            raise CompactedError(index)
        if index - off >= len(self.ents):
            raise UnavailableError(index)
        return self.ents[index - off].term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        off = self.ents[0].index
        if lo <= off:
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi)
        return limit_size(self.ents[lo - off:hi - off], max_size)

    def snapshot(self) -> Snapshot:
        return self.snap

    # -- writes --------------------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        if snap.index <= self.snap.index:
            raise SnapshotOutOfDate(snap.index)
        self.snap = snap
        self.ents = [Entry(snap.term, snap.index)]

    def create_snapshot(self, index: int, cs: ConfState, data: bytes) -> Snapshot:
        if index <= self.snap.index:
            raise SnapshotOutOfDate(index)
        if index > self.last_index():
            raise UnavailableError(index)
        self.snap = Snapshot(SnapshotMeta(index, self.term(index), cs), data)
        return self.snap

    def compact(self, index: int) -> None:
        off = self.ents[0].index
        if index <= off:
            raise CompactedError(index)
        if index > self.last_index():
            raise UnavailableError(index)
        i = index - off
        self.ents = [Entry(self.ents[i].term, index)] + self.ents[i + 1:]

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return
        if entries[0].index < first:  # drop what is already compacted
            entries = entries[first - entries[0].index:]
        off = entries[0].index - self.ents[0].index
        if off > len(self.ents):
            raise UnavailableError(f"gap: appending {entries[0].index} after {self.last_index()}")
        del self.ents[off:]
        self.ents.extend(entries)
