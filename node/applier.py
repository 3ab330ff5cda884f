"""The applier: committed Raft entries into the ledger, in order. A block's transactions
are decoded and checked (those this node checked before come from the mempool) in a
checker thread unless the block is small; the rules and the write run here. Then it tells whoever waits: clients waiting
for a transaction's commit, event streams, metrics."""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Callable

from crmledger.consensus import ConfChange, ConfState, Entry, EntryType, RawNode
from crmledger.ledger.block import Block, BlockError, decode_block, decode_block_txs
from crmledger.ledger.rules import BlockOutcome
from crmledger.ledger.tx import Tx, TxError, decode_tx
from crmledger.node.mempool import Mempool
from crmledger.node.metrics import Metrics
from crmledger.storage.ledger_store import BlockRejected, LedgerStore, TxRecord

log = logging.getLogger("crmledger.node")
MAX_QUEUED_EVENTS = 1000   # per event stream; a stream that falls further behind misses events
INLINE_BYTES = 16 << 10    # a block up to this size (some 50 transactions) is prepared on the loop


def _conf_change(e: Entry) -> ConfChange | None:
    try:
        return ConfChange.decode(e.data)
    except ValueError:
        return None


class Applier:
    def __init__(self, raw: RawNode, ledger: LedgerStore, conf: ConfState, mempool: Mempool, checker: Executor,
                 metrics: Metrics) -> None:
        self.raw = raw
        self.ledger = ledger
        self.conf = conf
        self.mempool = mempool
        self.checker = checker
        self.metrics = metrics
        self.waiters: dict[str, list[asyncio.Future]] = {}
        self.applied_at = 0.0   # when the last block was applied: its waiting clients' reply starts then
        self.listeners: set[asyncio.Queue] = set()   # event streams: (event name, data) items
        # called with (block, txs, outcome) after each block is applied
        self.after_block: Callable[[Block, list[Tx], BlockOutcome], None] | None = None

    def wait_commit(self, tx_id: str) -> asyncio.Future:
        """A future set to the transaction's TxRecord once it commits."""
        fut = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(tx_id, []).append(fut)
        return fut

    def end_streams(self) -> None:
        for q in list(self.listeners):
            q.put_nowait(None)

    async def apply(self, entries: tuple[Entry, ...]) -> None:
        led = self.ledger
        for e in entries:
            if e.type == EntryType.CONF_CHANGE:   # the core needs each, even one applied before
                self.conf = self.raw.apply_conf_change(_conf_change(e))
            if e.index <= led.applied_index:
                continue
            if e.type == EntryType.CONF_CHANGE:
                led.mark_applied(e.index, self.conf)
            elif not e.data:
                led.mark_applied(e.index)
            else:
                await self.apply_block(e.index, e.data)

    def _prepare(self, data: bytes) -> tuple[Block, list[Tx]]:
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

    @staticmethod
    def _prepare_fetched(data: bytes) -> tuple[Block, list[Tx]]:
        """`_prepare` of a block fetched to catch up (none of its transactions is in the
        mempool): each decoded once, every signature checked."""
        block, txs = decode_block_txs(data)
        for tx in txs:
            if not tx.signature_ok():
                raise BlockError(f"transaction {tx.tx_id} has a bad signature")
        return block, txs

    async def apply_block(self, index: int, data: bytes, from_log: bool = True) -> bool:
        """Apply the block carried at Raft index `index`; False when it cannot extend the
        chain (a block from the log is then skipped by every node alike; one fetched from
        a peer leaves nothing behind)."""
        try:
            if len(data) <= INLINE_BYTES:   # a small block: cheaper here than a trip to a thread
                block, txs = self._prepare(data)
            else:
                block, txs = await asyncio.get_running_loop().run_in_executor(self.checker, self._prepare, data)
        except (BlockError, TxError) as e:
            log.error("rejecting the block at index %d: %s", index, e)
            if from_log:
                self.ledger.mark_applied(index)
            return False
        return self.apply_prepared(index, block, txs, from_log)

    def prepare_fetched(self, data: bytes) -> asyncio.Future:
        """`_prepare_fetched` in a checker thread (several blocks' may run at once)."""
        return asyncio.get_running_loop().run_in_executor(self.checker, self._prepare_fetched, data)

    def apply_prepared(self, index: int, block: Block, txs: list[Tx], from_log: bool = True) -> bool:
        """The rest of `apply_block`, for a block decoded and checked by `_prepare`."""
        led = self.ledger
        t0 = time.monotonic()
        try:
            out = led.apply_block(block, txs, index, from_log=from_log)
        except BlockRejected as e:
            log.error("rejecting the block at index %d: %s", index, e)
            return False
        self.mempool.remove(block.tx_ids, time.monotonic())
        self.applied_at = time.monotonic()
        h = block.header.height
        for pos, (tx_id, r) in enumerate(zip(block.tx_ids, out.results)):
            self.metrics.tx_committed.labels(code=r.code).inc()
            for fut in self.waiters.pop(tx_id, ()):
                if not fut.done():
                    fut.set_result(TxRecord(tx_id, h, pos, r.code))
        dt = time.monotonic() - t0
        self.metrics.apply_seconds.observe(dt)
        self.metrics.stage("apply", dt, len(txs))
        if self.after_block is not None:
            self.after_block(block, txs, out)
        hd = block.header   # the same shape as a block replayed to a stream (and GET /v1/blocks/{height})
        self.publish("block", {"height": h, "hash": block.hash, "prev_hash": hd.prev_hash, "tx_root": hd.tx_root,
                               "state_root": hd.state_root, "timestamp": hd.timestamp, "proposer": hd.proposer,
                               "term": hd.term, "index": hd.index, "sig": block.sig.hex(), "txs": list(block.tx_ids)})
        for ev in out.events:
            if ev["type"] == "ticket":
                self.publish("ticket", ev)
        return True

    def publish(self, name: str, data: dict) -> None:
        """An event to every stream (`data` carries the height it belongs to)."""
        for q in list(self.listeners):
            if q.qsize() < MAX_QUEUED_EVENTS:
                q.put_nowait((name, data))
