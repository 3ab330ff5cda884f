"""Transactions admitted by this node and not yet committed: bounded, deduplicated by
tx_id, in arrival order. Every transaction in it has had its signature checked once, on
this node; blocks reuse that check. The leader marks what it has put into a block so it
does not propose it twice; committing a block removes its transactions everywhere."""
from __future__ import annotations

from collections import Counter, OrderedDict

from crmledger.ledger.tx import Tx


class MempoolFull(Exception):
    pass


class Mempool:
    def __init__(self, max_txs: int) -> None:
        self.max_txs = max_txs
        self.txs: OrderedDict[str, Tx] = OrderedDict()
        self.proposed: set[str] = set()
        self.by_signer: Counter[str] = Counter()   # transactions held per signer
        self.first_pending_at: float | None = None  # when the oldest unproposed one arrived
        self.arrived: dict[str, float] = {}         # tx_id: when it entered

    def __len__(self) -> int:
        return len(self.txs)

    def __contains__(self, tx_id: str) -> bool:
        return tx_id in self.txs

    def get(self, tx_id: str) -> Tx | None:
        return self.txs.get(tx_id)

    def add(self, tx: Tx, now: float) -> bool:
        """False when already here; MempoolFull when there is no room."""
        if tx.tx_id in self.txs:
            return False
        if len(self.txs) >= self.max_txs:
            raise MempoolFull()
        self.txs[tx.tx_id] = tx
        self.arrived[tx.tx_id] = now
        self.by_signer[tx.signer] += 1
        if self.first_pending_at is None:
            self.first_pending_at = now
        return True

    def pending(self) -> int:
        return len(self.txs) - len(self.proposed)

    def take(self, max_txs: int, max_bytes: int) -> list[Tx]:
        """Up to max_txs unproposed transactions within max_bytes, marked proposed."""
        out, size = [], 0
        for tx_id, tx in self.txs.items():
            if tx_id in self.proposed:
                continue
            n = len(tx.signing_bytes) + 80
            if out and (len(out) >= max_txs or size + n > max_bytes):
                break
            out.append(tx)
            size += n
        self.proposed.update(t.tx_id for t in out)
        self.first_pending_at = None
        return out

    def mean_age(self, txs: list[Tx], now: float) -> float:
        """How long, on average, these transactions have been here."""
        return now - sum(self.arrived[t.tx_id] for t in txs) / len(txs) if txs else 0.0

    def mark_proposed(self, tx_ids) -> None:
        self.proposed.update(t for t in tx_ids if t in self.txs)

    def unmark_all(self, now: float) -> None:
        """Leadership moved: whatever this node proposed is for the new leader to order."""
        self.proposed.clear()
        self.first_pending_at = now if self.txs else None

    def remove(self, tx_ids, now: float) -> None:
        held = self.by_signer
        for t in tx_ids:
            tx = self.txs.pop(t, None)
            if tx is not None:
                del self.arrived[t]
                self.proposed.discard(t)
                held[tx.signer] -= 1
                if not held[tx.signer]:
                    del held[tx.signer]
        if self.pending() == 0:
            self.first_pending_at = None
        elif self.first_pending_at is None:
            self.first_pending_at = now
