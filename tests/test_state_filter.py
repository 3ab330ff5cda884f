"""The filter of state keys that may exist: it never misses a key that exists, through
checkpoints, rebuilds when it fills up and reopens between checkpoints, so a ledger
applied through it (with a 2-key cache, so that nearly every read goes through it) ends
in the same state, with the same results and state root, as one read without it."""
import random
from functools import partial

import pytest

from crmledger.ledger import stateroot
from crmledger.storage.ledger_store import LedgerStore
from crmledger.storage.sqlite import connect
from crmledger.storage.index.state_filter import StateFilter, key_hashes
from tests.ledger_kit import GENESIS, Chain, key, registrations, tx


def _blocks(rng, n_blocks):
    a1 = key("org1-admin")
    known: list[str] = []
    for b in range(n_blocks):
        new = [f"c{b}-{i}" for i in range(rng.randrange(2, 7))]
        txs = registrations(new)
        if b == 0:
            txs.append(tx(a1, "loyalty.program", "org1", program="p", partners=[]))
        known += new
        for cid in rng.sample(known, min(4, len(known))):
            kind = rng.randrange(4)
            if kind == 0:   # exists already: only a filter that misses it would let this through
                txs.append(tx(a1, "customer.register", "org1", customer_id=cid, customer_key=None,
                              profile_hash="cd" * 32))
            elif kind == 1:
                txs.append(tx(a1, "loyalty.issue", "org1", customer_id=cid, program="p", amount=5))
            elif kind == 2:
                txs.append(tx(a1, "ticket.open", "org1", ticket_id=f"t-{cid}", customer_id=cid, channel="email",
                              subject_hash="ef" * 32))
            else:
                txs.append(tx(a1, "customer.update", "org1", customer_id=cid, profile_hash=f"{b % 256:02x}" * 32))
        yield txs


def test_reads_through_the_filter_give_the_same_ledger(tmp_path, monkeypatch):
    monkeypatch.setattr("crmledger.storage.index.bloom.MIN_BITS", 64)
    monkeypatch.setattr("crmledger.storage.index.state_filter.CHECKPOINT", 3)
    monkeypatch.setattr("crmledger.storage.ledger_store.StateFilter", partial(StateFilter, initial=4))   # rebuilt often
    rng = random.Random(7)
    path = tmp_path / "f.db"
    filtered = LedgerStore(connect(path), GENESIS, cache_keys=2)
    plain = LedgerStore(connect(tmp_path / "p.db"), GENESIS, cache_keys=2)
    plain.filter = None
    chains = [Chain(filtered), Chain(plain)]
    scans = []
    scan = StateFilter._scan
    monkeypatch.setattr(StateFilter, "_scan", lambda self, c: scans.append(1) or scan(self, c))
    seen_codes = set()
    for txs in _blocks(rng, 60):
        codes = [c.commit(txs) for c in chains]
        assert codes[0] == codes[1]
        seen_codes.update(codes[0])
        if rng.random() < 0.3:   # reopen: the filter from its last checkpoint plus the keys created since
            filtered.conn.close()
            filtered = LedgerStore(connect(path), GENESIS, cache_keys=2)
            chains[0].store = filtered
    assert len(scans) >= 3, "the filter never filled up and was rebuilt"   # the first at open
    assert "customer_exists" in seen_codes
    assert list(filtered.iter_state()) == list(plain.iter_state())
    assert filtered.state_root == plain.state_root and filtered.head_hash == plain.head_hash
    acc = sum(stateroot.entry_hash(k, v) for k, v in filtered.iter_state()) & stateroot.MASK
    assert stateroot.root_hex(acc) == filtered.state_root
    keys = [k for k, _ in filtered.iter_state()]
    assert filtered.filter.may_exist(keys) == keys


def test_keys_never_written_are_mostly_known_absent(tmp_path):
    store = LedgerStore(connect(tmp_path / "f.db"), GENESIS)
    Chain(store).commit(registrations(f"c{i}" for i in range(300)))
    absent = [b"cu/" + f"x{i}".encode() for i in range(5000)]
    assert len(store.filter.may_exist(absent)) < 0.01 * len(absent)
    assert len(set(key_hashes(absent).tolist())) == len(absent)


@pytest.mark.parametrize("reopen", [False, True])
def test_a_store_without_a_stored_filter_builds_one_from_its_state(tmp_path, reopen):
    """As a store written before the filter existed."""
    path = tmp_path / "f.db"
    store = LedgerStore(connect(path), GENESIS)
    chain = Chain(store)
    chain.commit(registrations(f"c{i}" for i in range(20)))
    store.conn.execute("DELETE FROM ledger_meta WHERE k LIKE 'state_filter%'")
    store.conn.execute("DROP TABLE state_created")
    store.conn.close()
    store = LedgerStore(connect(path), GENESIS, cache_keys=2)
    chain.store = store
    assert chain.commit(registrations(["c3"])) == ["customer_exists"]
    if reopen:   # the first block wrote the filter it built
        store.conn.close()
        store = LedgerStore(connect(path), GENESIS, cache_keys=2)
        chain.store = store
    assert chain.commit(registrations(["c7"])) == ["customer_exists"]


def test_a_key_read_as_absent_that_exists_fails_the_block_instead_of_overwriting(tmp_path):
    import sqlite3
    from crmledger.storage.index.cache import RecentCache
    store = LedgerStore(connect(tmp_path / "f.db"), GENESIS, cache_keys=2)
    chain = Chain(store)
    chain.commit(registrations(["c1"]))
    before = list(store.iter_state())
    store.cache = RecentCache(2)
    store.filter.may_exist = lambda keys: []   # a filter that misses a key that exists
    with pytest.raises(sqlite3.IntegrityError):
        chain.commit(registrations(["c1"]))
    assert store.height == 1 and list(store.iter_state()) == before
