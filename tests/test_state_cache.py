"""The bounded cache of recent state keys and their state-root entries: it stays within
its bound, keeps what was used last, and a ledger applied through a tiny cache ends in
the same state, with the same state root, as one through a large cache and as the root
recomputed from the whole state."""
from crmledger.ledger import stateroot
from crmledger.storage.index.cache import RecentCache
from crmledger.storage.ledger_store import LedgerStore
from crmledger.storage.sqlite import connect
from tests.ledger_kit import GENESIS, Chain, key, tx


def test_recent_cache_is_bounded_and_keeps_recent_entries():
    c = RecentCache(10)
    for i in range(100):
        c.put_all([(i, ("v", i))])
        assert len(c) <= 10
        assert all(c.get(j) == ("v", j) for j in range(max(0, i - 4), i + 1))   # the last half bound
    assert c.get(0) is None                 # the oldest are gone
    c.put_all([("a", 1)])
    c.put_all([(i, ("w", i)) for i in range(200, 204)])    # a new generation: "a" is old now
    assert "a" in c.old and c.get("a") == 1 and "a" in c.young   # a hit moves up
    c.put_all([(i, ("w", i)) for i in range(300, 320)])
    assert len(c) <= 10 + 20                # a put of many at once may pass the bound by its size


def test_a_tiny_cache_gives_the_same_ledger_as_a_large_one(tmp_path):
    a1, cust = key("org1-admin"), key("cache-cust")
    stores = [LedgerStore(connect(tmp_path / f"{n}.db"), GENESIS, cache_keys=n) for n in (2, 10_000)]
    chains = [Chain(s) for s in stores]
    blocks = [[tx(a1, "customer.register", "org1", customer_id="c", customer_key=cust.public_hex,
                  profile_hash="ab" * 32), tx(a1, "loyalty.program", "org1", program="p", partners=[])]]
    for b in range(12):   # the same keys changed again and again, some deleted and written anew
        blocks.append([tx(a1, "loyalty.issue", "org1", customer_id="c", program="p", amount=10),
                       tx(cust, "loyalty.redeem", "", customer_id="c", program="p", amount=3, at_org="org1"),
                       tx(a1, "customer.update", "org1", customer_id="c", profile_hash=f"{b:02x}" * 32),
                       tx(cust, "consent.grant" if b % 2 == 0 else "consent.revoke", "", customer_id="c",
                          grantee_org="org2", **({"scope": ["email"], "purpose": "dpv:CustomerCare", "expires_ts": None}
                                                 if b % 2 == 0 else {}))])
    for txs in blocks:
        codes = [ch.commit(txs) for ch in chains]
        assert codes[0] == codes[1] and set(codes[0]) == {"valid"}
    small, large = stores
    assert small.state_root == large.state_root and small.head_hash == large.head_hash
    assert list(small.iter_state()) == list(large.iter_state())
    acc = sum(stateroot.entry_hash(k, v) for k, v in small.iter_state()) & stateroot.MASK
    assert stateroot.root_hex(acc) == small.state_root
