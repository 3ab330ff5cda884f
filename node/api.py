"""The HTTP API (SPEC §4) on aiohttp. Every error is JSON {"error", "detail"}; no input
gives a 500: bodies are size-limited and decoded strictly, and handlers only read the
ledger or hand transactions to the node."""
from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from node.ledger.canonical import EncodingError, unpack_strict
from node.ledger.rules import k_customer, k_ticket
from node.ledger.tx import TxError, admit, decode_tx
from node.mempool import MempoolFull
from node.openapi import OPENAPI
from node.runtime import Node

NODE = web.AppKey("node", Node)
MAX_BODY = 8 << 20
MAX_BATCH = 5000


def error(status: int, code: str, detail: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.content_type == "application/json":
            raise
        return error(e.status, e.reason.lower().replace(" ", "_"), e.text or e.reason)


async def _body(request: web.Request):
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise
    ctype = request.content_type
    try:
        if ctype == "application/msgpack":
            return unpack_strict(raw, MAX_BODY)
        if ctype in ("application/json", "", "application/octet-stream", "text/plain",
                     "application/x-www-form-urlencoded"):  # what curl -d sends without -H
            return json.loads(raw)
    except (EncodingError, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise web.HTTPBadRequest(text=json.dumps({"error": "malformed", "detail": f"cannot decode body: {e}"}),
                                 content_type="application/json") from None
    raise web.HTTPUnsupportedMediaType(text=json.dumps({"error": "unsupported_media_type",
                                                        "detail": "send application/json or application/msgpack"}),
                                       content_type="application/json")


def _unavailable(node: Node) -> web.Response | None:
    if not node.accepting:
        return error(503, "shutting_down", "this node is stopping", {"Retry-After": "1"})
    return None


def _result(node: Node, obj) -> tuple[int, dict]:
    try:
        tx = admit(obj)
    except TxError as e:
        node.metrics.tx_rejected.labels(reason=e.code).inc()
        return 400, {"error": e.code, "detail": e.detail}
    try:
        state = node.admit(tx)
    except MempoolFull:
        node.metrics.tx_rejected.labels(reason="mempool_full").inc()
        return 503, {"error": "overloaded", "detail": "the mempool is full", "tx_id": tx.tx_id}
    if state == "committed":
        return 409, {"error": "already_committed", "detail": "this transaction is committed", "tx_id": tx.tx_id}
    return 202, {"tx_id": tx.tx_id, "status": "pending"}


async def submit(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if (busy := _unavailable(node)) is not None:
        return busy
    obj = await _body(request)
    wait = request.query.get("wait")
    if wait not in (None, "commit"):
        return error(400, "bad_query", "wait may only be 'commit'")
    try:
        timeout = float(request.query.get("timeout", "10"))
        if not 0 < timeout <= 300:
            raise ValueError
    except ValueError:
        return error(400, "bad_query", "timeout must be a number of seconds in (0, 300]")
    status, body = _result(node, obj)
    if status == 503:
        return web.json_response(body, status=503, headers={"Retry-After": "1"})
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
    obj = await _body(request)
    if type(obj) is not list or len(obj) > MAX_BATCH:
        return error(400, "malformed", f"a batch is a list of at most {MAX_BATCH} envelopes")
    out = []
    for env in obj:
        status, body = _result(node, env)
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


def _block_json(node: Node, height: int, full: bool) -> dict | None:
    got = node.dd.ledger.block_header(height)
    if got is None:
        return None
    header, sig, hash_ = got
    body = node.dd.ledger.block_txs(height)
    out = {"height": header.height, "hash": hash_, "prev_hash": header.prev_hash, "tx_root": header.tx_root,
           "state_root": header.state_root, "timestamp": header.timestamp, "proposer": header.proposer,
           "term": header.term, "index": header.index, "sig": sig.hex(), "txs": [t for t, _, _ in body]}
    if full:
        out["envelopes"] = [decode_tx(env).envelope() for _, _, env in body]
        out["results"] = [code for _, code, _ in body]
    return out


async def block(request: web.Request) -> web.Response:
    node = request.app[NODE]
    h = request.match_info["height"]
    if h == "latest":
        height = node.dd.ledger.height
    elif h.isdigit() and len(h) < 19:
        height = int(h)
    else:
        return error(400, "bad_height", "a height is a non-negative integer or 'latest'")
    out = _block_json(node, height, request.query.get("full") in ("1", "true"))
    if out is None:
        return error(404, "not_found", f"no block at height {height}")
    return web.json_response(out)


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE].status())


async def customer(request: web.Request) -> web.Response:
    led = request.app[NODE].dd.ledger
    cid = request.match_info["customer_id"]
    rec = led.get(k_customer(cid))
    if rec is None:
        return error(404, "not_found", "no such customer")
    consents = {k.split(b"\x00", 1)[1].decode(): v for k, v in led.scan(b"co/" + cid.encode() + b"\x00")}
    return web.json_response({"customer_id": cid, "owner": rec["owner"], "profile_hash": rec["profile_hash"],
                              "customer_key": rec["key"], "erased": rec["erased"], "consents": consents})


async def history(request: web.Request) -> web.Response:
    node = request.app[NODE]
    cid = request.match_info["customer_id"]
    items = []
    for height, pos, tx_id, code, env in node.dd.ledger.history(cid, limit=10_000):
        hdr = node.dd.ledger.block_header(height)
        items.append({"height": height, "position": pos, "timestamp": hdr[0].timestamp if hdr else None,
                      "tx_id": tx_id, "code": code, "type": decode_tx(env).type})
    return web.json_response({"customer_id": cid, "history": items})


async def ticket(request: web.Request) -> web.Response:
    t = request.app[NODE].dd.ledger.get(k_ticket(request.match_info["ticket_id"]))
    if t is None:
        return error(404, "not_found", "no such ticket")
    return web.json_response({"ticket_id": request.match_info["ticket_id"], **t})


async def loyalty(request: web.Request) -> web.Response:
    led = request.app[NODE].dd.ledger
    cid = request.match_info["customer_id"]
    balances = {k.split(b"\x00", 1)[1].decode(): v["balance"] for k, v in led.scan(b"lo/" + cid.encode() + b"\x00")}
    return web.json_response({"customer_id": cid, "balances": balances})


async def events(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    q: asyncio.Queue = asyncio.Queue()
    node.block_listeners.add(q)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    try:
        start = request.query.get("from_height")
        if start is not None and start.isdigit():
            h = int(start)
            while h <= node.dd.ledger.height:
                b = _block_json(node, h, False)
                if b:
                    await resp.write(f"event: block\ndata: {json.dumps(b)}\n\n".encode())
                h += 1
        while True:
            try:
                ev = await asyncio.wait_for(q.get(), 15)
            except asyncio.TimeoutError:
                await resp.write(b": keep-alive\n\n")   # also finds clients that went away
                continue
            if ev is None:   # the node is stopping
                break
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
    app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
    app[NODE] = node
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
