"""The HTTP API (SPEC §4) on aiohttp: the app factory and what every request shares.
Every error is JSON {"error", "detail"}, raised as an `ApiError` and answered in one
place; no input gives a 500: bodies are size-limited, read within a time limit and
decoded strictly. The event loop that serves the API also drives Raft, so no handler does
unbounded work on it: see `api_tx` (submissions) and `api_reads` (reads, paged, the heavy
ones in reader threads)."""
from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path

from aiohttp import web

from crmledger.ledger.canonical import EncodingError, unpack_strict
from crmledger.ledger.tx import is_ident
from crmledger.node.httpguard import GUARD, ConnectionGuard, guard_requests, guard_sweeper
from crmledger.node.openapi import OPENAPI
from crmledger.node.reader import Busy
from crmledger.node.runtime import Node
from crmledger.storage.sqlite import is_disk_full

NODE = web.AppKey("node", Node)
MAX_BODY = 8 << 20
UINT = re.compile(r"[0-9]{1,18}\Z")  # ASCII digits only: str.isdigit() also takes "²"


class ApiError(Exception):
    """An answer other than success: `status`, and the JSON error body."""

    def __init__(self, status: int, code: str, detail: str, retry_after: int | None = None,
                 extra: dict | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.retry_after = status, code, detail, retry_after
        self.extra = extra or {}

    def body(self) -> dict:
        out = {"error": self.code, "detail": self.detail, **self.extra}
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out

    def response(self) -> web.Response:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return web.json_response(self.body(), status=self.status, headers=headers)


def bad_query(detail: str) -> ApiError:
    return ApiError(400, "bad_query", detail)


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as e:
        return e.response()
    except Busy:
        request.app[NODE].metrics.busy_refusals.inc()
        return ApiError(503, "busy", "too much heavy work (reads, large batches) at once on this node", 1).response()
    except web.HTTPException as e:
        return ApiError(e.status, e.reason.lower().replace(" ", "_"), e.text or e.reason).response()
    except (sqlite3.Error, OSError) as e:
        if not is_disk_full(e):
            raise
        return ApiError(507, "disk_full", "this node's disk is full: it takes no writes until there is room "
                        "(send to another node)", 5).response()


def path_id(request: web.Request, name: str) -> str:
    v = request.match_info[name]
    if not is_ident(v):
        raise ApiError(400, "bad_id", f"{name} is 1-128 characters of A-Z a-z 0-9 . _ : @ + -")
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


async def raw_body(request: web.Request) -> bytes:
    try:
        return await asyncio.wait_for(request.read(), request.app[NODE].cfg.limits.body_timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, "timeout", "the body came too slowly") from None


def decode_body(raw: bytes, ctype: str):
    """A request body as JSON or msgpack; raises ApiError 400 or 415."""
    try:
        if ctype == "application/msgpack":
            return unpack_strict(raw, MAX_BODY)
        if ctype in ("application/json", "", "application/octet-stream", "text/plain",
                     "application/x-www-form-urlencoded"):  # what curl -d sends without -H
            return loads_strict(raw)
    except (EncodingError, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ApiError(400, "malformed", f"cannot decode body: {e}") from None
    raise ApiError(415, "unsupported_media_type", "send application/json or application/msgpack")


async def _end_streams(app: web.Application) -> None:
    app[NODE].applier.end_streams()


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    for reason, n in request.app[GUARD].counts().items():
        node.metrics.http_closed.labels(reason=reason).set(n)
    return web.Response(body=node.render_metrics(), content_type="text/plain", charset="utf-8")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


UI_DIR = Path(__file__).parent / "ui"
# the pages load only their own scripts and styles; the operator view reads other nodes' status
_UI_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
              "connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


async def _ui_index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(UI_DIR / "index.html")


async def _ui_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/ui" or request.path.startswith("/ui/"):
        response.headers["Content-Security-Policy"] = _UI_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"


def make_app(node: Node) -> web.Application:
    from crmledger.node import api_private, api_reads, api_tx
    app = web.Application(client_max_size=MAX_BODY, middlewares=[guard_requests, json_errors])
    app[NODE] = node
    app[GUARD] = ConnectionGuard(node.cfg.limits)
    app.cleanup_ctx.append(guard_sweeper)
    app.on_shutdown.append(_end_streams)
    app.router.add_post("/v1/tx", api_tx.submit)
    app.router.add_post("/v1/tx/batch", api_tx.submit_batch)
    app.router.add_get("/v1/tx/{tx_id}", api_tx.tx_status)
    app.router.add_get("/v1/blocks/{height}", api_reads.block)
    app.router.add_get("/v1/status", api_reads.status)
    app.router.add_get("/v1/customers/{customer_id}", api_private.customer)
    app.router.add_get("/v1/customers/{customer_id}/history", api_reads.history)
    app.router.add_get("/v1/customers/{customer_id}/access", api_private.access)
    app.router.add_get("/v1/customers/{customer_id}/consents", api_private.consents)
    app.router.add_get("/v1/customers/{customer_id}/consents/{grantee_org}/receipt", api_private.receipt)
    app.router.add_get("/v1/customers/{customer_id}/export", api_private.export)
    app.router.add_get("/v1/tickets/{ticket_id}", api_private.ticket)
    app.router.add_get("/v1/orgs/{org}/reviews", api_private.reviews)
    app.router.add_get("/v1/orgs/{org}/tickets", api_private.org_tickets)
    app.router.add_get("/v1/orgs", api_reads.orgs)
    app.router.add_get("/v1/nodes", api_reads.nodes)
    app.router.add_get("/v1/consortium", api_reads.consortium)
    app.router.add_get("/ui", _ui_index)
    app.router.add_get("/ui/", _ui_index)
    app.router.add_static("/ui/", UI_DIR)
    app.on_response_prepare.append(_ui_headers)
    app.router.add_get("/v1/loyalty/{customer_id}", api_reads.loyalty)
    app.router.add_get("/v1/events", api_reads.events)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi)
    return app
