"""The transaction index (an LSM tree of sorted runs with a Bloom filter over nonce
keys): every lookup agrees with a plain dictionary through merges into deeper levels,
growth of the filter and a reopen that rebuilds the in-memory part."""
import hashlib
import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from crmledger.storage.index.bloom import Bloom
from crmledger.storage.sqlite import connect
from crmledger.storage.index.tx_index import TxIndex


@given(st.lists(st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1), max_size=300, unique=True))
@settings(max_examples=50, deadline=None)
def test_bloom_has_no_false_negatives_and_round_trips(keys):
    b = Bloom.sized(len(keys))
    b.add_all(keys)
    assert all(b.might_contain(k) for k in keys)
    again = Bloom.from_bytes(b.to_bytes())
    assert again.count == len(keys) and all(again.might_contain(k) for k in keys)


def test_bloom_single_key_check_agrees_with_the_array_check():
    rng = random.Random(7)
    b = Bloom.sized(0)
    b.add_all(rng.getrandbits(64) - 2 ** 63 for _ in range(b.capacity))
    keys = [rng.getrandbits(64) - 2 ** 63 for _ in range(5_000)]
    assert [b.might_contain(k) for k in keys] == b.contains(np.array(keys, np.int64)).tolist()


def test_bloom_false_positive_rate_at_capacity():
    rng = random.Random(5)
    b = Bloom.sized(0)
    b.add_all(rng.getrandbits(64) - 2 ** 63 for _ in range(b.capacity))
    absent = [rng.getrandbits(64) - 2 ** 63 for _ in range(20_000)]
    assert sum(map(b.might_contain, absent)) / len(absent) < 0.03


class _Blocks:
    """What the ledger stores per transaction, by seq, for the index to confirm hits."""
    def __init__(self):
        self.rows: dict[int, dict] = {}

    def fetch(self, field, seqs):
        return [(s, self.rows[s][field]) for s in seqs if s in self.rows]


def _block(rng, height, n):
    base = height << 20
    ids = [hashlib.sha256(rng.randbytes(8)).digest() for _ in range(n)]
    sns = [hashlib.sha256(rng.randbytes(8)).digest()[:16] for _ in range(n)]
    subjects = [rng.choice([None, f"c{rng.randrange(30)}"]) for _ in range(n)]
    return base, ids, sns, subjects


@pytest.mark.parametrize("max_bits,part", [(1 << 27, 2048), (256, 2048), (1 << 27, 3)],
                         ids=["growing-filter", "capped-filter", "tiny-parts"])
def test_lookups_agree_with_a_dictionary_across_merges_and_reopen(tmp_path, monkeypatch, max_bits, part):
    # a small filter has to grow, and is rebuilt; a capped one stops growing and lets more
    # absent keys through to the runs, which must still answer exactly; with tiny parts,
    # the keys of a busy customer span many parts of a run
    monkeypatch.setattr("crmledger.storage.index.bloom.MIN_BITS", 64)
    monkeypatch.setattr("crmledger.storage.index.bloom.MAX_BITS", max_bits)
    monkeypatch.setattr("crmledger.storage.index.tx_index.PART", part)
    rng = random.Random(11)
    conn = connect(tmp_path / "i.db")
    conn.execute("CREATE TABLE ledger_meta (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
    blocks, stored = _Blocks(), []
    idx = TxIndex(conn, blocks.fetch, merge_at=60, ratio=2)
    seen_sn: set[bytes] = set()
    by_id: dict[bytes, int] = {}
    by_subject: dict[str, list[int]] = {}
    for height in range(1, 121):
        base, ids, sns, subjects = _block(rng, height, rng.randrange(1, 12))
        # nonces seen before (some of them) and new ones: exactly the seen ones are found
        probe = rng.sample(sorted(seen_sn), min(3, len(seen_sn))) + sns
        assert idx.seen_nonces(probe) == set(probe) & seen_sn
        for i, (t, s, c) in enumerate(zip(ids, sns, subjects)):
            blocks.rows[base + i] = {"tx_id": t, "sn": s, "subject": c}
            by_id.setdefault(t, base + i)
            by_subject.setdefault(c, []).append(base + i)
        idx.note_block(base, b"".join(ids), b"".join(sns), subjects)
        stored.append((base, ids, sns, subjects))
        seen_sn.update(sns)
        if height % 30 == 0:   # reopen: levels and filter from the file, the rest from the blocks
            idx = TxIndex(conn, blocks.fetch, merge_at=60, ratio=2)
            for b, i, s, c in stored:
                if b > idx.merged:
                    idx.remember(b, b"".join(i), b"".join(s), c)
    assert len(idx.levels) >= 3 and idx.bloom.capacity >= idx.bloom.count > 100
    assert len(idx.bloom.bits) * 8 <= max_bits
    for t, seq in rng.sample(sorted(by_id.items()), 50):
        assert idx.seq_of(t) == seq
    assert idx.seq_of(hashlib.sha256(b"never").digest()) is None
    for c in ("c1", "c7", "c29"):
        want = by_subject.get(c, [])
        assert idx.subject_seqs(c, -1, 10_000) == want
        assert idx.subject_seqs(c, want[2], 3) == want[3:6]
    assert idx.seen_nonces([hashlib.sha256(b"x").digest()[:16]]) == set()
    conn.close()


def test_a_nonce_only_index_finds_duplicates_and_refuses_other_lookups(tmp_path):
    """What an audit's replay keeps: the duplicate check, nothing it does not use."""
    rng = random.Random(3)
    conn = connect(tmp_path / "i.db")
    conn.execute("CREATE TABLE ledger_meta (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
    blocks = _Blocks()
    idx = TxIndex(conn, blocks.fetch, merge_at=20, names=("nonce",))
    seen = []
    for height in range(1, 30):
        base, ids, sns, subjects = _block(rng, height, 5)
        for i, (t, s, c) in enumerate(zip(ids, sns, subjects)):
            blocks.rows[base + i] = {"tx_id": t, "sn": s, "subject": c}
        idx.note_block(base, b"".join(ids), b"".join(sns), subjects)
        seen += sns
    assert idx.levels and idx.seen_nonces(seen[:7] + [b"\x01" * 16]) == set(seen[:7])
    with pytest.raises(LookupError):
        idx.seq_of(hashlib.sha256(b"x").digest())
    assert conn.execute("SELECT count(*) FROM idx_parts WHERE (id >> 32) & 3 != 1").fetchone() == (0,)


def test_an_index_in_an_older_layout_is_rebuilt_from_the_blocks(tmp_path, monkeypatch, caplog):
    from functools import partial
    from crmledger.storage.datadir import open_data_dir
    from tests.ledger_kit import GENESIS, Chain, registrations
    # merges as it rebuilds
    monkeypatch.setattr("crmledger.storage.ledger_store.TxIndex", partial(TxIndex, merge_at=100))
    d = open_data_dir(tmp_path / "n", GENESIS)
    ch = Chain(d.ledger)
    for b in range(6):
        ch.commit(registrations(f"c{b}-{i}" for i in range(20)))
    ids = [t for h in (1, 4, 6) for t, _, _ in d.ledger.block_txs(h)]
    d.close()
    c = connect(tmp_path / "n" / "ledger.db")
    c.execute("DROP TABLE idx_parts")   # as the layout of one table per level had it
    c.execute("CREATE TABLE idx_nonce_1 (k INTEGER NOT NULL, seq INTEGER NOT NULL)")
    c.execute("DELETE FROM ledger_meta WHERE k LIKE 'idx_%'")
    c.executemany("INSERT INTO ledger_meta VALUES (?, ?)", [("idx_merged", b"99"), ("idx_levels", b"\x91\x01")])
    c.close()
    monkeypatch.setattr("crmledger.storage.ledger_store._SAY_AFTER", 2)
    with caplog.at_level("INFO", logger="crmledger.storage"):
        d = open_data_dir(tmp_path / "n")
    assert "reading the transaction index back from blocks 1 to 6" in caplog.text   # progress on long work
    assert d.ledger.index.runs and d.ledger.index.merged > 99
    assert [d.ledger.tx_record(t).height for t in ids] == [1] * 20 + [4] * 20 + [6] * 20
    assert [h for h, *_ in d.ledger.history("c3-7")] == [4]
    assert d.ledger.conn.execute("SELECT name FROM sqlite_master WHERE name='idx_nonce_1'").fetchall() == []
    d.close()
