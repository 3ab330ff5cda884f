"""Reads (SPEC §4): status, blocks, customers and their history, tickets, loyalty, and
the event stream. Reads that decode many stored transactions (a page of history, a full
block, a replay of blocks) run in a reader thread on a read-only connection and build
their JSON there; the loop only hands them over."""
from __future__ import annotations

import asyncio
import json
import re
import time

import msgpack
from aiohttp import web

from crmledger.ledger.statekeys import PROPOSAL_PREFIX
from crmledger.node.api import NODE, UINT, ApiError, bad_query, path_id
from crmledger.node.reader import Busy
from crmledger.storage.ledger_store import POS_BITS, LedgerStore, seq_of

PAGE_DEFAULT, PAGE_MAX = 100, 1000   # history entries per page
REPLAY_CHUNK = 64                    # blocks an event stream replays per reader call
KEEP_ALIVE_S = 15
_CURSOR = re.compile(r"([0-9]{1,18})\.([0-9]{1,7})\Z")


async def status(request: web.Request) -> web.Response:
    # public, and read by the operator view of any node's pages (another origin)
    return web.json_response(request.app[NODE].status(), headers={"Access-Control-Allow-Origin": "*"})


async def nodes(request: web.Request) -> web.Response:
    """The consortium's nodes in force, with their API addresses."""
    g = request.app[NODE].consortium
    return web.json_response({"nodes": [{"node_id": n.node_id, "org": n.org, "api_addr": n.api_addr}
                                        for n in sorted(g.nodes.values(), key=lambda n: n.raft_id)]})


async def orgs(request: web.Request) -> web.Response:
    """The consortium's orgs: contact details and ticket service levels."""
    g = request.app[NODE].consortium
    return web.json_response({"orgs": [{"org": o, "contact": dict(i.contact), "service_levels": {
        "first_response_ms": i.first_response_ms, "resolution_ms": i.resolution_ms}} for o, i in sorted(g.org_info.items())]})


async def consortium(request: web.Request) -> web.Response:
    """The consortium in force (version, policy, orgs with their admin keys, nodes) and
    every governance proposal with its votes and status."""
    node = request.app[NODE]
    now = int(time.time() * 1000)
    proposals = []
    for k, p in node.dd.ledger.scan(PROPOSAL_PREFIX):
        status = "expired" if p["status"] == "open" and p["deadline_ts"] <= now else p["status"]
        proposals.append({"proposal_id": k[len(PROPOSAL_PREFIX):].decode(), **p, "status": status})
    proposals.sort(key=lambda p: (p["height"], p["proposal_id"]))
    return web.json_response({**node.consortium.to_state(), "proposals": proposals})


# -- blocks -----------------------------------------------------------------------------------
def _block_json(store: LedgerStore, height: int, full: bool) -> dict | None:
    """A block as the API shows it (run by a reader thread)."""
    got = store.block_header(height)
    if got is None:
        return None
    header, sig, hash_ = got
    body = store.block_txs(height) if full else []
    out = {"height": header.height, "hash": hash_, "prev_hash": header.prev_hash, "tx_root": header.tx_root,
           "state_root": header.state_root, "timestamp": header.timestamp, "proposer": header.proposer,
           "term": header.term, "index": header.index, "sig": sig.hex(),
           "txs": [t.tx_id for t in body] if full else store.block_tx_ids(height)}
    if full:
        # stored envelopes were checked on the way in: unpacked, not checked again
        out["envelopes"] = [msgpack.unpackb(t.envelope, raw=False) for t in body]
        out["results"] = [t.code for t in body]
    return out


def _block_bytes(store: LedgerStore, height: int, full: bool) -> bytes | None:
    out = _block_json(store, height, full)
    return None if out is None else json.dumps(out).encode()


async def block(request: web.Request) -> web.Response:
    node = request.app[NODE]
    h = request.match_info["height"]
    if h == "latest":
        height = node.dd.ledger.height
    elif UINT.match(h):
        height = int(h)
    else:
        raise ApiError(400, "bad_height", "a height is a non-negative integer or 'latest'")
    full = request.query.get("full") in ("1", "true")
    # a header and its tx_ids are two indexed lookups: served here, so that they never
    # wait behind heavy reads; the envelopes of a full block are read by a reader
    out = await node.reader.run(_block_bytes, height, True) if full else _block_bytes(node.dd.ledger, height, False)
    if out is None:
        raise ApiError(404, "not_found", f"no block at height {height}")
    return web.Response(body=out, content_type="application/json")


# -- the world state ----------------------------------------------------------------------------
async def loyalty(request: web.Request) -> web.Response:
    cid = path_id(request, "customer_id")
    return web.json_response({"customer_id": cid, "balances": request.app[NODE].dd.ledger.balances(cid)})


# -- the audit trail -----------------------------------------------------------------------------
def _history_page(store: LedgerStore, cid: str, candidates, after: int | None, descending: bool,
                  limit: int) -> bytes:
    """One page of a customer's history as JSON (run by a reader thread)."""
    rows, more = store.history_page(cid, candidates, after=after, descending=descending, limit=limit)
    items = [{"height": e.height, "position": e.pos, "timestamp": e.timestamp, "tx_id": e.tx_id, "code": e.code,
              "type": msgpack.unpackb(e.envelope, raw=False)["body"]["type"]} for e in rows]
    nxt = f"{rows[-1].height}.{rows[-1].pos}" if more else None
    return json.dumps({"customer_id": cid, "order": "desc" if descending else "asc", "history": items,
                       "next": nxt}).encode()


async def history(request: web.Request) -> web.Response:
    """The audit trail, a page at a time: `order` asc (oldest first, the default) or
    desc, `limit` entries (default 100, at most 1000), `after` the `next` cursor of the
    page before ("HEIGHT.POSITION"): the entries strictly after it in that order."""
    node = request.app[NODE]
    cid = path_id(request, "customer_id")
    q = request.query
    order = q.get("order", "asc")
    if order not in ("asc", "desc"):
        raise bad_query("order is 'asc' (oldest first) or 'desc' (newest first)")
    limit = q.get("limit", str(PAGE_DEFAULT))
    if not UINT.match(limit) or not 1 <= int(limit) <= PAGE_MAX:
        raise bad_query(f"limit is an integer from 1 to {PAGE_MAX}")
    after = None
    if "after" in q:
        m = _CURSOR.match(q["after"])
        if m is None or int(m.group(2)) >> POS_BITS:
            raise bad_query("after is the 'next' cursor of a page: HEIGHT.POSITION")
        after = seq_of(int(m.group(1)), int(m.group(2)))
    candidates = node.dd.ledger.history_candidates(cid)
    body = await node.reader.run(_history_page, cid, candidates, after, order == "desc", int(limit))
    return web.Response(body=body, content_type="application/json")


# -- events -----------------------------------------------------------------------------------
def _replay(store: LedgerStore, lo: int, hi: int) -> list[bytes]:
    """Events for blocks lo..hi (run by a reader thread)."""
    out = []
    for h in range(lo, hi + 1):
        b = _block_json(store, h, False)
        if b is None:
            break
        out.append(f"event: block\ndata: {json.dumps(b)}\n\n".encode())
    return out


async def events(request: web.Request) -> web.StreamResponse:
    """One `block` event per committed block, from `from_height` when given; live, also a
    `ticket` event per escalation and an `erasure` event per erased customer (naming the
    orgs that read the customer's data). The stream ends when the node stops (the app's
    shutdown hook ends every stream)."""
    node = request.app[NODE]
    start = request.query.get("from_height")
    if start is not None and not UINT.match(start):
        raise bad_query("from_height is a non-negative integer")
    q: asyncio.Queue = asyncio.Queue()
    node.applier.listeners.add(q)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    sent = 0   # the height of the last block sent: a replayed block also queued live is sent once
    try:
        if start is not None:
            h = max(int(start), 1)
            while h <= node.dd.ledger.height:
                try:
                    chunk = await node.reader.run(_replay, h, min(h + REPLAY_CHUNK - 1, node.dd.ledger.height))
                except Busy:
                    await asyncio.sleep(0.2)   # the stream is open already: wait for a reader
                    continue
                if not chunk:
                    break
                for ev in chunk:
                    await resp.write(ev)
                h += len(chunk)
                sent = h - 1
        while True:
            try:
                ev = await asyncio.wait_for(q.get(), KEEP_ALIVE_S)
            except asyncio.TimeoutError:
                await resp.write(b": keep-alive\n\n")   # also finds clients that went away
                continue
            if ev is None:   # the node is stopping
                break
            name, data = ev
            if name == "block" and data["height"] <= sent:
                continue
            await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
    except ConnectionResetError:
        pass
    finally:
        node.applier.listeners.discard(q)
    return resp
