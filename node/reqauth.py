"""Signed requests (SPEC §4): the `X-Signer`, `X-Ts` and `X-Sig` headers checked against
the request's method and path with its query as sent; a request more than 300 s from
this node's clock, or whose signature this node has seen before, is refused (401). And
who a signer is: an admin or agent of an org, or a customer's own key."""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable, NamedTuple

from aiohttp import web

from crmledger.ledger.consortium import Consortium
from crmledger.ledger.requests import REQUEST_WINDOW_MS, request_ok
from crmledger.ledger.statekeys import k_identity

MAX_REMEMBERED = 200_000   # signatures remembered against replay (each for twice the window)


class SignedRequest(NamedTuple):
    signer: str
    method: str
    path: str      # with its query, as sent
    ts: int
    sig: str

    def as_map(self) -> dict:
        return {"method": self.method, "path": self.path, "ts": self.ts, "sig": self.sig}


class ReplayGuard:
    def __init__(self) -> None:
        self.seen: OrderedDict[str, float] = OrderedDict()   # signature -> when it may be forgotten

    def first_time(self, sig: str, now: float) -> bool:
        while self.seen and (next(iter(self.seen.values())) < now or len(self.seen) >= MAX_REMEMBERED):
            self.seen.popitem(last=False)
        if sig in self.seen:
            return False
        self.seen[sig] = now + 2 * REQUEST_WINDOW_MS / 1000
        return True


class Unauthorized(Exception):
    """A signed request refused (HTTP 401); the message says why."""


def _unauthorized(detail: str) -> Unauthorized:
    return Unauthorized(detail)


def signed_request(request: web.Request, guard: ReplayGuard) -> SignedRequest | None:
    """The request's signature, checked; None for a request without one."""
    h = request.headers
    if not any(k in h for k in ("X-Signer", "X-Ts", "X-Sig")):
        return None
    signer, ts, sig = h.get("X-Signer", ""), h.get("X-Ts", ""), h.get("X-Sig", "")
    if len(signer) != 64 or not ts.isascii() or not ts.isdigit() or len(ts) > 18 or len(sig) != 128:
        raise _unauthorized("X-Signer is 64 hex characters, X-Ts Unix ms, X-Sig 128 hex characters")
    req = SignedRequest(signer, request.method, request.raw_path, int(ts), sig)
    if abs(req.ts - time.time() * 1000) > REQUEST_WINDOW_MS:
        raise _unauthorized("the request's X-Ts is more than 300 s from this node's clock")
    if not request_ok(signer, req.method, req.path, req.ts, sig):
        raise _unauthorized("X-Sig does not verify for X-Signer over this method, path and X-Ts")
    if not guard.first_time(sig, time.monotonic()):
        raise _unauthorized("this request signature was used before")
    return req


def staff_of(consortium: Consortium, get: Callable[[bytes], Any], pubkey: str) -> tuple[str, str] | None:
    """(org, role) of a member org's admin or agent key."""
    for org, admins in consortium.orgs.items():
        if pubkey in admins:
            return org, "admin"
    rec = get(k_identity(pubkey))
    return (rec["org"], rec["role"]) if rec is not None and rec["org"] in consortium.orgs else None
