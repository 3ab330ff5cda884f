"""Calls between nodes over the peer links: a `call` frame names an operation and its
arguments, and the `reply` frame with the same id carries the answer. Used for what a
node asks another for and waits on: private data it may see (a profile read on the
chain, a customer's own read, what a restarted node lacks) and the leader's commit
index. Each operation is handled by an async function registered by name; a call that is
not answered in time (the peer is down, or slow) raises `CallFailed`, never hangs."""
from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Awaitable, Callable

from crmledger.node.peers import PeerLinks
from crmledger.node.wire import WireError

log = logging.getLogger("crmledger.node")
Handler = Callable[[str, dict], Awaitable[dict]]   # (peer node_id, args) -> answer
MAX_PENDING = 4096
FINAL = frozenset({"forbidden", "erased", "unauthorized"})   # refusals every peer would give


class CallFailed(Exception):
    """No answer (`code` "unreachable") or the peer refused (its error code)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class PeerCalls:
    def __init__(self, peers: PeerLinks) -> None:
        self.peers = peers
        self.handlers: dict[str, Handler] = {}
        self.pending: dict[int, tuple[str, asyncio.Future]] = {}   # id -> (peer asked, its answer)
        self.ids = itertools.count(1)
        self.tasks: set[asyncio.Task] = set()

    def handle(self, op: str, handler: Handler) -> None:
        self.handlers[op] = handler

    async def call(self, peer: str, op: str, args: dict, timeout: float = 5.0) -> dict:
        if not self.peers.connected.get(peer):
            raise CallFailed("unreachable", f"no link to {peer}")
        if len(self.pending) >= MAX_PENDING:
            raise CallFailed("unreachable", "too many calls to peers in flight")
        cid = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[cid] = (peer, fut)
        try:
            self.peers.send(peer, "call", {"id": cid, "op": op, "args": args})
            ok, body = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise CallFailed("unreachable", f"{peer} did not answer in {timeout} s") from None
        finally:
            self.pending.pop(cid, None)
        if not ok:
            raise CallFailed(body.get("error", "refused"), body.get("detail", ""))
        return body

    async def first(self, peers: list[str], op: str, args: dict, timeout: float = 5.0) -> dict:
        """The answer of the first of `peers` that gives one; a refusal that any peer would
        give (`forbidden`, `erased`, `unauthorized`) is not asked again of the others."""
        err = CallFailed("unreachable", "no peer to ask")
        for p in peers:
            try:
                return await self.call(p, op, args, timeout)
            except CallFailed as e:
                err = e
                if e.code in FINAL:
                    break
        raise err

    # -- frames from the peer links --------------------------------------------------------
    def on_call(self, peer: str, body) -> None:
        if type(body) is not dict or type(body.get("id")) is not int or type(body.get("args")) is not dict \
                or body.get("op") not in self.handlers:
            raise WireError("a call frame of the wrong shape")
        t = asyncio.get_running_loop().create_task(self._answer(peer, body["id"], body["op"], body["args"]))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _answer(self, peer: str, cid: int, op: str, args: dict) -> None:
        try:
            out = [True, await self.handlers[op](peer, args)]
        except CallFailed as e:
            out = [False, {"error": e.code, "detail": e.detail}]
        except Exception:   # a peer's request must never take the node down
            log.exception("answering a %s call from %s", op, peer)
            out = [False, {"error": "internal", "detail": "the peer failed to answer"}]
        self.peers.send(peer, "reply", {"id": cid, "answer": out})

    def on_reply(self, peer: str, body) -> None:
        if type(body) is not dict or type(body.get("id")) is not int or type(body.get("answer")) is not list \
                or len(body["answer"]) != 2 or type(body["answer"][1]) is not dict:
            raise WireError("a reply frame of the wrong shape")
        asked, fut = self.pending.get(body["id"], (None, None))
        if asked == peer and not fut.done():   # only the peer asked answers
            fut.set_result(tuple(body["answer"]))
