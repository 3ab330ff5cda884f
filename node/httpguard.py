"""What one HTTP client may hold of a node: at most `client_connections` open connections
per address (past that a new one gets a JSON 503 and is closed), the headers of a request
within `header_timeout_s` of connecting and within `idle_timeout_s` of the previous
answer (a client that trickles its headers or sits idle is closed), and errors the HTTP
parser finds (an over-long request line, a bad header) answered in JSON like every
other error.

aiohttp's server offers no hook for the first two, so `GuardedRunner` gives the server it
makes a subclass whose request handlers ask the guard before they serve a connection,
tell it when one is lost, and answer errors in JSON; a middleware tells the guard when a request's headers are in
and when its answer is done."""
from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from crmledger.node.config import LimitsConfig


class ConnectionGuard:
    def __init__(self, limits: LimitsConfig) -> None:
        self.limits = limits
        self.per_client: Counter[str] = Counter()
        self.conns: dict[RequestHandler, tuple[str, asyncio.BaseTransport]] = {}
        self.deadline: dict[RequestHandler, float] = {}   # connections between requests
        self.refused = 0
        self.timed_out = 0

    def opened(self, handler: RequestHandler, transport: asyncio.BaseTransport) -> bool:
        """Whether a new connection may be served; one over the cap is answered and closed."""
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self.per_client[client] >= self.limits.client_connections:
            self.refused += 1
            body = json.dumps({"error": "too_many_connections",
                               "detail": f"at most {self.limits.client_connections} connections per client"})
            transport.write(f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                            f"Retry-After: 1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
                            f"{body}".encode())
            transport.close()
            return False
        self.per_client[client] += 1
        self.conns[handler] = (client, transport)
        self.deadline[handler] = time.monotonic() + self.limits.header_timeout_s
        return True

    def closed(self, handler: RequestHandler) -> None:
        got = self.conns.pop(handler, None)
        self.deadline.pop(handler, None)
        if got is not None:
            self.per_client[got[0]] -= 1
            if not self.per_client[got[0]]:
                del self.per_client[got[0]]

    def request_started(self, handler) -> None:
        self.deadline.pop(handler, None)

    def request_done(self, handler) -> None:
        if handler in self.conns:
            self.deadline[handler] = time.monotonic() + self.limits.idle_timeout_s

    def counts(self) -> dict[str, int]:
        return {"too_many_connections": self.refused, "timed_out": self.timed_out}

    def sweep(self, now: float) -> None:
        """Close every connection whose next request's headers are overdue."""
        for handler, due in list(self.deadline.items()):
            if due <= now:
                self.timed_out += 1
                self.deadline.pop(handler, None)
                self.conns[handler][1].close()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.sweep(time.monotonic())


GUARD = web.AppKey("guard", ConnectionGuard)


@web.middleware
async def guard_requests(request: web.Request, handler):
    guard = request.app[GUARD]
    guard.request_started(request.protocol)
    try:
        return await handler(request)
    finally:
        guard.request_done(request.protocol)


async def guard_sweeper(app: web.Application):
    task = asyncio.create_task(app[GUARD].run())
    yield
    task.cancel()


class _JsonErrorHandler(RequestHandler):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._manager.guard.opened(self, transport):   # otherwise answered and closed: nothing starts
            super().connection_made(transport)

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)   # logs, and checks nothing was sent yet
        phrase = HTTPStatus(status).phrase
        detail = phrase
        if status < 500:
            said = (getattr(exc, "message", None) or message or str(exc or "")).strip()
            detail = f"{phrase}: {said.splitlines()[0][:120]}" if said else phrase
        resp = web.json_response({"error": phrase.lower().replace(" ", "_"), "detail": detail}, status=status)
        resp.force_close()
        return resp


class _GuardedServer(web.Server):
    guard: ConnectionGuard

    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.guard.closed(handler)


class GuardedRunner(web.AppRunner):
    def __init__(self, app: web.Application, **kwargs) -> None:
        super().__init__(app, keepalive_timeout=app[GUARD].limits.idle_timeout_s, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer
        server.guard = self.app[GUARD]
        return server
