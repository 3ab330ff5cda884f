"""Block sync: serving blocks to peers that ask, and fetching the blocks a received Raft
snapshot stands for. A snapshot here records only where the ledger was (height, head,
Raft index): the blocks themselves come from the peers, checked link by link as they
are applied."""
from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Callable

import msgpack

from crmledger.consensus import Snapshot
from crmledger.ledger.block import BlockError
from crmledger.ledger.tx import TxError
from crmledger.node.applier import Applier
from crmledger.node.peers import PeerLinks
from crmledger.node.wire import WireError
from crmledger.storage.ledger_store import LedgerStore

log = logging.getLogger("crmledger.node")
MAX_BLOCKS_PER_ANSWER = 200
MAX_BYTES_PER_ANSWER = 16 << 20


class SyncError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What a Raft snapshot of this program records."""
    height: int
    head: str
    index: int

    def encode(self) -> bytes:
        return msgpack.packb({"height": self.height, "head": self.head, "index": self.index})


def snapshot_info(snap: Snapshot) -> SnapshotInfo:
    if not snap.data:
        return SnapshotInfo(0, "", snap.index)
    info = msgpack.unpackb(snap.data, raw=False)
    if type(info) is not dict or type(info.get("height")) is not int or type(info.get("head")) is not str:
        raise SyncError("a snapshot that is not this program's")
    return SnapshotInfo(info["height"], info["head"], info.get("index", snap.index))


class BlockSync:
    def __init__(self, ledger: LedgerStore, peers: PeerLinks, applier: Applier,
                 leader: Callable[[], str | None]) -> None:
        self.ledger = ledger
        self.peers = peers
        self.applier = applier
        self.leader = leader
        self.requests: dict[int, asyncio.Future] = {}
        self.request_ids = itertools.count(1)

    def serve(self, peer: str, body: dict) -> None:
        """A peer's request for blocks [from, to]: as many as fit in one answer."""
        lo, hi, rid = body.get("from"), body.get("to"), body.get("id")
        if not all(type(v) is int for v in (lo, hi, rid)) or lo < 1 or hi < lo:
            raise WireError("a block request out of range")
        out, size = [], 0
        for h in range(lo, min(hi, self.ledger.height, lo + MAX_BLOCKS_PER_ANSWER - 1) + 1):
            b = self.ledger.block_bytes(h)
            if b is None:
                break
            out.append(b)
            size += len(b)
            if size > MAX_BYTES_PER_ANSWER:
                break
        self.peers.send(peer, "blocks", {"id": rid, "blocks": out})

    def answered(self, body: dict) -> None:
        fut = self.requests.pop(body.get("id"), None)
        if fut is not None and not fut.done() and type(body.get("blocks")) is list:
            fut.set_result(body["blocks"])

    def _ask(self, peer: str, lo: int, hi: int) -> tuple[int, asyncio.Future]:
        rid = next(self.request_ids)
        fut = asyncio.get_running_loop().create_future()
        self.requests[rid] = fut
        self.peers.send(peer, "get_blocks", {"id": rid, "from": lo, "to": hi})
        return lo, fut

    async def _answer(self, asked: tuple[int, asyncio.Future]) -> tuple[int, list]:
        lo, fut = asked
        try:
            return lo, await asyncio.wait_for(fut, 5)
        except asyncio.TimeoutError:
            return lo, []

    async def catch_up(self, snap: Snapshot) -> int:
        """Fetch and apply the blocks up to the snapshot's height, asking the leader first,
        then each other peer in turn; returns that height. The next answer is asked for
        while one is applied, and an answer's blocks are decoded and their signatures
        checked in the checker threads, several at once, ahead of applying them in order."""
        target = snapshot_info(snap)
        led = self.ledger
        leader = self.leader()
        sources = itertools.cycle([leader] + sorted(p for p in self.peers.peers if p != leader))
        delay = 0.05
        if led.height < target.height:
            log.info("catching up from height %d to %d by block transfer", led.height, target.height)
        asked = None
        while led.height < target.height:
            if asked is None or asked[0] != led.height + 1:
                peer = next(sources)
                if peer is None or peer not in self.peers.peers:
                    continue
                asked = self._ask(peer, led.height + 1, target.height)
            lo, blocks = await self._answer(asked)
            blocks = [b for b in blocks if type(b) is bytes]
            asked = None
            if blocks and lo + len(blocks) <= target.height:   # the next answer is on its way meanwhile
                asked = self._ask(peer, lo + len(blocks), target.height)
            prepared = [self.applier.prepare_fetched(data) for data in blocks]
            try:
                for fut in prepared:
                    try:
                        block, txs = await fut
                    except (BlockError, TxError):
                        break
                    if not self.applier.apply_prepared(block.header.index, block, txs, from_log=False):
                        break   # it did not extend our chain: ask elsewhere
                    await asyncio.sleep(0)   # the loop serves the API and the links in between
            finally:
                for fut in prepared:
                    fut.cancel()
            if not blocks:
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)
        if led.head_hash != target.head and target.height:
            raise SyncError(f"after catching up to height {target.height} the head differs from the snapshot's")
        self.applier.conf = snap.meta.conf_state
        if led.applied_index < snap.index:
            led.mark_applied(snap.index, self.applier.conf)
        return target.height
