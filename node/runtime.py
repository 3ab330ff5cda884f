"""The node: where its parts are made and joined (the composition root), and its one
lifecycle. The parts, one job each:
  * `driver.RaftDriver` — owns the Raft core: one inbox, ticks, Ready handling;
  * `proposer.BlockProposer` — on the leader, when to cut a block and what it holds;
  * `applier.Applier` — committed entries into the ledger; waiters and event streams;
  * `blocksync.BlockSync` — blocks served to peers and fetched after a snapshot;
  * `gossip.Gossip` — admitted transactions to and from the peers;
  * `admission.Admission`, `mempool.Mempool` — who may write, and what waits for a block;
  * `reader.Reader`, `reader.Workers` — heavy reads and checks off the event loop.
`Node.running()` starts them and, on the way out, hands leadership over, stops and
closes everything, whatever ends it."""
from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from crmledger.consensus import (
    Config, HardState, Message, NotLeader, ProposalDropped, RawNode, StateType, bootstrap_snapshot,
)
from crmledger.ledger.consortium import Consortium, from_state as consortium_from_state
from crmledger.ledger.genesis import GenesisError, load_genesis
from crmledger.ledger.tx import Tx
from crmledger.node.admission import Admission, Refused
from crmledger.node.applier import Applier
from crmledger.node.blocksync import BlockSync
from crmledger.node.config import NodeConfig, load_signing_key
from crmledger.node.driver import Inbox, LeaderDown, RaftDriver, ReadIndex, Stop, TransferTo, Wake
from crmledger.node.gossip import Gossip
from crmledger.node.backlog import Backlog
from crmledger.node.mempool import Mempool, MempoolFull
from crmledger.node.metrics import Metrics
from crmledger.node.disclosure import Disclosure
from crmledger.node.peercalls import CallFailed, PeerCalls
from crmledger.node.reqauth import ReplayGuard
from crmledger.node.peers import PeerLinks
from crmledger.node.private import PrivateData
from crmledger.node.proposer import BlockProposer
from crmledger.node.reader import Busy, Reader, Workers
from crmledger.node.wire import WireError, message_from_wire, message_to_wire
from crmledger.storage.datadir import open_data_dir
from crmledger.storage.ledger_store import TxRecord

log = logging.getLogger("crmledger.node")
ROLES = {StateType.LEADER: "leader", StateType.FOLLOWER: "follower"}


JOIN_FILE = "consortium.json"   # beside the data of a node voted in: the consortium it joins


class NodeError(Exception):
    pass


class Admitted(enum.Enum):
    PENDING = "pending"       # new: in the mempool, gossiped
    KNOWN = "known"           # in the mempool already
    COMMITTED = "committed"   # on the chain already


class Node:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.genesis = load_genesis(cfg.genesis)
        self.key = load_signing_key(cfg.node_key)
        self.dd = open_data_dir(cfg.data_dir, self.genesis)
        try:
            cs = self._consortium_at_start()
        except NodeError:
            self.dd.close()
            raise
        me = self.me = cs.nodes[cfg.node_id]
        if self.key.public_hex != me.pubkey:
            self.dd.close()
            raise NodeError(f"{cfg.node_key} is not the key the consortium names for {cfg.node_id}")
        if self.dd.raft.last_index() == 0 and cfg.node_id in self.genesis.nodes:
            # a founding node; one voted in later starts with an empty log, and the leader
            # brings it in (as a learner, with a snapshot, then as a voter)
            voters = sorted(n.raft_id for n in self.genesis.nodes.values())
            self.dd.raft.bootstrap(bootstrap_snapshot(voters), HardState(term=1))
        self.by_raft_id = {n.raft_id: n.node_id for n in cs.nodes.values()}
        self.consortium_version = cs.version
        self.on_removed: Callable[[], None] = lambda: None   # told when the consortium removed this node
        self.lingering: frozenset[str] = frozenset()   # removed nodes still linked (see _update_links)
        self.leaving = False
        self.raw = RawNode(Config(id=me.raft_id, election_tick=cfg.raft.election_ticks,
                                  heartbeat_tick=cfg.raft.heartbeat_ticks,
                                  applied=self.dd.ledger.applied_index, max_size_per_msg=4 << 20),
                           self.dd.raft, random.Random())
        self.accepting = True
        self.metrics = Metrics(cfg.node_id)
        self.mempool = Mempool(cfg.mempool.max_txs)
        self.backlog = Backlog(cfg.mempool.max_queue_ms, cfg.blocks.max_txs)
        self.checking = 0   # transactions of batches being decoded and checked
        self._applied = asyncio.Event()   # set and replaced at each block applied
        self.admission = Admission(lambda: self.dd.ledger.consortium(), cfg.limits)
        self.reader = Reader(cfg.data_dir / "ledger.db", self.genesis, cfg.limits.read_workers,
                             cfg.limits.read_queue)
        self.checker = Workers("checker", 2, 64)   # decodes and checks large batches, gossip and blocks
        self.peers = PeerLinks(me, cs, self.genesis.hash, str(cfg.tls_cert), str(cfg.node_key), self._on_frame,
                               on_lost=self._on_link_lost, on_up=lambda peer: self.gossip.resend_to(peer))
        self.inbox = Inbox()
        self.applier = Applier(self.raw, self.dd.ledger, self.dd.raft.initial_state()[1], self.mempool,
                               self.checker.pool, self.metrics)
        self.proposer = BlockProposer(self.raw, self.mempool, self.dd.ledger, self.key, me, cfg.blocks, self.metrics)
        self.sync = BlockSync(self.dd.ledger, self.peers, self.applier, self.leader_id)
        self.gossip = Gossip(cfg.mempool.gossip_ms, self.peers, self.mempool, self.dd.ledger, self.admission,
                             self.checker.pool, self.metrics, self._added)
        self.driver = RaftDriver(self.raw, self.dd, cfg.raft, self.inbox, self.proposer, self.applier, self.sync,
                                 self._send, self.metrics, lambda: self.consortium.raft_ids)
        self.last_raft_from: dict[str, float] = {}   # peer -> when its last Raft message came
        self.calls = PeerCalls(self.peers)
        self.calls.handle("commit_index", self._serve_commit_index)
        self.private = PrivateData(me, lambda: self.consortium, self.key, self.dd.private, self.dd.ledger, self.peers,
                                   self.calls, self.admit, self.checker.pool)
        self.applier.after_block = self._after_block
        self.replay = ReplayGuard()             # signed requests seen
        self.disclosure = Disclosure(self)
        self.private_tasks: set[asyncio.Task] = set()

    @property
    def consortium(self) -> Consortium:
        """The consortium in force at the last block applied."""
        return self.dd.ledger.consortium()

    def _consortium_at_start(self) -> Consortium:
        """The consortium as this node's chain has it; for a node voted in that has no
        chain yet, the one `crmledger join` wrote beside its data."""
        cs = self.dd.ledger.consortium()
        nid = self.cfg.node_id
        if nid in cs.nodes:
            return cs
        joined = self.dd.path / JOIN_FILE
        if joined.exists():
            try:
                got = consortium_from_state(json.loads(joined.read_text()))
            except (ValueError, KeyError, TypeError, GenesisError) as e:
                raise NodeError(f"{joined} is not a consortium this program wrote: {e}") from None
            if got.version > cs.version and nid in got.nodes:
                return got
        if nid in self.genesis.nodes or joined.exists():
            raise NodeError(f"{nid} was removed from the consortium (version {cs.version}, block {cs.height}); "
                            f"its chain in {self.dd.path} stays readable offline (crmledger verify)")
        raise NodeError(f"node_id {nid!r} is not a node of the consortium: once the orgs have voted it in, "
                        "start it with `crmledger join`")


    def _follow_consortium(self) -> None:
        """A block changed the consortium: reach the nodes it added, drop the ones it
        removed; a node removed itself stops (once out of the Raft group, or soon)."""
        cs = self.consortium
        self.consortium_version = cs.version
        self.by_raft_id.update({n.raft_id: n.node_id for n in cs.nodes.values()})
        self._update_links()
        log.info("consortium version %d in force from block %d: %d orgs, nodes %s", cs.version, cs.height,
                 len(cs.orgs), ", ".join(sorted(cs.nodes)))
        if self.me.node_id not in cs.nodes and not self.leaving:
            self.leaving = True
            log.warning("this node was removed from the consortium at block %d: it stops once out of the Raft "
                        "group; its chain stays readable offline (crmledger verify)", cs.height)
            t = asyncio.get_running_loop().create_task(self._leave())
            self.private_tasks.add(t)
            t.add_done_callback(self.private_tasks.discard)

    def _update_links(self) -> None:
        """Links to the consortium's nodes, and to the removed ones still in the Raft group
        (they learn from it that they are out, then their links close)."""
        cs = self.consortium
        in_group = {self.by_raft_id.get(r) for r in self.raw.status().conf.members()}
        linger = frozenset(nid for nid in self.peers.peers if nid not in cs.nodes and nid in in_group)
        self.peers.update(cs, linger)
        self.lingering = linger

    async def _leave(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.me.raft_id in self.raw.status().conf.members() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        self.on_removed()

    # -- status ------------------------------------------------------------------------------
    def leader_id(self) -> str | None:
        return self.by_raft_id.get(self.raw.leader_id)

    def status(self) -> dict:
        st = self.raw.status()
        return {"node_id": self.me.node_id, "role": ROLES.get(st.role, "candidate"), "term": st.term,
                "leader_id": self.by_raft_id.get(st.leader_id), "commit_index": st.commit,
                "height": self.dd.ledger.height, "head_hash": self.dd.ledger.head_hash,
                "peers": [{"node_id": nid, "connected": up} for nid, up in sorted(self.peers.connected.items())],
                # the Raft group as this node knows it (a node voted in joins as a learner)
                "voters": sorted(self.by_raft_id.get(r, str(r)) for r in st.conf.voters),
                "learners": sorted(self.by_raft_id.get(r, str(r)) for r in st.conf.learners)}

    def render_metrics(self) -> bytes:
        """The gauges are read when scraped, not kept up to date on the hot path."""
        self.metrics.observe_raft(self.raw.status(), self.dd.ledger.height, len(self.mempool),
                                  self.peers.connected, self.peers.counters, self.raw.raft.dropped)
        return self.metrics.render()

    # -- transactions in ---------------------------------------------------------------------
    def admit(self, tx: Tx, client: str | None = None, committed: bool | None = None) -> Admitted:
        """A transaction whose signature was checked, sent by `client` (an address)
        (`committed`: whether it is on the chain, when the caller has looked it up
        already). Raises admission.Refused or MempoolFull."""
        if tx.tx_id in self.mempool:
            return Admitted.KNOWN
        if self.driver.disk_full:
            self.rejected("disk_full")
            raise Refused(507, "disk_full", "this node's disk is full: it takes no writes until there is room "
                          "(send to another node)", 5)
        if committed is None:
            committed = self.dd.ledger.committed_record(tx) is not None
        if committed:
            return Admitted.COMMITTED
        now = time.monotonic()
        try:
            self.admission.check(self.dd.ledger.get, tx, self.mempool.by_signer[tx.signer], client, now)
            self.mempool.add(tx, now)
        except Refused as e:
            self.rejected(e.code)
            raise
        except MempoolFull:
            self.rejected("mempool_full")
            raise
        self.metrics.tx_admitted.inc()
        self.gossip.send_later(tx)
        self._added()
        return Admitted.PENDING

    async def block_applied(self, timeout: float) -> None:
        """Return when the next block is applied, or after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._applied.wait(), max(0.0, timeout))
        except asyncio.TimeoutError:
            pass

    def waiting(self) -> int:
        """Transactions this node holds that are not committed: in the mempool, in
        batches being checked, and in peers' frames not checked yet."""
        return len(self.mempool) + self.checking + self.gossip.queued_txs

    def rejected(self, reason: str) -> None:
        """Count a transaction refused at the door."""
        self.metrics.tx_rejected.labels(reason=reason).inc()

    def _added(self) -> None:
        if self.proposer.may_be_due():
            self.inbox.put(Wake)

    def wait_commit(self, tx_id: str) -> asyncio.Future:
        return self.applier.wait_commit(tx_id)

    def tx_record(self, tx_id: str) -> TxRecord | None:
        return self.dd.ledger.tx_record(tx_id)

    async def commit_of(self, tx_id: str, timeout: float) -> TxRecord:
        """The transaction's record once committed; raises asyncio.TimeoutError."""
        fut = self.wait_commit(tx_id)
        return self.tx_record(tx_id) or await asyncio.wait_for(fut, timeout)

    def _block_done(self, txs: int) -> None:
        """A block of `txs` transactions is applied: the commit rate moves, and
        submissions held for room look again."""
        self.backlog.committed(txs, time.monotonic())
        self._applied.set()
        self._applied = asyncio.Event()

    def _after_block(self, block, txs: list[Tx], out) -> None:
        self._block_done(len(txs))
        if any(ev["type"] == "consortium" for ev in out.events):
            self._follow_consortium()
        elif self.lingering:
            self._update_links()
        self.private.committed(txs, [r.code for r in out.results], out.events)
        for ev in out.events:
            if ev["type"] == "erasure":
                t = asyncio.get_running_loop().create_task(self._announce_erasure(ev))
                self.private_tasks.add(t)
                t.add_done_callback(self.private_tasks.discard)

    async def _announce_erasure(self, ev: dict) -> None:
        """An `erasure` event naming the customer and the orgs that read their data."""
        from crmledger.node.audit import access_log   # runs in a reader process
        for _ in range(50):
            try:
                entries = await self.reader.run(access_log, ev["customer_id"],
                                                self.dd.ledger.history_candidates(ev["customer_id"]))
                break
            except Busy:
                await asyncio.sleep(0.2)
        else:
            entries = []
        readers = sorted({e["reader_org"] for e in entries if e["code"] == "valid"})
        self.applier.publish("erasure", {"customer_id": ev["customer_id"], "cause": ev["cause"],
                                         "height": ev["height"], "orgs_that_read": readers})

    # -- being current ----------------------------------------------------------------------
    async def read_index(self, timeout: float) -> int:
        """On the leader: the commit index, once a quorum confirmed that this node still
        leads (a read index). Raises NotLeader, ProposalDropped or asyncio.TimeoutError."""
        answer = asyncio.get_running_loop().create_future()
        self.inbox.put(ReadIndex(answer))
        return await asyncio.wait_for(answer, timeout)

    async def _serve_commit_index(self, peer: str, args: dict) -> dict:
        try:
            return {"commit": await self.read_index(1.0)}
        except (NotLeader, ProposalDropped, asyncio.TimeoutError):
            raise CallFailed("not_leader", "this node could not confirm that it leads") from None

    async def _leader_commit(self, deadline: float) -> int:
        """The read index, from this node if it leads or from the leader, waiting out an
        election until `deadline`."""
        while True:
            left = max(0.1, deadline - time.monotonic())
            try:
                if self.raw.status().is_leader:
                    return await self.read_index(left)
                leader = self.leader_id()
                if leader is not None:
                    return (await self.calls.call(leader, "commit_index", {}, left))["commit"]
            except (CallFailed, KeyError, NotLeader, ProposalDropped, asyncio.TimeoutError):
                pass   # it lost leadership, or the link, or has not committed in its term: ask again
            if time.monotonic() > deadline:
                raise NodeError("no leader answered: the cluster may be electing one")
            await asyncio.sleep(0.02)

    async def ensure_current(self, timeout: float = 5.0) -> None:
        """Return once this node has applied everything the leader had committed when
        asked (a read index, as etcd's linearizable reads take one), so that a read of
        private data reflects every write and erasure acknowledged before it — also on a
        node that was away: raises NodeError when it cannot tell or get there in time."""
        deadline = time.monotonic() + timeout
        target = await self._leader_commit(deadline)
        while self.dd.ledger.applied_index < target:
            if time.monotonic() > deadline:
                raise NodeError("still catching up with the chain")
            await asyncio.sleep(0.005)

    # -- the peer links ----------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        peer = self.by_raft_id.get(m.to)
        if peer is not None:
            self.peers.send(peer, "raft", message_to_wire(m))

    def _on_link_lost(self, peer: str) -> None:
        """A peer's link ended at once: if it led, the driver tells the Raft core (which
        may then campaign without waiting for the election timeout)."""
        n = self.peers.peers.get(peer)
        if n is not None and n.raft_id == self.raw.leader_id:
            log.info("the link from the leader %s ended: it is gone", peer)
            self.inbox.put(LeaderDown(n.raft_id))

    def _on_frame(self, peer: str, kind: str, body) -> None:
        """A frame from an authenticated peer. Raises WireError for one that breaks the
        protocol; the link then drops it and the connection."""
        if kind == "raft":
            m = message_from_wire(body)
            if self.by_raft_id.get(m.frm) != peer:
                raise WireError(f"{peer} sent a Raft message as another node")
            now = time.monotonic()
            if peer in self.last_raft_from and m.frm == self.raw.leader_id:
                self.metrics.leader_gap.observe(now - self.last_raft_from[peer])
            self.last_raft_from[peer] = now
            self.inbox.put(m)
        elif kind == "txs" and type(body) is list:
            self.gossip.received(body)
        elif kind == "get_blocks" and type(body) is dict:
            self.sync.serve(peer, body)
        elif kind == "blocks" and type(body) is dict:
            self.sync.answered(body)
        elif kind == "call":
            self.calls.on_call(peer, body)
        elif kind == "reply":
            self.calls.on_reply(peer, body)
        elif kind == "private":
            self.private.received(peer, body)
        else:
            raise WireError(f"a {kind!r} frame with a body of the wrong shape")

    # -- the lifecycle -----------------------------------------------------------------------
    async def watch_loop(self, period: float = 0.05) -> None:
        """Measure how late the loop runs a task that is due: the time any handler, read
        or apply held it."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + period
            await asyncio.sleep(period)
            self.metrics.loop_lag.observe(max(0.0, loop.time() - due))

    @asynccontextmanager
    async def running(self, links: bool = True) -> AsyncIterator["Node"]:
        """Run the node (with its peer links, unless `links` is False) while the block
        runs; on the way out, whatever ends the block: hand leadership over, stop every
        task, close the links and the storage."""
        try:
            purged = self.private.purge_stale()   # before anything is served
            if purged:
                log.info("purged %d kinds of private data the chain says this node may no longer hold", purged)
            await self.reader.warm_up()
            if links:
                await self.peers.start_server()
            async with asyncio.TaskGroup() as tg:
                driver = tg.create_task(self.driver.run())
                helpers = [tg.create_task(c) for c in (self.gossip.run_out(), self.gossip.run_in(),
                                                       self.watch_loop(), self.private_upkeep())]
                if links:
                    self.peers.start_dialing()   # (stopped when the links close)
                try:
                    yield self
                finally:
                    if not driver.done():
                        await self.hand_over()
                        self.inbox.put(Stop)
                        await driver
                    for t in helpers:
                        t.cancel()
        finally:
            self.applier.end_streams()
            await self.peers.close()
            self.close()

    async def private_upkeep(self, period: float = 3.0) -> None:
        """Fetch what this node may hold and lacks (once its peers are reachable), and
        send again any purge receipt not on the chain yet."""
        fetched = False
        while True:
            await asyncio.sleep(period)
            if not fetched and any(self.peers.connected.values()):
                n = await self.private.fetch_missing()
                if n:
                    log.info("fetched %d items of private data from nodes of this org", n)
                fetched = n is not None
            if self.accepting:
                self.private.send_receipts()
            if self.lingering:   # (also when no block comes to prompt it)
                self._update_links()

    async def hand_over(self, timeout: float = 3.0) -> None:
        """Stop taking submissions; a leader hands leadership to its most caught-up
        follower first, so nothing acknowledged waits on a timeout."""
        self.accepting = False
        st = self.raw.status()
        if not st.is_leader or len(st.conf.voters) < 2:
            return
        deadline = time.monotonic() + timeout
        best = max((v for v in st.conf.voters if v != st.id), key=lambda v: st.progress.get(v, 0))
        self.inbox.put(TransferTo(best))   # done by the driver, which owns the Raft core
        while self.raw.status().is_leader and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        log.info("handed leadership to %s", self.by_raft_id.get(best))

    def close(self) -> None:
        if self.dd is None:
            return
        self.reader.close()
        self.checker.close()
        self.dd.close()
        self.dd = None
