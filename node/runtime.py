"""The node's driver: one task owns the Raft core. Peer messages, ticks and block
proposals reach it through one inbox; for every Ready it persists (fsync, in a worker
thread), then sends, then applies committed entries to the ledger, then advances —
the contract of consensus.rawnode. Around it: the mempool, gossip, and block building
on the leader (one block in flight at a time, so each header can carry the state root
of the block before it)."""
from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import deque
from dataclasses import dataclass

import msgpack

from crmledger.consensus import (
    Config, ConfChange, EntryType, Message, NotLeader, ProposalDropped, RawNode, Ready,
    Snapshot, StateType, bootstrap_snapshot,
)
from crmledger.consensus.messages import HardState, apply_conf_change
from crmledger.node.admission import Admission
from crmledger.node.config import NodeConfig
from crmledger.ledger.block import Block, BlockError, decode_block, make_block
from crmledger.ledger.genesis import load_genesis
from crmledger.ledger.keys import SigningKey
from crmledger.ledger.tx import Tx, TxError, decode_tx
from crmledger.node.mempool import Mempool, MempoolFull
from crmledger.node.metrics import Metrics
from crmledger.node.peers import PeerLinks
from crmledger.node.reader import Reader, Workers
from crmledger.node.wire import WireError, message_from_wire, message_to_wire
from crmledger.storage.datadir import open_data_dir

log = logging.getLogger("crmledger.node")


@dataclass(frozen=True, slots=True)
class Committed:
    tx_id: str
    height: int
    code: str


class NodeError(Exception):
    pass


class Node:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.genesis = load_genesis(cfg.genesis)
        me = self.genesis.nodes.get(cfg.node_id)
        if me is None:
            raise NodeError(f"node_id {cfg.node_id!r} is not a node of the genesis")
        self.me = me
        self.key = SigningKey.from_pem(cfg.node_key.read_bytes())
        if self.key.public_hex != me.pubkey:
            raise NodeError(f"{cfg.node_key} is not the key the genesis names for {cfg.node_id}")
        self.dd = open_data_dir(cfg.data_dir, self.genesis)
        if self.dd.raft.last_index() == 0:
            voters = sorted(n.raft_id for n in self.genesis.nodes.values())
            self.dd.raft.bootstrap(bootstrap_snapshot(voters), HardState(term=1))
        self.by_raft_id = {n.raft_id: n.node_id for n in self.genesis.nodes.values()}
        self.conf = self.dd.raft.initial_state()[1]
        self.raw = RawNode(Config(id=me.raft_id, election_tick=cfg.raft.election_ticks,
                                  heartbeat_tick=cfg.raft.heartbeat_ticks,
                                  applied=self.dd.ledger.applied_index, max_size_per_msg=4 << 20),
                           self.dd.raft, random.Random())
        self.mempool = Mempool(cfg.mempool.max_txs)
        self.admission = Admission(self.genesis, cfg.limits)
        self.reader = Reader(cfg.data_dir / "ledger.db", self.genesis, cfg.limits.read_workers,
                             cfg.limits.read_queue)
        self.checker = Workers("checker", 2, 8)   # decodes and checks large batches and gossip
        self.gossip_in: asyncio.Queue[list] = asyncio.Queue(256)   # frames of transactions from peers
        self.metrics = Metrics(cfg.node_id)
        self.last_raft_from: dict[str, float] = {}   # peer -> when its last Raft message came
        self.peers = PeerLinks(me, self.genesis, str(cfg.tls_cert), str(cfg.node_key), self._on_frame)
        self.raft_in: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.gossip_out: list[bytes] = []
        self.waiters: dict[str, list[asyncio.Future]] = {}
        self.block_listeners: set[asyncio.Queue] = set()
        self.accepting = True
        self.transfer_to: int | None = None
        self.block_requests: dict[int, asyncio.Future] = {}
        self.request_ids = itertools.count(1)
        self.snapshot_height = self._snapshot_info(self.dd.raft.snapshot())["height"]
        self.stopped = asyncio.Event()

    # -- status ------------------------------------------------------------------------------
    @property
    def role(self) -> str:
        st = self.raw.raft.state
        return {StateType.LEADER: "leader", StateType.FOLLOWER: "follower"}.get(st, "candidate")

    def leader_id(self) -> str | None:
        return self.by_raft_id.get(self.raw.raft.lead)

    def status(self) -> dict:
        r = self.raw.raft
        return {"node_id": self.me.node_id, "role": self.role, "term": r.term, "leader_id": self.leader_id(),
                "commit_index": r.log.committed, "height": self.dd.ledger.height,
                "head_hash": self.dd.ledger.head_hash,
                "peers": [{"node_id": nid, "connected": up} for nid, up in sorted(self.peers.connected.items())]}

    def render_metrics(self) -> bytes:
        """The gauges are read when scraped, not kept up to date on the hot path."""
        self.metrics.observe_raft(self.raw.raft, self.dd.ledger.height, len(self.mempool), self.peers.connected,
                                  self.peers.counters)
        return self.metrics.render()

    # -- transactions in ---------------------------------------------------------------------
    def committed_record(self, tx_id: str):
        return self.dd.ledger.tx_record(tx_id)

    def admit(self, tx: Tx, client: str | None = None, committed: bool | None = None) -> str:
        """A transaction whose signature was checked, sent by `client` (an address):
        'pending', 'known' or 'committed' (`committed` says which, when the caller has
        looked it up already). Raises admission.Refused or MempoolFull."""
        if tx.tx_id in self.mempool:
            return "known"
        if committed is None:
            committed = self.dd.ledger.committed_record(tx) is not None
        if committed:
            return "committed"
        now = time.monotonic()
        self.admission.check(self.dd.ledger.get, tx, self.mempool.by_signer[tx.signer], client, now)
        self.mempool.add(tx, now)
        self.metrics.tx_admitted.inc()
        self.gossip_out.append(tx.encode())
        self._block_may_be_due()
        return "pending"

    def _block_may_be_due(self) -> None:
        """Wake the driver only when a leader could cut a block because of this
        transaction: the first pending one starts the block timer, a full block is due now."""
        pending = self.mempool.pending()
        if pending == 1 or pending >= self.cfg.blocks.max_txs:
            self.wake.set()

    def wait_commit(self, tx_id: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(tx_id, []).append(fut)
        return fut

    def _on_frame(self, peer: str, kind: str, body) -> None:
        """A frame from an authenticated peer. Raises WireError for one that breaks the
        protocol; the link then drops it and the connection."""
        if kind == "raft":
            m = message_from_wire(body)
            if self.by_raft_id.get(m.frm) != peer:
                raise WireError(f"{peer} sent a Raft message as another node")
            now = time.monotonic()
            if m.frm == self.raw.raft.lead and peer in self.last_raft_from:
                self.metrics.leader_gap.observe(now - self.last_raft_from[peer])
            self.last_raft_from[peer] = now
            self.raft_in.append(m)
            self.wake.set()
        elif kind == "txs" and type(body) is list:
            try:
                self.gossip_in.put_nowait(body[:10_000])
            except asyncio.QueueFull:
                self.metrics.mempool_full_drops.inc(len(body))
        elif kind == "get_blocks" and type(body) is dict:
            self._serve_blocks(peer, body)
        elif kind == "blocks" and type(body) is dict:
            fut = self.block_requests.pop(body.get("id"), None)
            if fut is not None and not fut.done() and type(body.get("blocks")) is list:
                fut.set_result(body["blocks"])
        else:
            raise WireError(f"a {kind!r} frame with a body of the wrong shape")

    async def gossip_intake(self) -> None:
        """Take in what peers gossip, a frame at a time: decoding and signature checks run
        in a checker thread, so a peer's frame of thousands of transactions never holds
        the loop that drives Raft."""
        while not self.stopped.is_set():
            envs = await self.gossip_in.get()
            try:
                await self.take_gossip(envs)
            except Exception:   # a peer's frame must never take the node down
                log.exception("dropping a gossiped frame")
                self.metrics.peer_frames_rejected.inc()

    async def take_gossip(self, envs: list) -> None:
        loop = asyncio.get_running_loop()
        txs = await loop.run_in_executor(self.checker.pool, self._check_gossip, envs)
        now = time.monotonic()
        committed = self.dd.ledger.committed_among(txs)
        for tx in txs:
            if tx.tx_id in self.mempool or tx.tx_id in committed:
                continue
            if not self.admission.member(self.dd.ledger.get, tx):
                self.metrics.tx_rejected.labels(reason="unknown_signer_gossiped").inc()
                continue
            try:
                self.mempool.add(tx, now)
            except MempoolFull:
                self.metrics.mempool_full_drops.inc()
                continue
            self._block_may_be_due()

    def _check_gossip(self, envs: list) -> list[Tx]:
        """The well-formed, well-signed transactions of a gossiped frame that this node
        does not hold yet (run in a checker thread: it only reads the mempool)."""
        out = []
        for env in envs:
            if type(env) is not bytes:
                continue
            try:
                tx = decode_tx(env)
            except TxError:
                self.metrics.peer_frames_rejected.inc()
                continue
            if tx.tx_id in self.mempool:
                continue
            if not tx.signature_ok():
                self.metrics.peer_frames_rejected.inc()
                continue
            out.append(tx)
        return out

    # -- the driver ---------------------------------------------------------------------------
    async def drive(self) -> None:
        snap = self.dd.raft.snapshot()
        if self.dd.ledger.applied_index < snap.index:
            await self._catch_up(snap)   # a snapshot was installed, its blocks not all fetched
        loop = asyncio.get_running_loop()
        tick = self.cfg.raft.tick_ms / 1000
        next_tick = loop.time() + tick
        while not self.stopped.is_set():
            timeout = max(0.0, next_tick - loop.time())
            wait_block = self._block_due_in()
            if wait_block is not None:
                timeout = min(timeout, wait_block)
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            if self.transfer_to is not None:
                try:
                    self.raw.transfer_leadership(self.transfer_to)
                except (NotLeader, ProposalDropped):
                    pass
                self.transfer_to = None
            while self.raft_in:
                self.raw.step(self.raft_in.popleft())
            now = loop.time()
            behind = 0
            while now >= next_tick and behind < 5:
                self.raw.tick()
                next_tick += tick
                behind += 1
            if now >= next_tick:
                next_tick = now + tick
            self._maybe_propose_block()
            await self._handle_readies()
            self._maybe_snapshot()

    async def _handle_readies(self) -> None:
        while self.raw.has_ready():
            rd = self.raw.ready()
            if rd.soft_state is not None:
                self._on_role_change(rd)
            for m in rd.messages:
                if not m.needs_durability:
                    self._send(m)
            if rd.must_sync:
                t = time.perf_counter()
                await asyncio.to_thread(self.dd.raft.save, rd.hard_state, rd.entries, rd.snapshot)
                self.metrics.fsync_seconds.observe(time.perf_counter() - t)
            if rd.snapshot is not None:
                # the snapshot is durable: now fetch the blocks it stands for (a crash
                # before this ends is resumed by `drive` on the next start)
                await self._catch_up(rd.snapshot)
            for m in rd.messages:
                if m.needs_durability:
                    self._send(m)
            if rd.committed_entries:
                await self._apply(rd)
            self.raw.advance(rd)

    def _send(self, m: Message) -> None:
        peer = self.by_raft_id.get(m.to)
        if peer is not None:
            self.peers.send(peer, "raft", message_to_wire(m))

    def _on_role_change(self, rd: Ready) -> None:
        now = time.monotonic()
        if rd.soft_state.state == StateType.LEADER:
            log.info("became leader of term %d", self.raw.raft.term)
            # transactions already in blocks of our log that are not applied yet must not be
            # proposed again
            self.mempool.unmark_all(now)
            log_ = self.raw.raft.log
            lo = max(self.dd.ledger.applied_index + 1, log_.first_index())
            for e in log_.slice(lo, log_.last_index() + 1):
                if e.type == EntryType.NORMAL and e.data:
                    try:
                        self.mempool.mark_proposed(decode_block(e.data).tx_ids)
                    except BlockError:
                        pass
        else:
            self.mempool.unmark_all(now)

    # -- blocks -------------------------------------------------------------------------------
    def _block_due_in(self) -> float | None:
        if self.raw.raft.state != StateType.LEADER or not self.mempool.pending():
            return None
        if self.mempool.first_pending_at is None:
            return 0.0
        return max(0.0, self.mempool.first_pending_at + self.cfg.blocks.max_wait_ms / 1000 - time.monotonic())

    def _maybe_propose_block(self) -> None:
        r = self.raw.raft
        if r.state != StateType.LEADER or not self.mempool.pending():
            return
        if r.log.last_index() != self.dd.ledger.applied_index:
            return  # the previous block is not applied yet
        due = self._block_due_in()
        if self.mempool.pending() < self.cfg.blocks.max_txs and due:
            return
        txs = self.mempool.take(self.cfg.blocks.max_txs, self.cfg.blocks.max_bytes)
        led = self.dd.ledger
        block = make_block(self.key, height=led.height + 1, prev_hash=led.head_hash, state_root=led.state_root,
                           timestamp=int(time.time() * 1000), proposer=self.me.node_id, term=r.term,
                           index=r.log.last_index() + 1, txs=[t.encode() for t in txs],
                           tx_ids=[t.tx_id for t in txs])
        try:
            self.raw.propose(block.encode())
        except (NotLeader, ProposalDropped):
            self.mempool.unmark_all(time.monotonic())

    async def _apply(self, rd: Ready) -> None:
        led = self.dd.ledger
        for e in rd.committed_entries:
            if e.index <= led.applied_index:
                continue
            if e.type == EntryType.CONF_CHANGE:
                try:
                    self.conf = apply_conf_change(self.conf, ConfChange.decode(e.data))
                except ValueError:
                    pass
                led.mark_applied(e.index, self.conf)
                continue
            if not e.data:
                led.mark_applied(e.index)
                continue
            await self._apply_block(e.index, e.data)

    def _prepare_block(self, data: bytes) -> tuple[Block, list[Tx]]:
        """A block decoded, with its transactions: those this node checked before from the
        mempool, the others decoded and verified now (run in a checker thread: it only
        reads the mempool). Raises BlockError or TxError."""
        block = decode_block(data)
        txs = []
        for tx_id, env in zip(block.tx_ids, block.txs):
            tx = self.mempool.get(tx_id)
            if tx is None:
                tx = decode_tx(env)
                if not tx.signature_ok():
                    raise BlockError(f"transaction {tx_id} has a bad signature")
            txs.append(tx)
        return block, txs

    async def _apply_block(self, index: int, data: bytes, from_log: bool = True) -> None:
        led = self.dd.ledger
        try:
            block, txs = await asyncio.get_running_loop().run_in_executor(self.checker.pool, self._prepare_block,
                                                                           data)
        except (BlockError, TxError) as e:
            log.error("rejecting the block at index %d: %s", index, e)
            if from_log:
                led.mark_applied(index)
            return
        t0 = time.monotonic()
        out = led.apply_block(block, txs, index, from_log=from_log)
        if isinstance(out, str):
            log.error("rejecting the block at index %d: %s", index, out)
            return
        self.mempool.remove(block.tx_ids, time.monotonic())
        h = block.header.height
        for tx_id, r in zip(block.tx_ids, out.results):
            self.metrics.tx_committed.labels(code=r.code).inc()
            for fut in self.waiters.pop(tx_id, ()):
                if not fut.done():
                    fut.set_result(Committed(tx_id, h, r.code))
        self.metrics.apply_seconds.observe(time.monotonic() - t0)
        event = {"height": h, "hash": block.hash, "txs": len(block.txs), "timestamp": block.header.timestamp}
        for q in list(self.block_listeners):
            if q.qsize() < 1000:
                q.put_nowait(event)

    # -- snapshots and catching up -------------------------------------------------------------
    @staticmethod
    def _snapshot_info(snap: Snapshot) -> dict:
        if not snap.data:
            return {"height": 0, "head": "", "index": snap.index}
        info = msgpack.unpackb(snap.data, raw=False)
        if type(info) is not dict or type(info.get("height")) is not int or type(info.get("head")) is not str:
            raise NodeError("a snapshot that is not this program's")
        return info

    def _maybe_snapshot(self) -> None:
        """Every `snapshot_every_blocks` blocks: record where the ledger is as the Raft
        snapshot and drop the log before it, keeping `keep_entries` for slow followers."""
        led = self.dd.ledger
        if led.height - self.snapshot_height < self.cfg.raft.snapshot_every_blocks:
            return
        if self.raw.raft.log.applied != led.applied_index:
            return
        led.sync()  # what the snapshot describes is on disk before the log entries go
        data = msgpack.packb({"height": led.height, "head": led.head_hash, "index": led.applied_index})
        self.raw.compact(data, keep=self.cfg.raft.keep_entries)
        self.snapshot_height = led.height
        log.info("snapshot at height %d (index %d)", led.height, led.applied_index)

    def _serve_blocks(self, peer: str, body: dict) -> None:
        lo, hi, rid = body.get("from"), body.get("to"), body.get("id")
        if not all(type(v) is int for v in (lo, hi, rid)) or lo < 1 or hi < lo:
            raise WireError("a block request out of range")
        out, size = [], 0
        for h in range(lo, min(hi, self.dd.ledger.height, lo + 199) + 1):
            b = self.dd.ledger.block_bytes(h)
            if b is None:
                break
            out.append(b)
            size += len(b)
            if size > 16 << 20:
                break
        self.peers.send(peer, "blocks", {"id": rid, "blocks": out})

    async def _catch_up(self, snap: Snapshot) -> None:
        target = self._snapshot_info(snap)
        led = self.dd.ledger
        sources = itertools.cycle([self.leader_id()] + sorted(p for p in self.peers.peers if p != self.leader_id()))
        delay = 0.05
        if led.height < target["height"]:
            log.info("catching up from height %d to %d by block transfer", led.height, target["height"])
        while led.height < target["height"]:
            peer = next(sources)
            if peer is None or peer not in self.peers.peers:
                continue
            rid = next(self.request_ids)
            fut = asyncio.get_running_loop().create_future()
            self.block_requests[rid] = fut
            self.peers.send(peer, "get_blocks", {"id": rid, "from": led.height + 1, "to": target["height"]})
            try:
                blocks = await asyncio.wait_for(fut, 5)
            except asyncio.TimeoutError:
                self.block_requests.pop(rid, None)
                blocks = []
            before = led.height
            for data in blocks:
                if type(data) is not bytes:
                    break
                try:
                    index = decode_block(data).header.index
                except BlockError:
                    break
                await self._apply_block(index, data, from_log=False)
                if led.height == before:  # it did not extend our chain: ask elsewhere
                    break
                before = led.height
            if not blocks:
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)
        if led.head_hash != target["head"] and target["height"]:
            raise NodeError(f"after catching up to height {target['height']} the head differs from the snapshot's")
        self.conf = snap.meta.conf_state
        if led.applied_index < snap.index:
            led.mark_applied(snap.index, self.conf)
        self.snapshot_height = target["height"]

    # -- gossip -------------------------------------------------------------------------------
    async def gossip(self) -> None:
        period = self.cfg.mempool.gossip_ms / 1000
        while not self.stopped.is_set():
            await asyncio.sleep(period)
            if self.gossip_out:
                batch, self.gossip_out = self.gossip_out, []
                for i in range(0, len(batch), 2000):
                    self.peers.broadcast("txs", batch[i:i + 2000])

    async def watch_loop(self, period: float = 0.05) -> None:
        """Measure how late the loop runs a task that is due: the time any handler, read
        or apply held it."""
        loop = asyncio.get_running_loop()
        while not self.stopped.is_set():
            due = loop.time() + period
            await asyncio.sleep(period)
            self.metrics.loop_lag.observe(max(0.0, loop.time() - due))

    # -- shutdown -----------------------------------------------------------------------------
    async def hand_over(self, timeout: float = 3.0) -> None:
        """Stop taking submissions; a leader hands leadership to its most caught-up
        follower first, so nothing acknowledged waits on a timeout."""
        self.accepting = False
        r = self.raw.raft
        if r.state != StateType.LEADER or len(r.conf.voters) < 2:
            return
        deadline = time.monotonic() + timeout
        others = [v for v in r.conf.voters if v != r.id]
        best = max(others, key=lambda v: r.prs[v].match if v in r.prs else 0)
        self.transfer_to = best   # done by the driver, which owns the Raft core
        self.wake.set()
        while self.raw.raft.state == StateType.LEADER and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        log.info("handed leadership to %s", self.by_raft_id.get(best))

    def close(self) -> None:
        self.reader.close()
        self.checker.close()
        self.dd.close()
