"""Parts of the commit path on their own: the proposer does not ask the driver to wake
while a block is in flight, and a link that comes up gets the mempool again."""
import time
from types import SimpleNamespace

from crmledger.ledger.keys import SigningKey
from crmledger.ledger.tx import admit, decode_tx, sign_tx
from crmledger.node.config import BlockConfig
from crmledger.node.gossip import Gossip
from crmledger.node.mempool import Mempool
from crmledger.node.metrics import Metrics
from crmledger.node.proposer import BlockProposer

KEY = SigningKey.from_seed(b"k" * 32)


def _tx(i: int):
    return admit(sign_tx(KEY, "customer.register", "org1", f"n{i}", 1, {
        "customer_id": f"c{i}", "customer_key": None, "profile_hash": "ab" * 32}))


def test_no_block_is_due_while_one_is_in_flight():
    pool = Mempool(100)
    pool.add(_tx(1), time.monotonic() - 1)   # waited longer than max_wait_ms
    raw = SimpleNamespace(last_index=5)
    ledger = SimpleNamespace(applied_index=4)
    p = BlockProposer(raw, pool, ledger, KEY, None, BlockConfig(max_wait_ms=2), Metrics("n"))
    p.leading = True
    assert p.block_due_in() is None     # the block at index 5 is not applied: its commit wakes the driver
    ledger.applied_index = 5
    assert p.block_due_in() == 0.0      # now it is due at once


def test_a_link_that_comes_up_gets_the_mempool_again():
    sent = []
    peers = SimpleNamespace(send=lambda peer, kind, body: sent.append((peer, kind, body)))
    pool = Mempool(10_000)
    txs = [_tx(i) for i in range(2500)]
    for t in txs:
        pool.add(t, 0.0)
    g = Gossip(2, peers, pool, None, None, None, Metrics("n"), lambda: None)
    g.resend_to("node2")
    assert [(p, k, len(b)) for p, k, b in sent] == [("node2", "txs", 2000), ("node2", "txs", 500)]
    assert [decode_tx(e).tx_id for _, _, b in sent for e in b] == [t.tx_id for t in txs]
