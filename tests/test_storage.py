"""storage/: the durable Raft log against the in-memory reference, reopening, the private
store's erasure, and crashes (kill -9) of a process that is appending blocks."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crmledger.consensus import (
    CompactedError, ConfState, Entry, HardState, MemoryStorage, SnapshotOutOfDate, UnavailableError,
    bootstrap_snapshot,
)
from crmledger.ledger.tx import private_hash
from crmledger.storage.datadir import open_data_dir
from crmledger.storage.private_store import Item, PrivateStore
from crmledger.storage.raft_store import SqliteRaftStorage, write_conf_state
from crmledger.storage.sqlite import transaction
from tests.ledger_kit import GENESIS

ROOT = Path(__file__).resolve().parent.parent


def _pair(tmp_path):
    mem = MemoryStorage.bootstrapped([1, 2, 3])
    sql = SqliteRaftStorage.open(tmp_path / "raft.db")
    sql.bootstrap(bootstrap_snapshot([1, 2, 3]), HardState(term=1))
    return mem, sql


def _same(a, b):
    assert (a.first_index(), a.last_index()) == (b.first_index(), b.last_index())
    lo, hi = a.first_index(), a.last_index() + 1
    assert a.entries(lo, hi) == b.entries(lo, hi)
    assert [a.term(i) for i in range(lo - 1, hi)] == [b.term(i) for i in range(lo - 1, hi)]
    assert a.initial_state() == b.initial_state()
    assert a.snapshot() == b.snapshot()


@pytest.mark.parametrize("tail_bytes", [16 << 20, 120])
def test_raft_store_behaves_like_memory_storage(tmp_path, monkeypatch, tail_bytes):
    from crmledger.storage import raft_store
    monkeypatch.setattr(raft_store, "TAIL_BYTES", tail_bytes)  # also with a tail of a few entries
    mem, sql = _pair(tmp_path)
    rng = random.Random(5)
    term = 1
    for step in range(300):
        op = rng.random()
        if op < 0.6:
            last = mem.last_index()
            start = rng.randint(max(mem.first_index(), last - 3), last + 1)
            term += rng.random() < 0.2
            ents = [Entry(term, i, os.urandom(rng.randint(0, 40))) for i in range(start, start + rng.randint(1, 6))]
            mem.append(ents)
            sql.append(ents)
        elif op < 0.75:
            hs = HardState(term, rng.randint(0, 3), rng.randint(0, mem.last_index()))
            mem.set_hard_state(hs)
            sql.set_hard_state(hs)
        elif op < 0.85 and mem.last_index() > mem.snapshot().index:
            i = rng.randint(mem.snapshot().index + 1, mem.last_index())
            cs = ConfState(frozenset({1, 2, 3}))
            mem.create_snapshot(i, cs, b"s%d" % i)
            sql.create_snapshot(i, cs, b"s%d" % i)
            keep = rng.randint(0, 3)
            if i - keep > mem.first_index():
                mem.compact(i - keep)
                sql.compact(i - keep)
        _same(mem, sql)
        if step % 50 == 0:  # reopen from disk: nothing lost
            sql.conn.close()
            sql = SqliteRaftStorage.open(tmp_path / "raft.db")
            _same(mem, sql)
    with pytest.raises(CompactedError):
        sql.entries(sql.first_index() - 1, sql.last_index())
    with pytest.raises(UnavailableError):
        sql.term(sql.last_index() + 1)
    with pytest.raises(SnapshotOutOfDate):
        sql.apply_snapshot(sql.snapshot())


def test_conf_state_written_with_the_applied_index(tmp_path):
    sql = SqliteRaftStorage.open(tmp_path / "raft.db")
    sql.bootstrap(bootstrap_snapshot([1, 2, 3]), HardState(term=1))
    cs = ConfState(frozenset({1, 2, 3}), frozenset({4}), frozenset({4}))
    with transaction(sql.conn) as c:
        write_conf_state(c, cs, 5)
    sql.conn.close()
    sql = SqliteRaftStorage.open(tmp_path / "raft.db")
    assert sql.initial_state()[1] == cs
    # a later snapshot carries a later configuration
    sql.append([Entry(1, i) for i in range(2, 9)])
    sql.create_snapshot(8, ConfState(frozenset({1, 2})), b"")
    assert sql.initial_state()[1] == ConfState(frozenset({1, 2}))


def test_private_store_erasure_leaves_no_bytes_behind(tmp_path):
    ps = PrivateStore(tmp_path / "private.db")
    profile = {"name": "Zoë Quintessential-Marker", "email": "zoe.marker@example.org"}
    salt = os.urandom(16)
    h = private_hash(salt, profile)
    item = Item("profile", h, "c1", "c1", salt, profile)
    assert ps.put(item)
    ps.put(Item("ticket", "aa" * 32, "c1", "t1", os.urandom(16), "Quintessential complaint"))
    ps.put(Item("profile", "ef" * 32, "c2", "c2", os.urandom(16), {"name": "Someone Else"}))
    assert ps.get(h) == item
    assert ps.purge([], erase="c1", cause="cd" * 32) == {"profile", "ticket"}
    assert ps.get(h) is None and ps.is_erased("c1")
    assert sorted(ps.receipts_due()) == [("cd" * 32, "profile", "c1"), ("cd" * 32, "ticket", "c1")]
    assert not ps.put(item)         # an erased customer's data is not taken again
    assert ps.get("ef" * 32) is not None
    ps.close()
    for f in tmp_path.iterdir():
        data = f.read_bytes()
        assert b"Quintessential" not in data and salt not in data, f
        assert b"zoe.marker" not in data, f


def test_ledger_reopens_where_it_stopped(tmp_path):
    from tests.ledger_kit import Chain, registrations
    d = open_data_dir(tmp_path / "n", GENESIS)
    ch = Chain(d.ledger)
    for b in range(5):
        ch.commit(registrations(f"c{b}-{i}" for i in range(20)))
    state = (d.ledger.height, d.ledger.head_hash, d.ledger.state_root, d.ledger.applied_index)
    d.close()
    d2 = open_data_dir(tmp_path / "n")
    assert (d2.ledger.height, d2.ledger.head_hash, d2.ledger.state_root, d2.ledger.applied_index) == state
    assert d2.ledger.tx_record(d2.ledger.block_txs(3)[5][0]).height == 3
    d2.close()
    other = dict(GENESIS.raw)
    other["chain_id"] = "another"
    from crmledger.ledger.genesis import genesis_from_dict
    with pytest.raises(ValueError, match="genesis"):
        open_data_dir(tmp_path / "n", genesis_from_dict(other))
    import sqlite3
    c = sqlite3.connect(tmp_path / "n" / "ledger.db")
    c.execute("DELETE FROM ledger_meta WHERE k='format'")   # as a store of the older format has it
    c.commit()
    c.close()
    with pytest.raises(ValueError, match="older crmledger"):
        open_data_dir(tmp_path / "n")


# -- kill -9 at random moments while a process appends --------------------------------------
WRITER = r"""
import sys
from functools import partial
from crmledger.consensus import Entry, HardState, bootstrap_snapshot
import crmledger.storage.ledger_store, crmledger.storage.index.state_filter
from crmledger.storage.datadir import open_data_dir
from tests.ledger_kit import GENESIS, Chain, key, tx
# small enough that index merges and state-filter checkpoints happen between the kills
crmledger.storage.index.state_filter.CHECKPOINT = 4
crmledger.storage.ledger_store.TxIndex = partial(crmledger.storage.ledger_store.TxIndex, merge_at=400)
d = open_data_dir(sys.argv[1], GENESIS)
if d.raft.last_index() == 0:
    d.raft.bootstrap(bootstrap_snapshot([1, 2, 3]), HardState(term=2))
ch = Chain(d.ledger)
ch.index = d.ledger.applied_index
a1 = key("org1-admin")
print("ready", flush=True)
b = d.ledger.height
while True:
    txs = [tx(a1, "customer.register", "org1", nonce=f"{b}-{i}", customer_id=f"c{b}-{i}", customer_key=None,
              profile_hash="ab" * 32) for i in range(50)]
    # a customer of the previous block again: found, whatever was lost to a kill
    txs.append(tx(a1, "customer.register", "org1", nonce=f"{b}-again", customer_id=f"c{max(b - 1, 0)}-7",
                  customer_key=None, profile_hash="ab" * 32))
    blk = ch.block(txs)
    d.raft.save(HardState(2, 1, blk.header.index), [Entry(2, blk.header.index, blk.encode())])
    out = d.ledger.apply_block(blk, txs, blk.header.index)
    assert [r.code for r in out.results] == ["valid"] * 50 + ["customer_exists"], b
    b += 1
"""


def test_kill_9_leaves_whole_blocks_and_verify_passes(tmp_path):
    from crmledger.node.ops.verify import verify
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    heights = []
    for round_ in range(6):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "n")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 0.6))  # let it run to a random point, then kill it
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        assert p.returncode == -signal.SIGKILL, p.stderr.read()   # it was writing when killed
        d = open_data_dir(tmp_path / "n")
        led = d.ledger
        # all of a block or none of it: the block rows, their transactions, the state and
        # the applied index agree with each other
        n_blocks = led.conn.execute("SELECT COUNT(*), COALESCE(MAX(height), 0) FROM blocks").fetchone()
        assert n_blocks == (led.height, led.height)
        assert led.conn.execute("SELECT COALESCE(SUM(length(codes)), 0) FROM blocks").fetchone()[0] == 51 * led.height
        assert led.conn.execute("SELECT COUNT(*) FROM state").fetchone()[0] == 50 * led.height
        assert d.raft.last_index() >= led.applied_index
        heights.append(led.height)
        d.close()
        rep = verify(tmp_path / "n", workers=1)
        assert rep.ok, rep.reason
    assert heights == sorted(heights) and heights[-1] > heights[0]
