"""The Raft driver: the one task that owns the Raft core. Everything that must reach the
core (peer messages, a leadership transfer, a nudge that a block may be due, the request
to stop) comes through one inbox; the driver ticks the core on time, lets the proposer
cut a block, and honours every Ready in the order consensus.rawnode prescribes: send what
may go at once, persist (fsync, in a worker thread), send the rest, apply, advance."""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from crmledger.consensus import (
    ConfChange, ConfChangeType, Message, NotLeader, ProposalDropped, RawNode, Ready, StateType,
)
from crmledger.node.applier import Applier
from crmledger.node.blocksync import BlockSync, SnapshotInfo, snapshot_info
from crmledger.node.config import RaftConfig
from crmledger.node.metrics import Metrics
from crmledger.node.proposer import BlockProposer
from crmledger.storage.datadir import DataDir
from crmledger.storage.sqlite import is_disk_full

log = logging.getLogger("crmledger.node")


@dataclass(frozen=True, slots=True)
class TransferTo:
    """Hand leadership to this Raft id."""
    raft_id: int


@dataclass(frozen=True, slots=True)
class LeaderDown:
    """The link from this Raft id, the leader, ended at once."""
    raft_id: int


@dataclass(frozen=True, slots=True)
class ReadIndex:
    """Find the read index (leader only): `answer` gets the commit index once a quorum
    confirmed this node leads, or NotLeader/ProposalDropped."""
    answer: asyncio.Future


class Wake:
    """Look again: a block may be due."""


class Stop:
    """Finish the round and return."""


InboxItem = Message | TransferTo | LeaderDown | ReadIndex | type[Wake] | type[Stop]


class StopWhileFull(Exception):
    """Told to stop while a write waited for room on the disk."""


async def _now(fn, *args, **kw):
    return fn(*args, **kw)


class Inbox:
    def __init__(self) -> None:
        self.items: deque[InboxItem] = deque()
        self.ready = asyncio.Event()

    def put(self, item: InboxItem) -> None:
        self.items.append(item)
        self.ready.set()

    async def wait(self, timeout: float) -> None:
        if not self.items:
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        self.ready.clear()

    def drain(self) -> list[InboxItem]:
        out = list(self.items)
        self.items.clear()
        return out


class RaftDriver:
    def __init__(self, raw: RawNode, dd: DataDir, cfg: RaftConfig, inbox: Inbox, proposer: BlockProposer,
                 applier: Applier, sync: BlockSync, send: Callable[[Message], None], metrics: Metrics,
                 members: Callable[[], frozenset[int]] | None = None) -> None:
        self.raw = raw
        self.dd = dd
        self.cfg = cfg
        self.inbox = inbox
        self.proposer = proposer
        self.applier = applier
        self.sync = sync
        self.send = send
        self.metrics = metrics
        self.snapshot_height = snapshot_info(dd.raft.snapshot()).height
        self.stopped = False
        self.disk_full = False   # a write is waiting for room on the disk
        self.reads: dict[bytes, list[asyncio.Future]] = {}   # read-index rounds in flight
        self.members = members   # the Raft ids the consortium in force names
        self._refused: ConfChange | None = None   # the last change the core would not take (said once)

    async def run(self) -> None:
        snap = self.dd.raft.snapshot()
        if self.dd.ledger.applied_index < snap.index:
            # a snapshot was installed, its blocks not all fetched
            self.snapshot_height = await self.sync.catch_up(snap)
        loop = asyncio.get_running_loop()
        tick = self.cfg.tick_ms / 1000
        next_tick = loop.time() + tick
        while not self.stopped:
            timeout = max(0.0, next_tick - loop.time())
            due = self.proposer.block_due_in()
            if due is not None:
                timeout = min(timeout, due)
            await self.inbox.wait(timeout)
            reads: list[asyncio.Future] = []
            for item in self.inbox.drain():
                if isinstance(item, Message):
                    self.raw.step(item)
                elif isinstance(item, ReadIndex):
                    reads.append(item.answer)
                elif isinstance(item, TransferTo):
                    try:
                        self.raw.transfer_leadership(item.raft_id)
                    except (NotLeader, ProposalDropped):
                        pass
                elif isinstance(item, LeaderDown):
                    self.raw.report_leader_down(item.raft_id)
                elif item is Stop:
                    self.stopped = True
            if reads:
                self._read_index(reads)
            now = loop.time()
            behind = 0
            while now >= next_tick and behind < 5:
                self.raw.tick()
                next_tick += tick
                behind += 1
            if now >= next_tick:
                next_tick = now + tick
            if self.members is not None and self.raw.raft.state == StateType.LEADER:
                self._follow_members()
            self.proposer.maybe_propose()
            try:
                await self._handle_readies()
                await self._written(_now, self._maybe_snapshot)
            except StopWhileFull:
                return

    async def _handle_readies(self) -> None:
        while self.raw.has_ready():
            rd: Ready = self.raw.ready()
            if rd.soft_state is not None:
                self.proposer.on_role_change(rd.soft_state.state)
            for m in rd.messages:
                self.send(m)
            for rs in rd.read_states:
                self._answer_reads(self.reads.pop(rs.context, ()), rs.index)
            if rd.must_sync:
                t = time.perf_counter()
                await self._written(asyncio.to_thread, self.dd.raft.save, rd.hard_state, rd.entries, rd.snapshot)
                self.metrics.fsync_seconds.observe(time.perf_counter() - t)
            elif rd.hard_state is not None:   # only the commit index moved: no need to wait for the disk
                await self._written(_now, self.dd.raft.save, rd.hard_state, (), durable=False)
            if rd.snapshot is not None:
                # the snapshot is durable: now fetch the blocks it stands for (a crash
                # before this ends is resumed by `run` on the next start)
                self.snapshot_height = await self.sync.catch_up(rd.snapshot)
            for m in rd.messages_after_write:
                self.send(m)
            if rd.committed_entries:
                for e in rd.committed_entries:
                    self.proposer.committed(e.index)
                await self._written(self.applier.apply, rd.committed_entries)
            self.raw.advance(rd)

    def _follow_members(self) -> None:
        """On the leader: bring the Raft group in line with the consortium in force, one
        change at a time — a node voted in joins as a learner and is promoted once caught
        up (by the core); a node voted out is removed."""
        r = self.raw.raft
        if r.pending_conf_index > r.log.applied or r.lead_transferee:
            return   # a change under way, or this leader has not applied its predecessors' yet
        want, have = self.members(), r.conf.members()
        if want == have or not want:
            return
        add, drop = sorted(want - have), sorted(have - want)
        cc = ConfChange(ConfChangeType.ADD_NODE, add[0]) if add else ConfChange(ConfChangeType.REMOVE_NODE, drop[0])
        try:
            self.raw.propose_conf_change(cc)
        except (NotLeader, ProposalDropped) as e:
            if cc != self._refused:
                log.warning("cannot propose %s of Raft node %d: %s", cc.type.name, cc.node_id, e)
                self._refused = cc
            return
        log.info("proposed %s of Raft node %d, as the consortium says", cc.type.name, cc.node_id)

    def _read_index(self, answers: list[asyncio.Future]) -> None:
        """One read-index round for every read asked since the last."""
        ctx = os.urandom(8)
        try:
            self.raw.read_index(ctx)
        except (NotLeader, ProposalDropped) as e:
            for f in answers:
                if not f.done():
                    f.set_exception(e)
            return
        self.reads[ctx] = answers

    @staticmethod
    def _answer_reads(answers, index: int) -> None:
        for f in answers:
            if f.done():
                continue   # its asker gave up
            if index:
                f.set_result(index)
            else:
                f.set_exception(NotLeader(0))

    async def _written(self, run, *args, **kw):
        """`await run(*args, **kw)`, a write to this node's disk, tried again every second
        while the disk is full (the Ready it belongs to waits: nothing is sent or
        acknowledged that is not on disk, and submissions are refused meanwhile); a node
        told to stop meanwhile stops (raises StopWhileFull)."""
        while True:
            try:
                out = await run(*args, **kw)
            except Exception as e:
                if not is_disk_full(e):
                    raise
                if not self.disk_full:
                    log.error("the disk holding %s is full: this node refuses writes until there is room (%s)",
                              self.dd.path, e)
                self.disk_full = True
                for _ in range(10):
                    # Raft messages that arrive meanwhile are dropped (the protocol sends them again)
                    if any(item is Stop for item in self.inbox.drain()):
                        self.stopped = True
                        raise StopWhileFull() from None
                    await asyncio.sleep(0.1)
                continue
            if self.disk_full:
                log.warning("there is room on the disk again: this node takes writes again")
                self.disk_full = False
            return out

    def _maybe_snapshot(self) -> None:
        """Every `snapshot_every_blocks` blocks: record where the ledger is as the Raft
        snapshot and drop the log before it, keeping `keep_entries` for slow followers."""
        led = self.dd.ledger
        if led.height - self.snapshot_height < self.cfg.snapshot_every_blocks:
            return
        if self.raw.status().applied != led.applied_index:
            return
        led.sync()  # what the snapshot describes is on disk before the log entries go
        self.raw.compact(SnapshotInfo(led.height, led.head_hash, led.applied_index).encode(),
                         keep=self.cfg.keep_entries)
        self.snapshot_height = led.height
        log.info("snapshot at height %d (index %d)", led.height, led.applied_index)
