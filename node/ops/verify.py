"""`crmledger verify --data-dir DIR` (SPEC §6): an offline audit of a node's chain.

Every block's stored hash against its header, the link to the previous block (block 1
links to the genesis), the Merkle root over its transactions, the proposer's signature,
every transaction's shape and signature, and the state: all blocks are replayed into a
scratch store, so every header's state root and every stored result code is checked, and
at the end the node's stored state must equal the replayed one key by key. Transaction
signatures are checked in worker processes while the main process replays.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgpack

from crmledger.ledger.block import BLOCK_PREFIX, Block, BlockError, BlockHeader
from crmledger.ledger.canonical import canonical_bytes
from crmledger.ledger.genesis import GenesisError
from crmledger.ledger.tx import TxError, decode_tx, stored_tx
from crmledger.storage.datadir import genesis_of
from crmledger.storage.ledger_store import BlockRejected, LedgerStore
from crmledger.storage.sqlite import connect


@dataclass(frozen=True)
class Report:
    ok: bool
    blocks: int
    txs: int
    seconds: float
    bad_height: int | None = None
    reason: str = ""


def _check_transactions(items: list[tuple[str, bytes]]) -> list[str | None]:
    """In a worker: for each stored (tx_id, transaction), None or why it is bad — its
    shape (SPEC §2, §3), its canonical form, its signature, and its stored tx_id."""
    out: list[str | None] = []
    for stored_id, env in items:
        try:
            tx = decode_tx(env)
        except TxError as e:
            out.append(f"malformed: {e.detail}")
            continue
        if tx.encode() != env:
            out.append("not stored in canonical form")
        elif not tx.signature_ok():
            out.append("signature does not verify")
        elif tx.tx_id != stored_id:
            out.append("stored tx_id does not match its body")
        else:
            out.append(None)
    return out


class _Fail(Exception):
    def __init__(self, height: int | None, reason: str) -> None:
        super().__init__(reason)
        self.height = height
        self.reason = reason


def verify(data_dir: str | Path, workers: int | None = None, progress=None) -> Report:
    t0 = time.monotonic()
    p = Path(data_dir)
    if not (p / "ledger.db").exists():
        raise FileNotFoundError(f"{p} holds no ledger.db")
    genesis = genesis_of(p)
    conn = connect(p / "ledger.db", readonly=True, cache_mb=8)   # read in order: a small cache serves
    stored = LedgerStore(conn, genesis, readonly=True, lookups=False)
    workers = workers if workers is not None else max(1, (os.cpu_count() or 2))
    blocks = txs = 0
    with tempfile.TemporaryDirectory(prefix="crmledger-verify-") as tmp, \
            ProcessPoolExecutor(max_workers=workers) as pool:
        replay = LedgerStore(connect(Path(tmp) / "replay.db", scratch=True), genesis, keep_bodies=False)
        rows = stored.iter_blocks()
        try:
            pending: deque = deque()
            exhausted = False
            total = stored.height
            last_report = time.monotonic()
            while True:
                while not exhausted and len(pending) < 4 * workers:
                    row = next(rows, None)
                    if row is None:
                        exhausted = True
                        break
                    height, hash_, header_bytes, sig = row
                    body = stored.block_txs(height)
                    items = [(t.tx_id, t.envelope) for t in body]
                    pending.append((height, hash_, header_bytes, sig, body, stored.index_columns(height),
                                    pool.submit(_check_transactions, items)))
                if not pending:
                    break
                height, hash_, header_bytes, sig, body, index_cols, fut = pending.popleft()
                _check_one(replay, height, hash_, header_bytes, sig, body, index_cols, fut.result())
                blocks += 1
                txs += len(body)
                if progress and (time.monotonic() - last_report > 2 or height == total):
                    last_report = time.monotonic()
                    rate = txs / max(1e-9, time.monotonic() - t0)
                    progress(f"verified {height}/{total} blocks, {txs:,} transactions ({rate:,.0f} tx/s)")
            _check_final(stored, replay)
        except _Fail as f:
            return Report(False, blocks, txs, time.monotonic() - t0, f.height, f.reason)
        finally:
            rows.close()
            replay.conn.close()
            conn.close()
    return Report(True, blocks, txs, time.monotonic() - t0)


def _check_one(replay: LedgerStore, height: int, hash_: bytes, header_bytes: bytes, sig: bytes,
               body: list[tuple[str, str, bytes]], stored_index: tuple[bytes, bytes] | None,
               sig_errors: list[str | None]) -> None:
    if height != replay.height + 1:
        raise _Fail(replay.height + 1, f"block {replay.height + 1} is missing")
    try:
        header_map = msgpack.unpackb(header_bytes, raw=False)
        header = BlockHeader.from_map(header_map)
    except (BlockError, ValueError, TypeError, msgpack.ExtraData) as e:
        raise _Fail(height, f"header cannot be read: {e}") from None
    if canonical_bytes(header_map) != header_bytes:
        raise _Fail(height, "header is not stored in canonical form")
    if hashlib.sha256(BLOCK_PREFIX + header_bytes).digest() != hash_:
        raise _Fail(height, "stored block hash does not match its header")
    parsed = []
    for pos, ((stored_id, _, env), err) in enumerate(zip(body, sig_errors)):   # StoredTx
        if err:
            raise _Fail(height, f"transaction {pos} ({stored_id[:16]}…): {err}")
        parsed.append(stored_tx(env, checked_id=stored_id))  # a worker has checked it in full
    block = Block(header, sig, tuple(e for _, _, e in body), tuple(t.tx_id for t in parsed))
    try:
        out = replay.apply_block(block, parsed, header.index)
    except BlockRejected as e:
        raise _Fail(height, str(e)) from None
    for pos, ((_, code, _), r) in enumerate(zip(body, out.results)):
        if code != r.code:
            raise _Fail(height, f"transaction {pos}: stored result {code!r}, replay gives {r.code!r}")
    if stored_index != replay.index_columns(height):
        raise _Fail(height, "the stored nonce keys or customers of its transactions differ from the replay")


def _check_final(stored: LedgerStore, replay: LedgerStore) -> None:
    if stored.height != replay.height:
        raise _Fail(replay.height + 1, f"the node records height {stored.height}, blocks end at {replay.height}")
    if stored.head_hash != replay.head_hash:
        raise _Fail(stored.height, "the node's recorded head hash is not the last block's hash")
    a, b = stored.iter_state(), replay.iter_state()
    while True:
        x, y = next(a, None), next(b, None)
        if x is None and y is None:
            break
        if x != y:
            key = (x or y)[0]
            raise _Fail(None, f"the node's world state differs from the replay at key {key!r}")
    if stored.acc != replay.acc:
        raise _Fail(None, "the node's state accumulator differs from the replay")


def main(data_dir: str, workers: int | None) -> int:
    try:
        rep = verify(data_dir, workers, progress=lambda s: print(s, file=sys.stderr, flush=True))
    except (FileNotFoundError, GenesisError, ValueError, OSError) as e:
        print(f"verify: {e}", file=sys.stderr)
        return 2
    if rep.ok:
        print(f"ok: {rep.blocks} blocks, {rep.txs} transactions verified in {rep.seconds:.1f} s")
        return 0
    where = f"block {rep.bad_height}" if rep.bad_height is not None else "state"
    print(f"FAILED at {where}: {rep.reason} ({rep.blocks} blocks verified before it)")
    return 1
