"""Lookups of committed transactions by tx_id, by (signer, nonce) and by customer.

Each lookup is a set of (key, seq) pairs, the key being a 64-bit hash (the first 8 bytes
of the tx_id or of the nonce key, a spread CRC-32 of the customer id), so keys land at
random places. Inserting a block's worth of random keys into B-trees of
millions would dirty a page per key on every commit, and costs a Python-to-SQLite call
per key. So this is a small log-structured merge tree of sorted runs, handled as arrays
(numpy), never a key at a time:
  * the keys of recent blocks are held in memory (at most `merge_at` entries);
  * then sorted into a new run at level 1, stored as parts of `PART` sorted keys and
    their seqs, a row per part, each with its first and last key;
  * when a level holds `ratio` runs, they are merged, streaming a part at a time, into
    one run of the next level. Each key is written once per level, so the cost per key
    stays small as the chain grows.
The first and last keys of every part (16 bytes per `PART` keys) are kept in memory, so
a lookup reads only the parts that can hold its keys.

Every block is checked for (signer, nonce) pairs seen before, and nearly all of them are
new. A Bloom filter over every nonce key (as an LSM tree keeps one per table) answers
most of those checks without reading anything; it is written with the runs, in the same
transaction, and grows by rebuilding from them.

All of it is derived data: the stored blocks hold what the keys are computed from, so
on open the in-memory part is rebuilt from the blocks after `merged`. A hit is always
confirmed against the stored block, so a key collision costs a read, never a wrong
answer.
"""
from __future__ import annotations

import hashlib
import sqlite3
from typing import Callable, Iterable, Iterator

import msgpack
import numpy as np

from .bloom import Bloom, crc_keys
from ..sqlite import select_in, transaction

NAMES = ("txid", "nonce", "subject")
PART = 512          # keys per stored part of a run
FORMAT = b"runs-2"   # the layout of the stored runs (an index in another layout is rebuilt)
Fetch = Callable[[str, list[int]], list[tuple[int, object]]]
_I8 = np.dtype("<i8")
_BE8 = np.dtype(">i8")
_SCHEMA = ("CREATE TABLE IF NOT EXISTS idx_parts (id INTEGER PRIMARY KEY, first INTEGER NOT NULL, "
           "last INTEGER NOT NULL, keys BLOB NOT NULL, seqs BLOB NOT NULL)")
Chunk = tuple[np.ndarray, np.ndarray]   # keys (sorted) and their seqs


def short(b: bytes) -> int:
    return int.from_bytes(b[:8], "big", signed=True)


def nonce_key(signer: str, nonce: str) -> bytes:
    return hashlib.sha256(signer.encode() + b"\x00" + nonce.encode()).digest()[:16]


def subject_keys(subjects: list[str]) -> np.ndarray:
    """The index keys of customers (confirmed against the stored blocks, so a cheap hash
    does)."""
    return crc_keys(map(str.encode, subjects), len(subjects)).view(_I8)


def shorts(joined: bytes, width: int) -> np.ndarray:
    """short() of each `width`-byte item of `joined`."""
    return np.frombuffer(joined, _BE8)[::width // 8].astype(_I8)


def _part_id(run: int, name: str, part: int) -> int:
    """The row of a part: run, lookup and part number in one integer key."""
    return (run << 34) | (NAMES.index(name) << 32) | part


def _part_ids(run: int, name: str) -> tuple[int, int]:
    """The first and last row id a run's parts for one lookup can have."""
    return _part_id(run, name, 0), _part_id(run, name, (1 << 32) - 1)


def _spans(lasts: np.ndarray, firsts: np.ndarray, keys: np.ndarray) -> list[tuple[int, int]]:
    """For each key, the positions [lo, hi) of the sorted ranges (given by their last
    and first keys, in order) that can hold it, where there are any. For a sorted array
    of keys, pass it as both: the span is where the key occurs."""
    los, his = np.searchsorted(lasts, keys, "left"), np.searchsorted(firsts, keys, "right")
    return [(lo, hi) for lo, hi in zip(los.tolist(), his.tolist()) if hi > lo]


class _Held:
    """Keys and their seqs appended a block at a time into arrays that double when full,
    so a lookup right after a one-transaction block costs no copy of what is held."""

    def __init__(self) -> None:
        self.keys = np.empty(1024, _I8)
        self.seqs = np.empty(1024, _I8)
        self.n = 0

    def append(self, keys: np.ndarray, seqs: np.ndarray) -> None:
        m = self.n + len(keys)
        if m > len(self.keys):
            cap = max(m, 2 * len(self.keys))
            for name in ("keys", "seqs"):
                grown = np.empty(cap, _I8)
                grown[:self.n] = getattr(self, name)[:self.n]
                setattr(self, name, grown)
        self.keys[self.n:m] = keys
        self.seqs[self.n:m] = seqs
        self.n = m

    def view(self) -> Chunk:
        """What is held (views: valid until the next append or clear)."""
        return self.keys[:self.n], self.seqs[:self.n]

    def clear(self) -> None:
        self.n = 0


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
        meta = dict(conn.execute("SELECT k, v FROM ledger_meta WHERE k LIKE 'idx_%'"))
        if meta and meta.get("idx_format") != FORMAT:
            self._drop_old(meta)
            meta = {}
        self.merged = int(meta.get("idx_merged", b"-1"))  # entries with seq <= merged are in the runs
        self.runs: list[tuple[int, int]] = [tuple(r) for r in msgpack.unpackb(meta.get("idx_runs", b"\x90"))]
        self.bloom = (Bloom.from_bytes(meta["idx_nonce_bloom"]) if "idx_nonce_bloom" in meta
                      else Bloom.sized(merge_at))
        # (name, run) -> first and last key of each part
        self.fences: dict[tuple[str, int], Chunk] = {}
        if self.runs:
            rows = np.array(conn.execute("SELECT id, first, last FROM idx_parts ORDER BY id").fetchall(),
                            np.int64).reshape(-1, 3)
            for run, _ in self.runs:
                for name in names:
                    first_id, last_id = _part_ids(run, name)
                    lo, hi = np.searchsorted(rows[:, 0], first_id), np.searchsorted(rows[:, 0], last_id, "right")
                    if hi > lo:
                        self.fences[(name, run)] = (rows[lo:hi, 1].copy(), rows[lo:hi, 2].copy())
        # in memory: the keys and seqs of the blocks since the last merge, per lookup
        self.mem: dict[str, _Held] = {n: _Held() for n in names}
        self.mem_entries = 0

    def _drop_old(self, meta: dict) -> None:
        """An index written in an older layout: dropped, to be rebuilt from the blocks."""
        old = [n for (n,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                               "AND name LIKE 'idx_%'")]
        with transaction(self.conn) as c:
            for table in old:
                c.execute(f'DROP TABLE "{table}"')
            c.executemany("DELETE FROM ledger_meta WHERE k=?", [(k,) for k in meta])

    @property
    def levels(self) -> list[int]:
        """How many runs each level holds."""
        top = max((lvl for _, lvl in self.runs), default=0)
        return [sum(lvl == i for _, lvl in self.runs) for i in range(1, top + 1)]

    def remember(self, base: int, ids: bytes, sns: bytes, subjects: list[str | None]) -> None:
        """Hold one block's keys in memory: `ids` and `sns` are its tx_ids (32 bytes each)
        and nonce keys (16 bytes each) end to end; transaction i has seq base + i."""
        seqs = np.arange(base, base + len(subjects), dtype=_I8)
        nonces = shorts(sns, 16)
        self._hold("nonce", nonces, seqs)
        self.bloom.add_all(nonces)
        if "txid" in self.mem:
            self._hold("txid", shorts(ids, 32), seqs)
        if "subject" in self.mem:
            at = [i for i, s in enumerate(subjects) if s is not None]
            self._hold("subject", subject_keys([subjects[i] for i in at]), seqs[at])

    def _hold(self, name: str, keys: np.ndarray, seqs: np.ndarray) -> None:
        self.mem[name].append(keys, seqs)
        self.mem_entries += len(keys)

    def _in_memory(self, name: str) -> Chunk:
        return self.mem[name].view()

    def _candidate_array(self, name: str, keys: np.ndarray) -> np.ndarray:
        """Seqs filed under any of `keys`, in memory and in the runs (in no order)."""
        if name not in self.mem:
            raise LookupError(f"this index keeps no {name} lookups")
        mk, ms = self._in_memory(name)
        if len(keys) <= 4:   # a comparison per key beats isin's sort of the whole array
            hit = mk == keys[0]
            for k in keys[1:]:
                hit |= mk == k
        else:
            hit = np.isin(mk, keys)
        found = [ms[hit]]
        want: list[int] = []
        for run, _ in self.runs:
            if (name, run) not in self.fences:
                continue
            firsts, lasts = self.fences[(name, run)]
            want += {_part_id(run, name, p) for lo, hi in _spans(lasts, firsts, keys) for p in range(lo, hi)}
        for pk, ps in select_in(self.conn, "SELECT keys, seqs FROM idx_parts WHERE id IN ({})", want):
            pk, ps = np.frombuffer(pk, _I8), np.frombuffer(ps, _I8)
            found += [ps[lo:hi] for lo, hi in _spans(pk, pk, keys)]
        return np.concatenate(found)

    def _candidates(self, name: str, keys: np.ndarray) -> list[int]:
        return self._candidate_array(name, keys).tolist()

    # -- lookups ----------------------------------------------------------------------
    def seen_nonces(self, sns: list[bytes]) -> set[bytes]:
        if not sns:
            return set()
        keys = shorts(b"".join(sns), 16)
        keys = keys[self.bloom.contains(keys)]
        seqs = self._candidates("nonce", keys) if len(keys) else []
        return {v for _, v in self.fetch("sn", seqs)} & set(sns) if seqs else set()

    def may_have_nonce(self, sn: bytes) -> bool:
        """False when no committed transaction has this nonce key (the Bloom filter's
        answer, without a read)."""
        return self.bloom.might_contain(short(sn))

    def seq_of(self, tx_id: bytes) -> int | None:
        """The seq of the first committed transaction with this id."""
        seqs = self._candidates("txid", np.array([short(tx_id)], _I8))
        hits = [s for s, v in self.fetch("tx_id", seqs) if v == tx_id]
        return min(hits) if hits else None

    def subject_candidates(self, subject: str) -> np.ndarray:
        """Seqs that may touch `subject`, sorted (a key collision adds a few that do not:
        confirm them with `fetch("subject", ...)`)."""
        return np.sort(self._candidate_array("subject", subject_keys([subject])))

    def subject_seqs(self, subject: str, after: int, limit: int) -> list[int]:
        """Seqs of transactions touching `subject` after `after`, oldest first."""
        seqs = [s for s in self.subject_candidates(subject).tolist() if s > after]
        return [s for s, v in sorted(self.fetch("subject", seqs)) if v == subject][:limit]

    # -- writing ------------------------------------------------------------------------
    def note_block(self, base: int, ids: bytes, sns: bytes, subjects: list[str | None]) -> None:
        """The keys of a block just committed; merged into the runs (a transaction of
        its own) once enough have gathered. A crash before the merge loses nothing: the
        blocks are read back on open."""
        self.remember(base, ids, sns, subjects)
        if subjects and self.mem_entries >= self.merge_at:
            self.merge(base + len(subjects) - 1)

    def merge(self, upto: int) -> None:
        runs = list(self.runs)
        fences = dict(self.fences)
        with transaction(self.conn) as c:
            c.execute(_SCHEMA)
            new, level = max((r for r, _ in runs), default=0) + 1, 1
            for name in self.names:
                keys, seqs = self._in_memory(name)
                order = np.argsort(keys, kind="stable")
                self._write(c, name, new, [(keys[order], seqs[order])], fences)
            runs.append((new, level))
            while len(full := [r for r, lvl in runs if lvl == level]) >= self.ratio:
                new = max(r for r, _ in runs) + 1
                for name in self.names:
                    self._write(c, name, new, self._merged(c, name, full, fences), fences)
                    for r in full:
                        c.execute("DELETE FROM idx_parts WHERE id BETWEEN ? AND ?", _part_ids(r, name))
                        fences.pop((name, r), None)
                runs = [(r, lvl) for r, lvl in runs if lvl != level] + [(new, level + 1)]
                level += 1
            bloom = self.bloom
            if bloom.count > bloom.capacity:   # grown: rebuilt from every run
                bloom = Bloom.sized(2 * bloom.count)
                for run, _ in runs:
                    for keys, _ in self._parts(c, "nonce", run, fences):
                        bloom.add_all(keys)
            c.executemany("INSERT OR REPLACE INTO ledger_meta VALUES (?, ?)", [
                ("idx_format", FORMAT), ("idx_merged", str(upto).encode()), ("idx_runs", msgpack.packb(runs)),
                ("idx_nonce_bloom", bloom.to_bytes())])
        self.merged, self.runs, self.fences, self.bloom = upto, runs, fences, bloom
        for name in self.names:
            self.mem[name].clear()
        self.mem_entries = 0

    @staticmethod
    def _parts(c: sqlite3.Connection, name: str, run: int, fences: dict) -> Iterator[Chunk]:
        for p in range(len(fences.get((name, run), ((),))[0])):
            keys, seqs = c.execute("SELECT keys, seqs FROM idx_parts WHERE id=?", (_part_id(run, name, p),)).fetchone()
            yield np.frombuffer(keys, _I8), np.frombuffer(seqs, _I8)

    def _merged(self, c: sqlite3.Connection, name: str, runs: list[int], fences: dict) -> Iterator[Chunk]:
        """The entries of `runs` in key order, a part of each at a time: each step takes
        from every run the keys up to the smallest of their current parts' last keys."""
        streams = [self._parts(c, name, r, fences) for r in runs]
        heads = [[*head, s] for s in streams if (head := next(s, None)) is not None]
        while heads:
            cut = min(h[0][-1] for h in heads)
            keys, seqs = [], []
            for h in heads:
                i = int(np.searchsorted(h[0], cut, "right"))
                keys.append(h[0][:i])
                seqs.append(h[1][:i])
                h[0], h[1] = h[0][i:], h[1][i:]
                if not len(h[0]):
                    h[0], h[1] = next(h[2], (None, None))
            heads = [h for h in heads if h[0] is not None]
            keys_a, seqs_a = np.concatenate(keys), np.concatenate(seqs)
            order = np.argsort(keys_a, kind="stable")
            yield keys_a[order], seqs_a[order]

    @staticmethod
    def _write(c: sqlite3.Connection, name: str, run: int, chunks: Iterable[Chunk], fences: dict) -> None:
        """Store a sorted run, given in sorted chunks, as parts of PART keys."""
        firsts: list[int] = []
        lasts: list[int] = []

        def put(keys: np.ndarray, seqs: np.ndarray) -> None:
            first, last = int(keys[0]), int(keys[-1])
            c.execute("INSERT INTO idx_parts VALUES (?, ?, ?, ?, ?)",
                      (_part_id(run, name, len(firsts)), first, last, keys.tobytes(), seqs.tobytes()))
            firsts.append(first)
            lasts.append(last)

        held_k: list[np.ndarray] = []
        held_s: list[np.ndarray] = []
        held = 0
        for keys, seqs in chunks:
            held_k.append(keys)
            held_s.append(seqs)
            held += len(keys)
            if held >= PART:
                keys, seqs = np.concatenate(held_k), np.concatenate(held_s)
                full = held - held % PART
                for i in range(0, full, PART):
                    put(keys[i:i + PART], seqs[i:i + PART])
                held_k, held_s, held = [keys[full:]], [seqs[full:]], held - full
        if held:
            put(np.concatenate(held_k), np.concatenate(held_s))
        if firsts:
            fences[(name, run)] = (np.array(firsts, _I8), np.array(lasts, _I8))
