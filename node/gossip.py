"""Gossip of admitted transactions between the nodes, so every mempool holds them and a
new leader loses nothing. Out: what this node admits is sent to every peer in batches,
every `gossip_ms`. In: a peer's frame is decoded and its signatures checked a frame at a
time, in a checker thread unless it is small, so thousands of transactions never hold
the loop that drives Raft; a stranger's transaction (see node.admission) is dropped."""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Callable

from crmledger.ledger.tx import Tx, TxError, decode_tx
from crmledger.node.admission import Admission
from crmledger.node.mempool import Mempool, MempoolFull
from crmledger.node.metrics import Metrics
from crmledger.node.peers import PeerLinks
from crmledger.storage.ledger_store import LedgerStore

log = logging.getLogger("crmledger.node")
FRAME_TXS = 2000        # transactions per gossiped frame
MAX_FRAME_TXS = 10_000  # read of a peer's frame
QUEUED_FRAMES = 256     # frames from peers waiting to be checked; past this they are dropped
INLINE_TXS = 16         # a frame of up to this many is checked on the loop (a few ms at most)


class Gossip:
    def __init__(self, period_ms: int, peers: PeerLinks, mempool: Mempool, ledger: LedgerStore,
                 admission: Admission, checker: Executor, metrics: Metrics, added: Callable[[], None]) -> None:
        self.period = period_ms / 1000
        self.peers = peers
        self.mempool = mempool
        self.ledger = ledger
        self.admission = admission
        self.checker = checker
        self.metrics = metrics
        self.added = added   # called after a transaction from a peer entered the mempool
        self.out: list[bytes] = []
        self.out_since = 0.0          # the sum of the times the transactions in `out` came
        self.has_out = asyncio.Event()
        self.incoming: asyncio.Queue[tuple[float, list]] = asyncio.Queue(QUEUED_FRAMES)
        self.queued_txs = 0           # in frames from peers not checked yet

    # -- out -----------------------------------------------------------------------------
    def send_later(self, tx: Tx) -> None:
        self.out.append(tx.encode())
        self.out_since += time.monotonic()
        self.has_out.set()

    def resend_to(self, peer: str) -> None:
        """The link to `peer` is up again: what it may have missed while it was down (every
        transaction in the mempool) goes to it, so that a leader it becomes lacks none."""
        held = [tx.encode() for tx in self.mempool.txs.values()]
        for i in range(0, len(held), FRAME_TXS):
            self.peers.send(peer, "txs", held[i:i + FRAME_TXS])

    async def run_out(self) -> None:
        last = 0.0
        while True:
            await self.has_out.wait()
            wait = last + self.period - time.monotonic()
            # what the rest of this pass of the loop admits goes in the same frame
            await asyncio.sleep(max(0.0, wait))
            self.has_out.clear()
            batch, since, self.out, self.out_since = self.out, self.out_since, [], 0.0
            last = time.monotonic()
            if batch:
                self.metrics.stage("gossip_out", last - since / len(batch), len(batch))
                for i in range(0, len(batch), FRAME_TXS):
                    self.peers.broadcast("txs", batch[i:i + FRAME_TXS])

    # -- in ------------------------------------------------------------------------------
    def received(self, envs: list) -> None:
        """A peer's frame of transactions (from the peer links' reader)."""
        envs = envs[:MAX_FRAME_TXS]
        try:
            self.incoming.put_nowait((time.monotonic(), envs))
            self.queued_txs += len(envs)
        except asyncio.QueueFull:
            self.metrics.mempool_full_drops.inc(len(envs))

    async def run_in(self) -> None:
        while True:
            came, envs = await self.incoming.get()
            try:
                await self.take(envs, came)
            except Exception:   # a peer's frame must never take the node down
                log.exception("dropping a gossiped frame")
                self.metrics.peer_frames_rejected.inc()
            finally:
                self.queued_txs -= len(envs)

    async def take(self, envs: list, came: float | None = None) -> None:
        if len(envs) <= INLINE_TXS:   # a few: cheaper here than a trip to a thread
            txs = self._check(envs)
        else:
            txs = await asyncio.get_running_loop().run_in_executor(self.checker, self._check, envs)
        now = time.monotonic()
        committed = self.ledger.committed_among(txs)
        added = 0
        for tx in txs:
            if tx.tx_id in self.mempool or tx.tx_id in committed:
                continue
            if not self.admission.member(self.ledger.get, tx):
                self.metrics.tx_rejected.labels(reason="unknown_signer_gossiped").inc()
                continue
            try:
                self.mempool.add(tx, now)
            except MempoolFull:
                self.metrics.mempool_full_drops.inc()
                continue
            added += 1
            self.added()
        if added and came is not None:
            self.metrics.stage("gossip_in", now - came, added)

    def _check(self, envs: list) -> list[Tx]:
        """The well-formed, well-signed transactions of a frame that this node does not
        hold yet (run in a checker thread: it only reads the mempool)."""
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
