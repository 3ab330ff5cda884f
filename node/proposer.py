"""The block proposer: on the leader, when to cut a block from the mempool and what it
holds. One block is in flight at a time, so that each header can carry the state root
of the block before it."""
from __future__ import annotations

import time

from crmledger.consensus import EntryType, NotLeader, ProposalDropped, RawNode, StateType
from crmledger.ledger.block import BlockError, decode_block, make_block
from crmledger.ledger.genesis import NodeInfo
from crmledger.ledger.keys import SigningKey
from crmledger.node.config import BlockConfig
from crmledger.node.mempool import Mempool
from crmledger.node.metrics import Metrics
from crmledger.storage.ledger_store import LedgerStore


class BlockProposer:
    def __init__(self, raw: RawNode, mempool: Mempool, ledger: LedgerStore, key: SigningKey, me: NodeInfo,
                 cfg: BlockConfig, metrics: Metrics) -> None:
        self.raw = raw
        self.mempool = mempool
        self.ledger = ledger
        self.key = key
        self.me = me
        self.cfg = cfg
        self.metrics = metrics
        self.leading = False
        self.in_flight: dict[int, tuple[float, int]] = {}   # Raft index: (proposed at, transactions)
        self._deadline: tuple[int, int | None] = (-1, None)   # (height read at, next ticket deadline)

    def may_be_due(self) -> bool:
        """Whether a transaction just admitted could make a block due (the first pending
        one starts the block timer; a full block is due now): the driver need only be
        woken then."""
        pending = self.mempool.pending()
        return pending == 1 or pending >= self.cfg.max_txs

    def block_due_in(self) -> float | None:
        """Seconds until the next block is due; None when there is nothing to propose, or
        a block is in flight (its commit wakes the driver)."""
        if not self.leading or not self.mempool.pending() or self._in_flight():
            return None
        if self.mempool.first_pending_at is None:
            return 0.0
        return max(0.0, self.mempool.first_pending_at + self.cfg.max_wait_ms / 1000 - time.monotonic())

    def _next_deadline(self) -> int | None:
        """The state changes only with a block: read once per height."""
        if self._deadline[0] != self.ledger.height:
            self._deadline = (self.ledger.height, self.ledger.next_deadline())
        return self._deadline[1]

    def _in_flight(self) -> bool:
        return self.raw.last_index != self.ledger.applied_index

    def committed(self, index: int) -> None:
        """The entry at `index` committed: the time its block took to replicate."""
        sent = self.in_flight.pop(index, None)
        if sent is not None and sent[1]:
            self.metrics.stage("replicate", time.monotonic() - sent[0], sent[1])

    def on_role_change(self, state: StateType) -> None:
        now = time.monotonic()
        self.leading = state == StateType.LEADER
        self.in_flight.clear()
        self.mempool.unmark_all(now)
        if self.leading:
            # transactions already in blocks of our log that are not applied yet must not
            # be proposed again
            for e in self.raw.unapplied_entries():
                if e.type == EntryType.NORMAL and e.data:
                    try:
                        self.mempool.mark_proposed(decode_block(e.data).tx_ids)
                    except BlockError:
                        pass

    def maybe_propose(self) -> None:
        """Cut a block when one is due; also an empty one when a ticket's service level has
        passed, so that the escalation is on the chain without waiting for traffic."""
        if not self.leading:
            return
        pending = self.mempool.pending()
        if not pending:
            due = self._next_deadline()
            if due is None or due >= time.time() * 1000:
                return
        st = self.raw.status()
        if st.last_index != self.ledger.applied_index:
            return  # the previous block is not applied yet
        if pending and pending < self.cfg.max_txs and self.block_due_in():
            return
        txs = self.mempool.take(self.cfg.max_txs, self.cfg.max_bytes)
        now = time.monotonic()
        self.metrics.stage("block_wait", self.mempool.mean_age(txs, now), len(txs))
        led = self.ledger
        block = make_block(self.key, height=led.height + 1, prev_hash=led.head_hash, state_root=led.state_root,
                           timestamp=int(time.time() * 1000), proposer=self.me.node_id, term=st.term,
                           index=st.last_index + 1, txs=[t.encode() for t in txs], tx_ids=[t.tx_id for t in txs])
        try:
            self.raw.propose(block.encode())
            self.in_flight[st.last_index + 1] = (now, len(txs))
        except (NotLeader, ProposalDropped):
            self.mempool.unmark_all(time.monotonic())
