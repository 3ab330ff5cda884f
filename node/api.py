"""The HTTP API (SPEC §4) on aiohttp. Every error is JSON {"error", "detail"}; no input
gives a 500: bodies are size-limited, read within a time limit and decoded strictly, and
handlers only read the ledger or hand transactions to the node. The event loop that
serves them also drives Raft, so no handler does unbounded work on it: reads that decode
many stored transactions are paged and run in a reader thread (node.reader)."""
from __future__ import annotations

import asyncio
import json
import re
import time

import msgpack
from aiohttp import web

from crmledger.node.admission import Refused
from crmledger.node.httpguard import GUARD, ConnectionGuard, guard_requests, guard_sweeper
from crmledger.ledger.canonical import EncodingError, unpack_strict
from crmledger.ledger.rules import k_customer, k_ticket
from crmledger.ledger.tx import TxError, admit, is_ident
from crmledger.node.mempool import MempoolFull
from crmledger.node.openapi import OPENAPI
from crmledger.node.reader import Busy
from crmledger.node.runtime import Node
from crmledger.storage.ledger_store import POS_BITS, LedgerStore, seq_of

NODE = web.AppKey("node", Node)
MAX_BODY = 8 << 20
MAX_BATCH = 5000
PAGE_DEFAULT, PAGE_MAX = 100, 1000   # history entries per page
REPLAY_CHUNK = 64                    # blocks an event stream replays per reader call
_UINT = re.compile(r"[0-9]{1,18}\Z")  # ASCII digits only: str.isdigit() also takes "²"
_CURSOR = re.compile(r"([0-9]{1,18})\.([0-9]{1,7})\Z")


def error(status: int, code: str, detail: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)


def _bad_request(code: str, detail: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": code, "detail": detail}), content_type="application/json")


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.content_type == "application/json":
            raise
        return error(e.status, e.reason.lower().replace(" ", "_"), e.text or e.reason)
    except Busy:
        request.app[NODE].metrics.busy_refusals.inc()
        return error(503, "busy", "too much heavy work (reads, large batches) at once on this node",
                     {"Retry-After": "1"})


def _path_id(request: web.Request, name: str) -> str:
    v = request.match_info[name]
    if not is_ident(v):
        raise _bad_request("bad_id", f"{name} is 1-128 characters of A-Z a-z 0-9 . _ : @ + -")
    return v


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the key {dup!r} appears twice in one object")
    return out


def loads_strict(raw: bytes):
    """JSON as a transaction may be sent: an object with a key twice is refused (two
    parsers could read two different bodies under one signature)."""
    return json.loads(raw, object_pairs_hook=_unique_keys)


async def _raw_body(request: web.Request) -> bytes:
    try:
        return await asyncio.wait_for(request.read(), request.app[NODE].cfg.limits.body_timeout_s)
    except asyncio.TimeoutError:
        raise web.HTTPRequestTimeout(text=json.dumps({"error": "timeout", "detail": "the body came too slowly"}),
                                     content_type="application/json") from None


def _decode(raw: bytes, ctype: str):
    """A request body as JSON or msgpack; raises HTTP 400 or 415."""
    try:
        if ctype == "application/msgpack":
            return unpack_strict(raw, MAX_BODY)
        if ctype in ("application/json", "", "application/octet-stream", "text/plain",
                     "application/x-www-form-urlencoded"):  # what curl -d sends without -H
            return loads_strict(raw)
    except (EncodingError, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise _bad_request("malformed", f"cannot decode body: {e}") from None
    raise web.HTTPUnsupportedMediaType(text=json.dumps({"error": "unsupported_media_type",
                                                        "detail": "send application/json or application/msgpack"}),
                                       content_type="application/json")


def _unavailable(node: Node) -> web.Response | None:
    if not node.accepting:
        return error(503, "shutting_down", "this node is stopping", {"Retry-After": "1"})
    return None


def _parse(obj) -> tuple[int, dict] | object:
    """The checked transaction, or the refusal (status, body)."""
    try:
        return admit(obj)
    except TxError as e:
        return 400, {"error": e.code, "detail": e.detail}


def _parse_batch(raw: bytes, ctype: str) -> list:
    """A batch's body decoded and each envelope checked (in a checker thread)."""
    obj = _decode(raw, ctype)
    if type(obj) is not list or len(obj) > MAX_BATCH:
        raise _bad_request("malformed", f"a batch is a list of at most {MAX_BATCH} envelopes")
    return [_parse(env) for env in obj]


def _admit(node: Node, tx, client: str | None, committed: bool | None = None) -> tuple[int, dict]:
    try:
        state = node.admit(tx, client, committed)
    except Refused as e:
        node.metrics.tx_rejected.labels(reason=e.code).inc()
        body = {"error": e.code, "detail": e.detail, "tx_id": tx.tx_id}
        if e.retry_after is not None:
            body["retry_after"] = e.retry_after
        return e.status, body
    except MempoolFull:
        node.metrics.tx_rejected.labels(reason="mempool_full").inc()
        return 503, {"error": "overloaded", "detail": "the mempool is full", "tx_id": tx.tx_id, "retry_after": 1}
    if state == "committed":
        return 409, {"error": "already_committed", "detail": "this transaction is committed", "tx_id": tx.tx_id}
    return 202, {"tx_id": tx.tx_id, "status": "pending"}


def _result(node: Node, parsed, client: str | None, committed: bool | None = None) -> tuple[int, dict]:
    if type(parsed) is tuple:
        node.metrics.tx_rejected.labels(reason=parsed[1]["error"]).inc()
        return parsed
    return _admit(node, parsed, client, committed)


async def submit(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if (busy := _unavailable(node)) is not None:
        return busy
    obj = _decode(await _raw_body(request), request.content_type)
    wait = request.query.get("wait")
    if wait not in (None, "commit"):
        return error(400, "bad_query", "wait may only be 'commit'")
    try:
        timeout = float(request.query.get("timeout", "10"))
        if not 0 < timeout <= 300:
            raise ValueError
    except ValueError:
        return error(400, "bad_query", "timeout must be a number of seconds in (0, 300]")
    status, body = _result(node, _parse(obj), request.remote)
    if "retry_after" in body:
        return web.json_response(body, status=status, headers={"Retry-After": str(body["retry_after"])})
    if status != 202 or wait is None:
        return web.json_response(body, status=status)
    t0 = time.monotonic()
    fut = node.wait_commit(body["tx_id"])
    rec = node.committed_record(body["tx_id"])   # it may have committed meanwhile
    try:
        if rec is not None:
            res = {"height": rec.height, "code": rec.code}
        else:
            c = await asyncio.wait_for(fut, timeout)
            res = {"height": c.height, "code": c.code}
    except asyncio.TimeoutError:
        return error(504, "timeout", f"not committed within {timeout} s")
    node.metrics.commit_latency.observe(time.monotonic() - t0)
    return web.json_response({"tx_id": body["tx_id"], "status": "committed", "height": res["height"],
                              "valid": res["code"] == "valid", "code": res["code"]})


async def submit_batch(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if (busy := _unavailable(node)) is not None:
        return busy
    raw = await _raw_body(request)
    # every envelope is decoded and checked (off the loop) before any is admitted, and
    # each gets its own answer: a bad one never leaves the ones before it admitted and
    # unreported
    parsed = await node.checker.run(_parse_batch, raw, request.content_type)
    out = []
    for at in range(0, len(parsed), 256):
        if at:
            await asyncio.sleep(0)   # let Raft and other requests in between
        chunk = parsed[at:at + 256]
        committed = node.dd.ledger.committed_among([p for p in chunk if type(p) is not tuple])
        for p in chunk:
            status, body = _result(node, p, request.remote, type(p) is not tuple and p.tx_id in committed)
            out.append({"status_code": status, **body})
    return web.json_response(out, status=202)


async def tx_status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    tx_id = request.match_info["tx_id"]
    if len(tx_id) != 64 or any(c not in "0123456789abcdef" for c in tx_id):
        return error(400, "bad_tx_id", "a tx_id is 64 lowercase hex characters")
    rec = node.committed_record(tx_id)
    if rec is not None:
        return web.json_response({"tx_id": tx_id, "status": "committed", "height": rec.height,
                                  "valid": rec.code == "valid", "code": rec.code})
    status = "pending" if tx_id in node.mempool else "unknown"
    return web.json_response({"tx_id": tx_id, "status": status, "height": None, "valid": None, "code": None})


def _block_json(store: LedgerStore, height: int, full: bool) -> dict | None:
    """A block as the API shows it (run by a reader thread)."""
    got = store.block_header(height)
    if got is None:
        return None
    header, sig, hash_ = got
    body = store.block_txs(height)
    out = {"height": header.height, "hash": hash_, "prev_hash": header.prev_hash, "tx_root": header.tx_root,
           "state_root": header.state_root, "timestamp": header.timestamp, "proposer": header.proposer,
           "term": header.term, "index": header.index, "sig": sig.hex(), "txs": [t for t, _, _ in body]}
    if full:
        # stored envelopes were checked on the way in: unpacked, not checked again
        out["envelopes"] = [msgpack.unpackb(env, raw=False) for _, _, env in body]
        out["results"] = [code for _, code, _ in body]
    return out


def _block_bytes(store: LedgerStore, height: int, full: bool) -> bytes | None:
    out = _block_json(store, height, full)
    return None if out is None else json.dumps(out).encode()


async def block(request: web.Request) -> web.Response:
    node = request.app[NODE]
    h = request.match_info["height"]
    if h == "latest":
        height = node.dd.ledger.height
    elif _UINT.match(h):
        height = int(h)
    else:
        return error(400, "bad_height", "a height is a non-negative integer or 'latest'")
    out = await node.reader.run(_block_bytes, height, request.query.get("full") in ("1", "true"))
    if out is None:
        return error(404, "not_found", f"no block at height {height}")
    return web.Response(body=out, content_type="application/json")


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE].status())


async def customer(request: web.Request) -> web.Response:
    led = request.app[NODE].dd.ledger
    cid = _path_id(request, "customer_id")
    rec = led.get(k_customer(cid))
    if rec is None:
        return error(404, "not_found", "no such customer")
    consents = {k.split(b"\x00", 1)[1].decode(): v for k, v in led.scan(b"co/" + cid.encode() + b"\x00")}
    return web.json_response({"customer_id": cid, "owner": rec["owner"], "profile_hash": rec["profile_hash"],
                              "customer_key": rec["key"], "erased": rec["erased"], "consents": consents})


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
    cid = _path_id(request, "customer_id")
    q = request.query
    order = q.get("order", "asc")
    if order not in ("asc", "desc"):
        return error(400, "bad_query", "order is 'asc' (oldest first) or 'desc' (newest first)")
    limit = q.get("limit", str(PAGE_DEFAULT))
    if not _UINT.match(limit) or not 1 <= int(limit) <= PAGE_MAX:
        return error(400, "bad_query", f"limit is an integer from 1 to {PAGE_MAX}")
    after = None
    if "after" in q:
        m = _CURSOR.match(q["after"])
        if m is None or int(m.group(2)) >> POS_BITS:
            return error(400, "bad_query", "after is the 'next' cursor of a page: HEIGHT.POSITION")
        after = seq_of(int(m.group(1)), int(m.group(2)))
    candidates = node.dd.ledger.history_candidates(cid)
    body = await node.reader.run(_history_page, cid, candidates, after, order == "desc", int(limit))
    return web.Response(body=body, content_type="application/json")


async def ticket(request: web.Request) -> web.Response:
    tid = _path_id(request, "ticket_id")
    t = request.app[NODE].dd.ledger.get(k_ticket(tid))
    if t is None:
        return error(404, "not_found", "no such ticket")
    return web.json_response({"ticket_id": tid, **t})


async def loyalty(request: web.Request) -> web.Response:
    led = request.app[NODE].dd.ledger
    cid = _path_id(request, "customer_id")
    balances = {k.split(b"\x00", 1)[1].decode(): v["balance"] for k, v in led.scan(b"lo/" + cid.encode() + b"\x00")}
    return web.json_response({"customer_id": cid, "balances": balances})


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
    node = request.app[NODE]
    start = request.query.get("from_height")
    if start is not None and not _UINT.match(start):
        return error(400, "bad_query", "from_height is a non-negative integer")
    q: asyncio.Queue = asyncio.Queue()
    node.block_listeners.add(q)
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
                ev = await asyncio.wait_for(q.get(), 15)
            except asyncio.TimeoutError:
                await resp.write(b": keep-alive\n\n")   # also finds clients that went away
                continue
            if ev is None:   # the node is stopping
                break
            if ev["height"] <= sent:
                continue
            await resp.write(f"event: block\ndata: {json.dumps(ev)}\n\n".encode())
    except ConnectionResetError:
        pass
    finally:
        node.block_listeners.discard(q)
    return resp


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[NODE].render_metrics(), content_type="text/plain", charset="utf-8")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def make_app(node: Node) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[guard_requests, json_errors])
    app[NODE] = node
    app[GUARD] = ConnectionGuard(node.cfg.limits)
    app.cleanup_ctx.append(guard_sweeper)
    app.router.add_post("/v1/tx", submit)
    app.router.add_post("/v1/tx/batch", submit_batch)
    app.router.add_get("/v1/tx/{tx_id}", tx_status)
    app.router.add_get("/v1/blocks/{height}", block)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/customers/{customer_id}", customer)
    app.router.add_get("/v1/customers/{customer_id}/history", history)
    app.router.add_get("/v1/tickets/{ticket_id}", ticket)
    app.router.add_get("/v1/loyalty/{customer_id}", loyalty)
    app.router.add_get("/v1/events", events)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi)
    return app
