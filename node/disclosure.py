"""Releasing private data (SPEC §3, §4), on the node that holds it:

- to an org, a profile's fields only against an `access.read` entry committed `valid`
  (the node that filed it asks an owner node, which checks the entry on its own copy of
  the chain and releases exactly the fields the entry names);
- to the customer (their profile, their tickets' texts) or to a ticket's org (the
  ticket's texts), against the reader's signed request, checked again by the holder.

A node that does not hold what is asked for asks a node that does, over the peer links.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import msgpack

from crmledger.ledger.requests import REQUEST_WINDOW_MS, request_ok
from crmledger.ledger.statekeys import k_customer, k_ticket
from crmledger.node.peercalls import CallFailed
from crmledger.node.reqauth import SignedRequest, staff_of
from crmledger.storage.ledger_reads import TxRecord
from crmledger.storage.private_store import Item

if TYPE_CHECKING:
    from crmledger.node.runtime import Node


def select(profile: dict, fields: list[str]) -> dict:
    return dict(profile) if fields == ["*"] else {f: profile[f] for f in fields if f in profile}


class Disclosure:
    def __init__(self, node: "Node") -> None:
        self.node = node
        node.calls.handle("profile_for_read", self._serve_profile_for_read)
        node.calls.handle("private_values", self._serve_values)

    def nodes_of(self, org: str) -> list[str]:
        return [nid for nid, n in self.node.consortium.nodes.items() if n.org == org and nid != self.node.me.node_id]

    # -- a profile read on the chain ------------------------------------------------------------
    async def profile_for_read(self, rec: TxRecord, owner: str) -> dict:
        """The fields a committed `access.read` entry discloses; raises CallFailed."""
        if owner == self.node.me.org:
            try:
                return self._released(rec)
            except CallFailed as e:
                if e.code != "not_held":
                    raise   # another node of this org may hold it (if this one missed it)
        got = await self.node.calls.first(self.nodes_of(owner), "profile_for_read", {"tx_id": rec.tx_id})
        if type(got.get("profile")) is not dict:
            raise CallFailed("unreachable", "an owner node answered without a profile")
        return got["profile"]

    async def _serve_profile_for_read(self, peer: str, args: dict) -> dict:
        tx_id = args.get("tx_id")
        if type(tx_id) is not str or len(tx_id) != 64:
            raise CallFailed("bad_request", "tx_id")
        try:   # the asking node may have applied the entry a moment before this one
            rec = await self.node.commit_of(tx_id, 5.0)
        except asyncio.TimeoutError:
            raise CallFailed("not_committed", "the access entry is not committed here") from None
        return {"profile": self._released(rec)}

    def _released(self, rec: TxRecord) -> dict:
        if rec.code != "valid":
            raise CallFailed("forbidden", f"the access entry is {rec.code}")
        led = self.node.dd.ledger
        stored = led.block_txs(rec.height)[rec.pos]
        body = msgpack.unpackb(stored.envelope, raw=False)["body"]
        if body["type"] != "access.read":
            raise CallFailed("forbidden", "not an access entry")
        p = body["payload"]
        cust = led.customer(p["customer_id"])
        if cust is None or cust["erased"]:
            raise CallFailed("erased", "the customer is erased")
        item = self.node.dd.private.get(cust["profile_hash"])
        if item is None:
            raise CallFailed("not_held", "this node does not hold the current profile")
        return select(item.value, p["fields"])

    # -- the customer's, or a ticket org's, own reads ----------------------------------------------
    def allowed(self, signer: str, item: Item) -> bool:
        led = self.node.dd.ledger
        if item.kind == "review":
            return True
        cust = led.get(k_customer(item.customer_id))
        if cust is not None and cust["key"] == signer:
            return True
        if item.kind == "ticket":
            t = led.get(k_ticket(item.ref))
            staff = staff_of(self.node.consortium, led.get, signer)
            return t is not None and staff is not None and staff[0] == t["org"]
        return False

    def _local(self, signer: str, hashes: list[str]) -> dict[str, list]:
        out = {}
        for h in hashes:
            item = self.node.dd.private.get(h)
            if item is not None and self.allowed(signer, item):
                out[h] = [item.salt.hex(), item.value]
        return out

    async def values(self, req: SignedRequest, by_org: dict[str | None, list[str]],
                     unreachable: set[str] | None = None) -> dict[str, list]:
        """hash -> [salt hex, value] of what the request's signer may see, from the nodes of
        the org holding each (None: every node, so this one). Orgs none of whose nodes
        answered leave their items out, and are added to `unreachable`."""
        out: dict[str, list] = {}
        for org, hashes in by_org.items():
            if not hashes:
                continue
            if org is None or org == self.node.me.org:
                got = self._local(req.signer, hashes)
                out.update(got)
                hashes = [h for h in hashes if h not in got]
                if org is None or not hashes:
                    continue   # else another node of this org may hold what this one missed
            try:
                got = await self.node.calls.first(self.nodes_of(org), "private_values",
                                                  {"request": {**req.as_map(), "signer": req.signer},
                                                   "hashes": hashes})
            except CallFailed:
                if unreachable is not None:
                    unreachable.add(org)
                continue
            vals = got.get("values")
            if type(vals) is dict:
                out.update({h: v for h, v in vals.items() if h in hashes and type(v) is list and len(v) == 2})
        return out

    async def _serve_values(self, peer: str, args: dict) -> dict:
        r, hashes = args.get("request"), args.get("hashes")
        if type(r) is not dict or type(hashes) is not list or not all(type(h) is str for h in hashes):
            raise CallFailed("bad_request", "request and hashes")
        try:
            ok = request_ok(r["signer"], r["method"], r["path"], r["ts"], r["sig"]) \
                and abs(r["ts"] - time.time() * 1000) <= REQUEST_WINDOW_MS
        except (KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            raise CallFailed("unauthorized", "the forwarded request does not verify")
        return {"values": self._local(r["signer"], hashes[:10_000])}
