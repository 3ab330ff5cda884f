"""Submissions (SPEC §4): `POST /v1/tx` (optionally waiting for the commit), `POST
/v1/tx/batch` (each envelope answered on its own) and `GET /v1/tx/{tx_id}`. A batch is
decoded and its signatures checked in a checker thread, every envelope before any is
admitted; admitting yields to the loop every few hundred."""
from __future__ import annotations

import asyncio
import time

from aiohttp import web

from crmledger.ledger.tx import Tx, TxError, admit
from crmledger.node.admission import Refused
from crmledger.node.api import NODE, ApiError, bad_query, decode_body, raw_body
from crmledger.node.mempool import MempoolFull
from crmledger.node.private import Part, PrivateError, check_private
from crmledger.node.runtime import Admitted, Node, NodeError

MAX_BATCH = 5000
ADMIT_CHUNK = 256   # envelopes of a batch admitted between two yields to the loop


Parsed = tuple[Tx | TxError, Part | None]


def _parse(obj) -> Parsed:
    """An envelope, with the private part sent beside it (SPEC §3) checked against its
    hash: a part that does not match refuses the whole submission."""
    has_private = type(obj) is dict and "private" in obj
    if has_private:
        obj = dict(obj)
        private = obj.pop("private")
    try:
        tx = admit(obj)
        return tx, check_private(tx, private) if has_private else None
    except TxError as e:
        return e, None
    except PrivateError as e:
        return TxError("bad_private", str(e)), None


def _parse_batch(raw: bytes, ctype: str) -> list[Parsed]:
    """A batch's body decoded and each envelope checked (in a checker thread)."""
    obj = decode_body(raw, ctype)
    if type(obj) is not list or len(obj) > MAX_BATCH:
        raise ApiError(400, "malformed", f"a batch is a list of at most {MAX_BATCH} envelopes")
    return [_parse(env) for env in obj]


def _answer(node: Node, parsed: Tx | TxError, client: str | None, committed: bool | None = None,
            part: Part | None = None, parts: list | None = None) -> ApiError | dict:
    """What a submission of `parsed` gets: an ApiError, or the body of a 202. An
    admitted transaction's private part is added to `parts`, or, without that list,
    goes at once to the nodes that may hold it."""
    if isinstance(parsed, TxError):
        node.rejected(parsed.code)
        return ApiError(400, parsed.code, parsed.detail)
    known = {"tx_id": parsed.tx_id}
    try:
        state = node.admit(parsed, client, committed)
    except Refused as e:
        return ApiError(e.status, e.code, e.detail, e.retry_after, known)
    except MempoolFull:
        return ApiError(503, "overloaded", "the mempool is full", 1, known)
    if state == Admitted.COMMITTED:
        return ApiError(409, "already_committed", "this transaction is committed", extra=known)
    if part is not None:
        if parts is None:
            node.private.deliver([(parsed, part)])
        else:
            parts.append((parsed, part))
    return {"tx_id": parsed.tx_id, "status": "pending"}


def _refusing(node: Node) -> None:
    if not node.accepting:
        raise ApiError(503, "shutting_down", "this node is stopping", 1)


def _full(node: Node, n: int | None) -> bool:
    waiting, limit = node.waiting(), node.backlog.limit()
    return waiting > 0 and (waiting >= limit if n is None else waiting + n > limit)


async def _shed(node: Node, n: int | None = None) -> None:
    """Refuse `n` more transactions when with them the node would hold more than the
    cluster commits in `max_queue_ms`, once a few blocks have not made room for them
    (so that clients refused together are not all told to come back a second later):
    called once the body is read, before any work is spent on it, with no await after
    it until they are counted as held; and, with `n` None, before the body is read."""
    if not _full(node, n):
        return
    hold = node.cfg.mempool.max_queue_ms / 2000
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline:
        await node.block_applied(deadline - time.monotonic())
        if not _full(node, n):
            return
    raise ApiError(503, "overloaded", f"{node.waiting()} transactions are waiting for a block, more than the "
                   f"cluster commits in {node.cfg.mempool.max_queue_ms} ms: try again", 1)


def _committed(tx_id: str, height: int, code: str) -> dict:
    return {"tx_id": tx_id, "status": "committed", "height": height, "valid": code == "valid", "code": code}


async def submit(request: web.Request) -> web.Response:
    node = request.app[NODE]
    _refusing(node)
    await _shed(node)
    t0 = time.monotonic()
    raw = await raw_body(request)
    await _shed(node, 1)
    obj = decode_body(raw, request.content_type)
    t1 = time.monotonic()
    wait = request.query.get("wait")
    if wait not in (None, "commit"):
        raise bad_query("wait may only be 'commit'")
    try:
        timeout = float(request.query.get("timeout", "10"))
        if not 0 < timeout <= 300:
            raise ValueError
    except ValueError:
        raise bad_query("timeout must be a number of seconds in (0, 300]") from None
    t2 = time.monotonic()
    parsed, part = _parse(obj)
    t3 = time.monotonic()
    out = _answer(node, parsed, request.remote, part=part)
    stage = node.metrics.stage
    stage("receive", t1 - t0)
    stage("verify", t3 - t2)
    stage("admit", time.monotonic() - t3)
    if isinstance(out, ApiError) and out.code == "unknown_signer":
        # a customer registered through another node a moment ago may not be applied
        # here yet: catch up with the leader's commit index, then judge again
        try:
            await node.ensure_current()
        except NodeError:
            raise out from None
        out = _answer(node, parsed, request.remote, part=part)
    if isinstance(out, ApiError):
        raise out
    if wait is None:
        return web.json_response(out, status=202)
    t0 = time.monotonic()
    # admitted just now, with no await since: it is in the mempool, and the block that
    # commits it takes it out and sets this future in one step (no lookup needed)
    rec = await _wait(node.wait_commit(parsed.tx_id), timeout)
    stage("reply", time.monotonic() - node.applier.applied_at)
    node.metrics.commit_latency.observe(time.monotonic() - t0)
    return web.json_response(_committed(parsed.tx_id, rec.height, rec.code))


async def _wait(fut: asyncio.Future, timeout: float):
    try:
        return await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        raise ApiError(504, "timeout", f"not committed within {timeout} s") from None


def _about(raw: bytes, ctype: str) -> int:
    """About how many envelopes a batch's body holds, before it is decoded (one "sig"
    key each): for counting the work a node has taken on, nothing else."""
    return raw.count(b"\xa3sig" if ctype == "application/msgpack" else b'"sig"')


async def submit_batch(request: web.Request) -> web.Response:
    node = request.app[NODE]
    _refusing(node)
    await _shed(node)
    t0 = time.monotonic()
    raw = await raw_body(request)
    t1 = time.monotonic()
    about = _about(raw, request.content_type)
    await _shed(node, about)
    node.checking += about
    try:
        parsed = await node.checker.run(_parse_batch, raw, request.content_type)
    finally:
        node.checking -= about
    t2 = time.monotonic()
    out = []
    for at in range(0, len(parsed), ADMIT_CHUNK):
        if at:
            await asyncio.sleep(0)   # let Raft and other requests in between
        chunk = parsed[at:at + ADMIT_CHUNK]
        committed = node.dd.ledger.committed_among([p for p, _ in chunk if isinstance(p, Tx)])
        parts: list = []
        for p, part in chunk:
            a = _answer(node, p, request.remote, isinstance(p, Tx) and p.tx_id in committed, part, parts)
            out.append({"status_code": a.status, **a.body()} if isinstance(a, ApiError) else {"status_code": 202, **a})
        if parts:   # the chunk's private parts: one write, one frame per peer
            node.private.deliver(parts)
    n = len(parsed)
    node.metrics.stage("receive", t1 - t0, n)
    node.metrics.stage("verify", t2 - t1, n)
    node.metrics.stage("admit", time.monotonic() - t2, n)
    return web.json_response(out, status=202)


async def tx_status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    tx_id = request.match_info["tx_id"]
    if len(tx_id) != 64 or any(c not in "0123456789abcdef" for c in tx_id):
        raise ApiError(400, "bad_tx_id", "a tx_id is 64 lowercase hex characters")
    rec = node.tx_record(tx_id)
    if rec is None:
        # not committed here: say so only once this node has applied all the leader had
        # committed (a read index), so that a transaction whose commit was acknowledged
        # anywhere never reads as unknown on a node left behind; 503 when it cannot tell
        try:
            await node.ensure_current(2.0)
        except NodeError as e:
            raise ApiError(503, "not_current", f"cannot tell whether it is committed: {e}", 1) from None
        rec = node.tx_record(tx_id)
    if rec is not None:
        return web.json_response(_committed(tx_id, rec.height, rec.code))
    status = "pending" if tx_id in node.mempool else "unknown"
    return web.json_response({"tx_id": tx_id, "status": status, "height": None, "valid": None, "code": None})
