"""Private data on a node (SPEC §3): who may hold what, taking it in, forwarding it,
purging it with receipts, and reconciling against the chain.

- A transaction's private part (`"private"` beside the envelope) is checked against the
  salted hash its payload carries; a mismatch is refused and nothing is kept.
- It is held only by the nodes entitled to it: a profile by the nodes of the customer's
  owner org, a ticket's texts by the nodes of the ticket's org, a review's text by every
  node. A node that receives a part it may not hold forwards it to the nodes that may,
  over the peer links, and keeps nothing.
- When a block commits, parts of transactions that were refused are dropped; an update
  purges the superseded profile, an erase everything of the customer; each purge is
  followed by this node's `privacy.purged` receipt, submitted until it is on the chain.
- At start, before serving, the node purges what the chain says it may no longer hold;
  then it asks the other nodes of its org for what it lacks.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import Executor
from typing import Any, Callable, NamedTuple

from crmledger.ledger.consortium import Consortium
from crmledger.ledger.genesis import NodeInfo
from crmledger.ledger.keys import SigningKey
from crmledger.ledger.statekeys import k_customer, k_purged, k_ticket
from crmledger.ledger.tx import HASHED, Tx, TxError, admit, decode_tx, is_ident, private_hash, sign_tx
from crmledger.node.peercalls import CallFailed, PeerCalls
from crmledger.node.peers import PeerLinks
from crmledger.storage.ledger_reads import LedgerReads
from crmledger.storage.private_store import Item, PrivateStore

log = logging.getLogger("crmledger.private")
MAX_FIELDS, MAX_VALUE, MAX_TEXT = 64, 1024, 8192
MAX_FORWARDED = 5000   # parts in one frame from a peer (a batch's worth)
INLINE_CHECKS = 16     # a frame of up to this many is checked on the loop
_SALT = re.compile(r"(?:[0-9a-f]{2}){16,64}\Z")


class PrivateError(ValueError):
    pass


class Part(NamedTuple):
    kind: str
    hash: str
    salt: bytes
    value: dict | str


def check_private(tx: Tx, obj: Any) -> Part:
    """The private part sent with `tx`, checked against its hash; raises PrivateError."""
    if tx.type not in HASHED:
        raise PrivateError(f"a {tx.type} transaction carries no private part")
    kind, field = HASHED[tx.type]
    name = "profile" if kind == "profile" else "text"
    if type(obj) is not dict or set(obj) != {"salt", name}:
        raise PrivateError(f'private must be {{"salt": HEX, "{name}": ...}}')
    if type(obj["salt"]) is not str or not _SALT.match(obj["salt"]):
        raise PrivateError("private.salt must be 16-64 bytes as lowercase hex")
    value = obj[name]
    if kind == "profile":
        if type(value) is not dict or not 0 < len(value) <= MAX_FIELDS or not all(
                is_ident(k) and len(k) <= 64 and type(v) is str and len(v) <= MAX_VALUE for k, v in value.items()):
            raise PrivateError(f"private.profile must map 1-{MAX_FIELDS} field names to strings of up to "
                               f"{MAX_VALUE} characters")
    elif type(value) is not str or not 0 < len(value) <= MAX_TEXT:
        raise PrivateError(f"private.text must be a string of 1-{MAX_TEXT} characters")
    salt = bytes.fromhex(obj["salt"])
    try:
        h = private_hash(salt, value)
    except (ValueError, UnicodeEncodeError):
        raise PrivateError("private holds a string that cannot be encoded") from None
    if h != tx.payload[field]:
        raise PrivateError(f"the private part does not match payload.{field}")
    return Part(kind, h, salt, value)


class PrivateData:
    def __init__(self, me: NodeInfo, consortium: Callable[[], Consortium], key: SigningKey, store: PrivateStore, ledger: LedgerReads,
                 peers: PeerLinks, calls: PeerCalls, submit: Callable[[Tx], None], checker: Executor) -> None:
        self.me = me
        self.consortium = consortium   # the one in force now
        self.key = key
        self.store = store
        self.ledger = ledger
        self.peers = peers
        self.calls = calls
        self.submit = submit   # admits a transaction this node signed
        self.checker = checker  # decodes and checks forwarded parts off the loop
        self.tasks: set[asyncio.Task] = set()
        calls.handle("private_sync", self._serve_sync)

    # -- who holds what -----------------------------------------------------------------------
    def holder_org(self, tx: Tx) -> str | None:
        """The org whose nodes hold `tx`'s private part (None: every node), as the rules
        will decide it: a review's text is public; a registration's profile is the
        registering org's; a ticket is the org's that opens it (the owner's, when the
        customer opens it) and keeps it; an update's profile is the owner's. Orgs send
        for themselves; a customer (org "") for their owner org."""
        p = tx.payload
        if tx.type == "review.post":
            return None
        if tx.type == "customer.register" or (tx.type == "ticket.open" and tx.org):
            return tx.org
        if tx.type == "ticket.update":
            t = self.ledger.get(k_ticket(p["ticket_id"]))
            if t is not None:
                return t["org"]
        cust = self.ledger.get(k_customer(p["customer_id"])) if "customer_id" in p else None
        return cust["owner"] if cust is not None else tx.org

    def may_hold(self, org: str | None) -> bool:
        return org is None or org == self.me.org

    def _item(self, tx: Tx, part: Part) -> Item:
        p = tx.payload
        if tx.type == "ticket.update":
            t = self.ledger.get(k_ticket(p["ticket_id"]))
            cid = t["customer_id"] if t is not None else ""
        else:
            cid = p["customer_id"]
        ref = {"profile": cid, "ticket": p.get("ticket_id", ""), "review": p.get("review_id", "")}[part.kind]
        return Item(part.kind, part.hash, cid, ref, part.salt, part.value)

    # -- taking it in ---------------------------------------------------------------------------
    def deliver(self, parts: list[tuple[Tx, Part]]) -> None:
        """Parts sent with transactions this node admitted: kept here (in one write) where
        this node may hold them, and sent to every other node that may (one frame each)."""
        mine: list[Item] = []
        out: dict[str, list[dict]] = {}
        for tx, part in parts:
            org = self.holder_org(tx)
            if self.may_hold(org):
                mine.append(self._item(tx, part))
            body = {"env": tx.encode(), "salt": part.salt.hex(), "value": part.value}
            for nid, n in self.peers.peers.items():
                if self.may_hold_as(n, org):
                    out.setdefault(nid, []).append(body)
        if mine:
            self.store.put_many(mine)
        for nid, bodies in out.items():
            self.peers.send(nid, "private", bodies)

    @staticmethod
    def may_hold_as(node: NodeInfo, org: str | None) -> bool:
        return org is None or node.org == org

    def received(self, peer: str, body: Any) -> None:
        """Parts forwarded by a peer (a frame holds a list): each checked as if sent here
        (in a checker thread, for more than a few) and kept only if this node may hold it
        (a peer cannot make this node keep what it may not)."""
        if type(body) is not list or len(body) > MAX_FORWARDED:
            log.warning("dropping a private frame of the wrong shape from %s", peer)
            return
        t = asyncio.get_running_loop().create_task(self._take(peer, body))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _take(self, peer: str, bodies: list) -> None:
        if len(bodies) <= INLINE_CHECKS:
            parts = self._check_forwarded(peer, bodies)
        else:
            parts = await asyncio.get_running_loop().run_in_executor(self.checker, self._check_forwarded, peer, bodies)
        items = [self._item(tx, part) for tx, part in parts if self.may_hold(self.holder_org(tx))]
        if items:
            self.store.put_many(items)

    @staticmethod
    def _check_forwarded(peer: str, bodies: list) -> list[tuple[Tx, Part]]:
        out = []
        for body in bodies:
            try:
                if type(body) is not dict or set(body) != {"env", "salt", "value"} or type(body["env"]) is not bytes:
                    raise PrivateError("a private item of the wrong shape")
                tx = decode_tx(body["env"])
                if not tx.signature_ok():
                    raise PrivateError("bad signature")
                name = "profile" if HASHED.get(tx.type, ("",))[0] == "profile" else "text"
                out.append((tx, check_private(tx, {"salt": body["salt"], name: body["value"]})))
            except (PrivateError, TxError) as e:
                log.warning("dropping private data forwarded by %s: %s", peer, e)
        return out

    # -- blocks -----------------------------------------------------------------------------------
    def committed(self, txs: list[Tx], codes: list[str], events: tuple[dict, ...]) -> None:
        """After a block: drop the parts of refused transactions, purge what updates and
        erasures require, and send the receipts."""
        refused = [tx.payload[HASHED[tx.type][1]] for tx, code in zip(txs, codes)
                   if code != "valid" and tx.type in HASHED]
        if refused:
            self.store.purge(refused)
        notes = [(tx.payload["note_hash"], t["customer_id"]) for tx, code in zip(txs, codes)
                 if code == "valid" and tx.type == "ticket.update"
                 for t in [self.ledger.get(k_ticket(tx.payload["ticket_id"]))] if t is not None]
        if notes:   # a note taken before its ticket was committed: now its customer is known
            self.store.assign(notes)
        purged = False
        for ev in events:
            if ev["type"] == "superseded":
                purged |= bool(self.store.purge([ev["profile_hash"]], cause=ev["cause"]))
            elif ev["type"] == "erasure":
                purged |= bool(self.store.purge([], erase=ev["customer_id"], cause=ev["cause"]))
        if purged:
            self.send_receipts()

    def send_receipts(self) -> None:
        """Submit a receipt for every purge whose receipt is not on the chain yet (its
        nonce is fixed by the purge, so a receipt sent twice commits once)."""
        for cause, kind, cid in self.store.receipts_due():
            if self.ledger.get(k_purged(cause, self.key.public_hex, kind)) is not None:
                self.store.receipt_done(cause, kind)
                continue
            env = sign_tx(self.key, "privacy.purged", self.me.org, f"purged-{cause[:40]}-{kind}",
                          _now_ms(), {"customer_id": cid, "cause": cause, "kind": kind})
            try:
                self.submit(admit(env))
            except Exception as e:   # refused for now (overloaded, stopping): sent again later
                log.info("receipt for %s (%s) not submitted yet: %s", cause, kind, e)

    # -- reconciling with the chain ---------------------------------------------------------------
    def purge_stale(self) -> int:
        """Delete what the chain says this node may no longer hold: everything of erased
        customers (with a receipt), and profile versions no longer current. Run at start,
        before the node serves."""
        n = 0
        for cid, h in self.store.profiles():
            cust = self.ledger.get(k_customer(cid))
            if cust is None:
                continue   # registered, not committed yet
            if cust["erased"]:
                n += len(self.store.purge([], erase=cid, cause=cust.get("erase_tx")))
            elif cust["profile_hash"] != h and cust["owner"] == self.me.org:
                n += len(self.store.purge([h]))
        return n

    def wanted(self) -> list[str]:
        """The hashes of what this node may hold by the chain: its org's customers'
        current profiles, its org's tickets' texts, every review's text."""
        out = [c["profile_hash"] for _, c in self.ledger.scan(b"cu/")
               if c["owner"] == self.me.org and not c["erased"]]
        out += [s["note_hash"] for _, t in self.ledger.scan(b"ti/") if t["org"] == self.me.org
                for s in t["timeline"] if s.get("note_hash")]
        out += [r["text_hash"] for _, r in self.ledger.scan(b"rv/")]
        return out

    async def fetch_missing(self) -> int | None:
        """Ask the other nodes of this org for what this node may hold and lacks: the
        number of items fetched, None when no other node of the org answered."""
        mates = [nid for nid, n in self.peers.peers.items() if n.org == self.me.org]
        if not mates:
            return 0
        wanted = self.wanted()
        held = self.store.held(wanted)
        want = [h for h in wanted if h not in held]
        n = 0
        for at in range(0, len(want), 1000):
            chunk = set(want[at:at + 1000])
            try:
                got = await self.calls.first(mates, "private_sync", {"hashes": sorted(chunk)})
            except CallFailed:
                return None
            for raw in got.get("items", []):
                try:
                    item = Item(*raw[:4], bytes.fromhex(raw[4]), raw[5])
                    if item.hash in chunk and private_hash(item.salt, item.value) == item.hash:
                        n += self.store.put(item)
                except (TypeError, ValueError):
                    continue
        return n

    async def _serve_sync(self, peer: str, args: dict) -> dict:
        """What a node of this org lacks, of what it may hold."""
        node = self.consortium().nodes.get(peer)
        hashes = args.get("hashes")
        if node is None or node.org != self.me.org or type(hashes) is not list:
            raise CallFailed("forbidden", "only nodes of the same org share private data")
        items = [self.store.get(h) for h in hashes[:1000] if type(h) is str]
        return {"items": [[i.kind, i.hash, i.customer_id, i.ref, i.salt.hex(), i.value] for i in items if i]}


def _now_ms() -> int:
    return int(time.time() * 1000)
