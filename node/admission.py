"""Who may write, and how much (checked when a transaction reaches this node, before it
enters the mempool; the ledger rules still judge it at block time).

- Only members write: the signer is an admin of a member org, a node of the consortium
  in force, an identity of a member org registered on the chain, or the registered key of the customer
  its transaction is about (sent with org ""). Anyone else is refused at the door
  (HTTP 403), and a peer's gossip of such a transaction is dropped: a stranger's
  transaction is never gossiped, never in a block, never filed under a customer.
- Members share the node fairly: each signer and each client address has a token bucket
  (a sustained rate and a burst), and a signer may hold at most so many transactions in
  the mempool. Past either, 429 with the seconds to wait."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable

from crmledger.node.config import LimitsConfig
from crmledger.ledger.consortium import Consortium
from crmledger.ledger.statekeys import k_customer, k_identity
from crmledger.ledger.tx import Tx


class Refused(Exception):
    def __init__(self, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


def is_member(consortium: Consortium, get: Callable[[bytes], Any], tx: Tx) -> bool:
    """May this transaction's signer write at all, by the consortium in force and the
    state `get` reads?"""
    signer = tx.signer
    if consortium.is_admin(signer) or signer in consortium.node_keys():
        return True
    rec = get(k_identity(signer))
    if rec is not None:
        return rec["org"] in consortium.orgs
    cid = tx.payload.get("customer_id")
    if tx.org == "" and type(cid) is str:
        cust = get(k_customer(cid))
        return cust is not None and cust["key"] == signer
    return False


class TokenBuckets:
    """A bucket per key, refilled at `rate` a second up to `burst`; the least recently
    used keys are forgotten past `max_keys` (a forgotten key starts full again)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, when)

    def take(self, key: str, now: float, n: float = 1.0) -> float:
        """Take `n` tokens: 0.0 when taken, else the seconds until they would be there."""
        tokens, when = self.buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        wait = 0.0
        if tokens >= n:
            tokens -= n
        else:
            wait = (n - tokens) / self.rate
        self.buckets[key] = (tokens, now)
        if len(self.buckets) > self.max_keys:
            self.buckets.popitem(last=False)
        return wait


class Admission:
    def __init__(self, consortium: Callable[[], Consortium], limits: LimitsConfig) -> None:
        self.consortium = consortium   # the one in force now
        self.limits = limits
        self.signers = TokenBuckets(limits.signer_tx_per_s, limits.signer_burst)
        self.clients = TokenBuckets(limits.client_tx_per_s, limits.client_burst)

    def member(self, get: Callable[[bytes], Any], tx: Tx) -> bool:
        return is_member(self.consortium(), get, tx)

    def check(self, get: Callable[[bytes], Any], tx: Tx, pending_of_signer: int, client: str | None,
              now: float) -> None:
        """Raises Refused unless `tx`, sent by `client`, may enter the mempool now."""
        if not self.member(get, tx):
            raise Refused(403, "unknown_signer", "the signer is neither a key of a consortium member nor the "
                                                 "registered key of the customer the transaction is about")
        if pending_of_signer >= self.limits.signer_max_pending:
            raise Refused(429, "rate_limited", f"this signer has {pending_of_signer} transactions waiting "
                                               "for a block already", 1)
        wait = self.signers.take(tx.signer, now)
        if wait:
            raise Refused(429, "rate_limited", "this signer is sending faster than its budget", math.ceil(wait))
        if client is not None and (wait := self.clients.take(client, now)):
            raise Refused(429, "rate_limited", "this client is sending faster than its budget", math.ceil(wait))
