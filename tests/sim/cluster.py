"""Simulated cluster of RawNodes over an in-memory network, with invariant checks.

Each node persists into its own MemoryStorage (which outlives a crash: it stands for the
disk). The application on each node is a tiny state machine: the index of the last
applied entry and a running checksum of everything applied, which is also what its
snapshots carry. The checker keeps a global record of every committed entry, so an
application that ever applies something different at an index is caught at once.
"""
from __future__ import annotations

import heapq
from collections import Counter
import random
import struct
import zlib
from dataclasses import dataclass, field

from crmledger.consensus import (
    Config, ConfChange, ConfChangeType, Entry, EntryType, HardState, MemoryStorage, Message,
    RawNode, Ready, StateType, bootstrap_snapshot,
)
from crmledger.storage.raft_store import SqliteRaftStorage


class InvariantViolation(AssertionError):
    pass


def _chain(h: int, e: Entry) -> int:
    return zlib.crc32(struct.pack(">QQB", e.index, e.term, int(e.type)) + e.data, h)


@dataclass
class App:
    index: int = 1   # founding members start from the bootstrap snapshot at index 1
    checksum: int = 0

    def encode(self) -> bytes:
        return struct.pack(">QI", self.index, self.checksum)

    @classmethod
    def decode(cls, data: bytes) -> "App":
        if not data:
            return cls()
        index, checksum = struct.unpack(">QI", data)
        return cls(index, checksum)


@dataclass
class SimNode:
    id: int
    storage: MemoryStorage
    raw: RawNode | None = None
    app: App = field(default_factory=App)
    applied_log: list[int] = field(default_factory=list)  # indexes applied since start

    @property
    def alive(self) -> bool:
        return self.raw is not None


@dataclass
class Faults:
    drop: float = 0.0         # probability a message is lost
    duplicate: float = 0.0    # probability a message is delivered twice
    min_delay: int = 1
    max_delay: int = 3
    long_delay: float = 0.0   # probability of a delay up to `long_delay_max` (reordering)
    long_delay_max: int = 40


class Cluster:
    TICK = 10  # virtual time between two ticks of one node

    def __init__(self, n: int = 3, seed: int = 0, *, election_tick: int = 10,
                 heartbeat_tick: int = 1, pre_vote: bool = True, check_quorum: bool = True,
                 max_inflight: int = 16, max_size_per_msg: int = 1 << 16,
                 snapshot_every: int = 0, snapshot_keep: int = 0,
                 faults: Faults | None = None, durable_dir=None) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.cfg_kw = dict(election_tick=election_tick, heartbeat_tick=heartbeat_tick,
                           pre_vote=pre_vote, check_quorum=check_quorum,
                           max_inflight=max_inflight, max_size_per_msg=max_size_per_msg)
        self.snapshot_every = snapshot_every
        self.snapshot_keep = snapshot_keep
        self.faults = faults or Faults()
        self.durable_dir = durable_dir  # each node's Raft state in SQLite, reopened on restart
        self.now = 0
        self.seq = 0
        self.queue: list[tuple[int, int, Message]] = []  # (deliver_at, seq, msg)
        self.cut: set[tuple[int, int]] = set()            # directed links that lose everything
        self.nodes: dict[int, SimNode] = {}
        self.next_tick: dict[int, int] = {}
        # checker state
        self.committed: dict[int, tuple[int, bytes, int]] = {}  # index -> (term, data, type)
        self.checksum_at: dict[int, int] = {1: 0}
        self.max_committed = 1
        self.commit_marks: list[tuple[int, int]] = []  # (max term seen, max committed index)
        self.leader_of_term: dict[int, int] = {}
        self.seen: dict[tuple[int, int], tuple[bytes, int]] = {}  # (index, term) -> (data, prev term)
        self.read_marks: dict[bytes, int] = {}   # a read's context -> highest index committed when asked
        self.events = 0
        self.crash_in_ready = 0.0  # probability a node dies with a Ready not yet persisted
        self.crash_after_send = 0.0  # ... or dies once it sent what may go before the write, not after
        self.stats: Counter[str] = Counter()
        voters = list(range(1, n + 1))
        for nid in voters:
            self.nodes[nid] = SimNode(nid, self._new_storage(nid, voters))
            self.start(nid)

    def _new_storage(self, nid: int, voters: list[int] | None):
        if self.durable_dir is None:
            return MemoryStorage.bootstrapped(voters) if voters else MemoryStorage()
        st = SqliteRaftStorage.open(self.durable_dir / f"node{nid}.db", fsync=False)
        if voters:
            st.bootstrap(bootstrap_snapshot(voters), HardState(term=1))
        return st

    # -- lifecycle ------------------------------------------------------------------
    def config(self, nid: int, applied: int = 0) -> Config:
        return Config(id=nid, applied=applied, **self.cfg_kw)

    def start(self, nid: int) -> None:
        node = self.nodes[nid]
        assert node.raw is None
        if self.durable_dir is not None:  # what the process finds on disk when it starts
            node.storage.conn.close()
            node.storage = SqliteRaftStorage.open(self.durable_dir / f"node{nid}.db", fsync=False)
        snap = node.storage.snapshot()
        node.app = App.decode(snap.data) if not snap.is_empty() else App(index=0)
        node.applied_log = []
        node.raw = RawNode(self.config(nid, applied=snap.index), node.storage,
                           random.Random(self.rng.getrandbits(32)))
        self.next_tick[nid] = self.now + self.rng.randrange(1, self.TICK + 1)

    def crash(self, nid: int) -> None:
        """Lose everything not yet on stable storage (including any Ready not handled)."""
        self.stats["crashes"] += 1
        self.nodes[nid].raw = None

    def restart(self, nid: int) -> None:
        if self.nodes[nid].alive:
            self.crash(nid)
        self.start(nid)

    def add_empty_node(self, nid: int) -> None:
        """A new server with nothing on disk, to be added by a configuration change."""
        self.nodes[nid] = SimNode(nid, self._new_storage(nid, None))
        self.start(nid)

    # -- network ------------------------------------------------------------------------
    def isolate(self, nid: int) -> None:
        for other in self.nodes:
            if other != nid:
                self.cut.add((nid, other))
                self.cut.add((other, nid))

    def partition(self, *groups: set[int]) -> None:
        self.cut.clear()
        for g1 in groups:
            for g2 in groups:
                if g1 is not g2:
                    for a in g1:
                        for b in g2:
                            self.cut.add((a, b))

    def cut_link(self, a: int, b: int) -> None:
        self.cut.add((a, b))
        self.cut.add((b, a))

    def heal(self) -> None:
        self.cut.clear()

    def _send(self, m: Message) -> None:
        f = self.faults
        if self.rng.random() < f.drop:
            return
        copies = 2 if self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            delay = self.rng.randint(f.min_delay, f.max_delay)
            if f.long_delay and self.rng.random() < f.long_delay:
                delay = self.rng.randint(f.max_delay, f.long_delay_max)
            self.seq += 1
            heapq.heappush(self.queue, (self.now + delay, self.seq, m))

    def filter_queue(self, keep) -> None:
        self.queue = [x for x in self.queue if keep(x[2])]
        heapq.heapify(self.queue)

    # -- driving --------------------------------------------------------------------------
    def handle_ready(self, nid: int) -> None:
        node = self.nodes[nid]
        raw = node.raw
        while raw is not None and raw.has_ready():
            if self.crash_in_ready and self.rng.random() < self.crash_in_ready:
                self.crash(nid)
                return
            rd = raw.ready()
            self._check_reads(nid, rd)
            for m in rd.messages:
                if (m.frm, m.to) not in self.cut and m.to in self.nodes:
                    self._send(m)
            if self.crash_after_send and self.rng.random() < self.crash_after_send:
                self.crash(nid)   # what it sent is out; what it had to write is lost
                return
            self._check_and_persist(node, rd)
            for m in rd.messages_after_write:
                if (m.frm, m.to) not in self.cut and m.to in self.nodes:
                    self._send(m)
            self._apply(node, rd)
            raw.advance(rd)
            self._maybe_snapshot(node)
            self.check_invariants()

    def known_committed(self) -> int:
        """The highest index known committed anywhere: applied by some node, or in a
        live node's commit index."""
        return max([self.max_committed] + [n.raw.raft.log.committed for n in self.nodes.values() if n.raw])

    def read(self, nid: int) -> bytes:
        """Ask node `nid` for a read index (raises NotLeader, ProposalDropped); its answer
        is checked against what was committed when it was asked."""
        self.seq += 1
        ctx = b"read%d" % self.seq
        self.raw(nid).read_index(ctx)
        self.read_marks[ctx] = self.known_committed()
        self.stats["reads_asked"] += 1
        self.handle_ready(nid)
        return ctx

    def _check_reads(self, nid: int, rd: Ready) -> None:
        for rs in rd.read_states:
            mark = self.read_marks.pop(rs.context, None)
            if not rs.index:
                self.stats["reads_failed"] += 1
                continue
            self.stats["reads_answered"] += 1
            if mark is not None and rs.index < mark:
                raise InvariantViolation(f"linearizable read: node {nid} answered a read with index "
                                         f"{rs.index}, but {mark} was committed when it was asked")

    def _check_and_persist(self, node: SimNode, rd: Ready) -> None:
        raw = node.raw
        assert raw is not None
        if rd.snapshot is not None:
            node.storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            log = raw.raft.log
            for e in rd.entries:
                prev = log.term(e.index - 1)
                key = (e.index, e.term)
                got = self.seen.get(key)
                if got is None:
                    self.seen[key] = (e.data, prev)
                elif got != (e.data, prev):
                    raise InvariantViolation(f"log matching: node {node.id} has a different entry "
                                             f"or predecessor at index {e.index} term {e.term}")
            node.storage.append(rd.entries)
        if rd.hard_state is not None:
            node.storage.set_hard_state(rd.hard_state)

    def _apply(self, node: SimNode, rd: Ready) -> None:
        if rd.snapshot is not None:
            snap = rd.snapshot
            app = App.decode(snap.data)
            if app.index != snap.index:
                raise InvariantViolation(f"snapshot at {snap.index} carries state at {app.index}")
            want = self.checksum_at.get(snap.index)
            if want is not None and want != app.checksum:
                raise InvariantViolation(f"node {node.id} installed a snapshot at {snap.index} "
                                         f"that differs from the committed state")
            node.app = app
            self.stats["snapshots_installed"] += 1
        for e in rd.committed_entries:
            if e.index != node.app.index + 1:
                raise InvariantViolation(f"node {node.id} applies {e.index} after {node.app.index}")
            rec = self.committed.get(e.index)
            if rec is None:
                self.committed[e.index] = (e.term, e.data, int(e.type))
                if e.index > self.max_committed:
                    self.max_committed = e.index
                    top_term = max((n.raw.raft.term for n in self.nodes.values() if n.raw), default=0)
                    self.commit_marks.append((top_term, e.index))
            elif rec != (e.term, e.data, int(e.type)):
                raise InvariantViolation(f"state machine safety: node {node.id} applied a different "
                                         f"entry at index {e.index}: {rec} vs {(e.term, e.data)}")
            if e.type == EntryType.CONF_CHANGE:
                node.raw.apply_conf_change(ConfChange.decode(e.data))
                self.stats["conf_changes_applied"] += 1
            node.app.checksum = _chain(node.app.checksum, e)
            node.app.index = e.index
            node.applied_log.append(e.index)
            want = self.checksum_at.setdefault(e.index, node.app.checksum)
            if want != node.app.checksum:
                raise InvariantViolation(f"node {node.id} state after {e.index} differs")

    def _maybe_snapshot(self, node: SimNode) -> None:
        raw = node.raw
        if not self.snapshot_every or raw is None:
            return
        applied = raw.raft.log.applied
        if applied - node.storage.snapshot().index >= self.snapshot_every:
            assert node.app.index == applied
            raw.compact(node.app.encode(), keep=self.snapshot_keep)

    def check_invariants(self) -> None:
        for node in self.nodes.values():
            raw = node.raw
            if raw is None or raw.raft.state != StateType.LEADER:
                continue
            r = raw.raft
            prior = self.leader_of_term.setdefault(r.term, node.id)
            if prior != node.id:
                raise InvariantViolation(f"election safety: nodes {prior} and {node.id} both lead term {r.term}")
            # leader completeness: everything committed before this term began is in its log
            for top_term, idx in reversed(self.commit_marks):
                if top_term < r.term:
                    if idx >= r.log.first_index() - 1 and r.log.term(idx) != self.committed[idx][0]:
                        raise InvariantViolation(f"leader completeness: leader {node.id} of term {r.term} "
                                                 f"lacks committed entry {idx}")
                    break

    def step_event(self) -> bool:
        """Run the next event in virtual time: a delivery or a tick. False if none."""
        next_msg = self.queue[0][0] if self.queue else None
        alive = [n for n in self.nodes.values() if n.alive]
        tick_id = min((n.id for n in alive), key=lambda i: self.next_tick[i], default=None)
        next_tick = self.next_tick[tick_id] if tick_id is not None else None
        if next_msg is None and next_tick is None:
            return False
        self.events += 1
        if next_tick is None or (next_msg is not None and next_msg <= next_tick):
            at, _, m = heapq.heappop(self.queue)
            self.now = max(self.now, at)
            self.deliver(m)
        else:
            self.now = max(self.now, next_tick)
            self.next_tick[tick_id] = self.now + self.TICK
            self.nodes[tick_id].raw.tick()
            self.handle_ready(tick_id)
        return True

    def deliver(self, m: Message) -> None:
        node = self.nodes.get(m.to)
        if node is None or node.raw is None or (m.frm, m.to) in self.cut:
            return
        node.raw.step(m)
        self.handle_ready(m.to)

    def run_for(self, ticks: int) -> None:
        end = self.now + ticks * self.TICK
        while self.step_event() and self.now < end:
            pass

    def run_until(self, cond, max_ticks: int) -> bool:
        end = self.now + max_ticks * self.TICK
        while not cond():
            if self.now >= end or not self.step_event():
                return cond()
        return True

    def deliver_all(self, keep=None, limit: int = 100_000) -> None:
        """Deliver every message in flight (and those they cause), without ticking;
        messages for which `keep` is false are lost."""
        for _ in range(limit):
            if not self.queue:
                return
            at, _, m = heapq.heappop(self.queue)
            self.now = max(self.now, at)
            if keep is None or keep(m):
                self.deliver(m)
        raise RuntimeError("messages kept flowing")

    # -- conveniences for tests ---------------------------------------------------------------
    def raw(self, nid: int) -> RawNode:
        raw = self.nodes[nid].raw
        assert raw is not None, f"node {nid} is down"
        return raw

    def tick(self, nid: int, n: int = 1) -> None:
        for _ in range(n):
            self.raw(nid).tick()
            self.handle_ready(nid)

    def campaign(self, nid: int) -> None:
        self.raw(nid).campaign()
        self.handle_ready(nid)
        self.deliver_all()

    def leader(self) -> int | None:
        """The leader of the highest term among live nodes, if any."""
        best = None
        for node in self.nodes.values():
            if node.raw is not None and node.raw.raft.state == StateType.LEADER:
                if best is None or node.raw.raft.term > self.raw(best).raft.term:
                    best = node.id
        return best

    def propose(self, nid: int, data: bytes) -> int:
        idx = self.raw(nid).propose(data)
        self.handle_ready(nid)
        return idx

    def conf_change(self, nid: int, type_: ConfChangeType, target: int) -> int:
        idx = self.raw(nid).propose_conf_change(ConfChange(type_, target))
        self.handle_ready(nid)
        return idx

    def applied(self, nid: int) -> int:
        return self.nodes[nid].app.index

    def data_at(self, index: int) -> bytes | None:
        rec = self.committed.get(index)
        return rec[1] if rec else None

    def committed_data(self) -> list[bytes]:
        return [self.committed[i][1] for i in sorted(self.committed)
                if self.committed[i][2] == EntryType.NORMAL and self.committed[i][1]]

    def live(self) -> list[int]:
        return [n.id for n in self.nodes.values() if n.alive]

    def voters(self) -> frozenset[int]:
        lead = self.leader()
        src = self.raw(lead) if lead else self.raw(self.live()[0])
        return src.raft.conf.voters
