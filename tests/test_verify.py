"""SPEC §6: `crmledger verify` passes on an honest chain and names the first bad block
when any stored byte of a block, a signature, a transaction, a result or the state is
altered."""
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from crmledger.node.ops.verify import verify
from crmledger.storage.datadir import open_data_dir
from tests.ledger_kit import GENESIS, Chain, key, registrations, tx

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    path = tmp_path_factory.mktemp("chain") / "node"
    d = open_data_dir(path, GENESIS)
    d.ledger.index.merge_at = 40
    ch = Chain(d.ledger)
    a1, ck = key("org1-admin"), key("cust")
    ch.commit([tx(a1, "customer.register", "org1", customer_id="c", customer_key=ck.public_hex,
                  profile_hash="ab" * 32), tx(a1, "loyalty.program", "org1", program="p", partners=[])])
    for b in range(12):
        ch.commit(registrations(f"c{b}-{i}" for i in range(10))
                  + [tx(a1, "loyalty.issue", "org1", customer_id="c", program="p", amount=5),
                     tx(ck, "loyalty.redeem", "", customer_id="c", program="p", amount=7, at_org="org1")])
    d.close()
    return path


def _copy(honest, tmp_path):
    dst = tmp_path / "node"
    shutil.copytree(honest, dst)
    return dst


def _sql(path, q, *args):
    c = sqlite3.connect(path / "ledger.db")
    c.execute(q, args)
    c.commit()
    c.close()


def test_honest_chain_verifies(honest):
    rep = verify(honest, workers=2)
    assert rep.ok and rep.blocks == 13 and rep.txs == 2 + 12 * 12


def test_cli_exit_codes(honest, tmp_path):
    cmd = [sys.executable, "-m", "crmledger.node.ops.cli", "verify", "--data-dir"]
    ok = subprocess.run(cmd + [str(honest)], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 13 blocks")
    bad = _copy(honest, tmp_path)
    codes = _column(bad, 2, "codes")
    pos = next(i for i, c in enumerate(codes) if c != 0)
    _sql(bad, "UPDATE blocks SET codes=? WHERE height=2", codes[:pos] + b"\x00" + codes[pos + 1:])
    out = subprocess.run(cmd + [str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and "block 2" in out.stdout and "result" in out.stdout
    missing = subprocess.run(cmd + [str(tmp_path / "nowhere")], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and "ledger.db" in missing.stderr


def _flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1:]


def _header(path, h):
    c = sqlite3.connect(path / "ledger.db")
    row = c.execute("SELECT header FROM blocks WHERE height=?", (h,)).fetchone()[0]
    c.close()
    return msgpack.unpackb(row, raw=False)


TAMPERS = {
    "header byte": (lambda p: _sql(p, "UPDATE blocks SET header=? WHERE height=5",
                                   msgpack.packb({**_header(p, 5), "timestamp": _header(p, 5)["timestamp"] + 1})),
                    5, "hash"),
    "header and hash rewritten": (lambda p: _rewrite_header(p, 5), 5, "signature"),
    "proposer signature": (lambda p: _sql(p, "UPDATE blocks SET sig=? WHERE height=7", b"\x00" * 64),
                           7, "signature"),
    "transaction byte": (lambda p: _sql(p, "UPDATE blocks SET body=? WHERE height=6",
                                        _flip(_column(p, 6, "body"), _env_start(p, 6, 3) + 60)), 6, "transaction 3"),
    "stored result": (lambda p: _sql(p, "UPDATE blocks SET codes=? WHERE height=9",
                                     _column(p, 9, "codes")[:11] + b"\x00" + _column(p, 9, "codes")[12:]),
                      9, "result"),
    "stored tx_id": (lambda p: _sql(p, "UPDATE blocks SET ids=? WHERE height=3", _flip(_column(p, 3, "ids"), 40)),
                     3, "tx_id"),
    "index column": (lambda p: _sql(p, "UPDATE blocks SET sns=? WHERE height=4", _flip(_column(p, 4, "sns"), 20)),
                     4, "nonce keys"),
    "missing block": (lambda p: _sql(p, "DELETE FROM blocks WHERE height=8"), 8, "missing"),
    "state row": (lambda p: _sql(p, "UPDATE state SET v=? WHERE k=?", msgpack.packb({"balance": 10 ** 6, "org": "org1"}),
                                 b"lo/c\x00p"), None, "state"),
}


def _column(p, height, column):
    c = sqlite3.connect(p / "ledger.db")
    v = c.execute(f"SELECT {column} FROM blocks WHERE height=?", (height,)).fetchone()[0]
    c.close()
    return v


def _env_start(p, height, pos):
    """Where transaction `pos` of a block starts in its stored body (the end of the one before)."""
    return int.from_bytes(_column(p, height, "ends")[4 * (pos - 1):4 * pos], "big") if pos else 0


def _rewrite_header(p, h):
    """A forger who changes a header and recomputes its hash, but cannot sign it."""
    import hashlib
    from crmledger.ledger.block import BLOCK_PREFIX
    from crmledger.ledger.canonical import canonical_bytes
    m = _header(p, h)
    m["timestamp"] += 1
    hb = canonical_bytes(m)
    _sql(p, "UPDATE blocks SET header=?, hash=? WHERE height=?", hb, hashlib.sha256(BLOCK_PREFIX + hb).digest(), h)


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tampering_is_caught_at_the_right_block(name, honest, tmp_path):
    mutate, height, words = TAMPERS[name]
    bad = _copy(honest, tmp_path)
    mutate(bad)
    rep = verify(bad, workers=1)
    assert not rep.ok
    assert rep.bad_height == height, rep
    assert words in rep.reason, rep.reason
