"""The asyncio client: every transaction type of SPEC §3 built and signed with typed
helpers, submitted (waiting for the commit, or in batches), signed reads, and the event
stream. It talks to any node of a list: a node that is down or refuses a connection
is skipped for the next; a node that sheds load (503 or 429 with `Retry-After`) is
asked again after the time it names, a bounded number of times. Errors from the API are
raised as `ApiError` carrying its code."""
from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import time
from typing import Any, AsyncIterator

import aiohttp

from crmledger.ledger.keys import SigningKey
from crmledger.ledger.requests import sign_request
from crmledger.ledger.tx import HASHED, private_hash, sign_tx

from .errors import ApiError, Unavailable

MAX_RETRIES = 20          # answers with Retry-After, per call
MAX_RETRY_WAIT_S = 5.0    # the longest wait between two tries


def _now_ms() -> int:
    return int(time.time() * 1000)


class AsyncClient:
    """`nodes`: base URLs ("http://127.0.0.1:8001") or host:port; `key`: the signer (an
    org admin's or agent's key with `org`, or a customer's key with org "")."""

    def __init__(self, nodes: list[str], key: SigningKey | None = None, org: str = "",
                 timeout: float = 30.0) -> None:
        if not nodes:
            raise ValueError("name at least one node")
        self.nodes = [n if n.startswith(("http://", "https://")) else f"http://{n}" for n in nodes]
        self.key = key
        self.org = org
        self.timeout = timeout
        self.current = 0   # the node that answered last is asked first
        self._last_ts = 0  # of the last signed request: each is signed at a later millisecond
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    def _request_ts(self) -> int:
        """The time to sign a request with: now, or a millisecond after the last one, so
        that a request retried within the same millisecond is not refused as a replay."""
        self._last_ts = max(_now_ms(), self._last_ts + 1)
        return self._last_ts

    # -- requests ------------------------------------------------------------------------------
    async def request(self, method: str, path: str, body: Any = None, signed: bool = False) -> Any:
        """The decoded answer of the first node that gives one. A signed request is signed
        anew for each try (a node refuses a signature it has seen)."""
        tries = 0
        last: Exception | None = None
        n = len(self.nodes)
        at = self.current
        while tries < MAX_RETRIES:
            url = self.nodes[at % n]
            headers = {"Content-Type": "application/json"}
            if signed:
                if self.key is None:
                    raise ValueError("a signed request needs a key")
                headers.update(sign_request(self.key, method, path, self._request_ts()))
            data = None if body is None else json.dumps(body).encode()
            try:
                async with self._http().request(method, url + path, data=data, headers=headers) as r:
                    raw = await r.read()
                    out = json.loads(raw) if raw else None
                    retry = r.headers.get("Retry-After")
                    if r.status in (429, 503) and retry is not None and retry.isdigit():
                        tries += 1
                        last = ApiError(r.status, out or {})
                        # at least as long as asked, spread so that clients refused together
                        # do not all come back together
                        await asyncio.sleep(min(int(retry), MAX_RETRY_WAIT_S) * random.uniform(1.0, 1.5))
                        if r.status == 503:
                            at += 1   # another node may do better
                        continue
                    if r.status >= 400:
                        raise ApiError(r.status, out if isinstance(out, dict) else {})
                    self.current = at % n
                    return out
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError, ValueError) as e:
                last = e
                tries += 1
                at += 1
                if tries % n == 0:
                    await asyncio.sleep(min(0.1 * tries, MAX_RETRY_WAIT_S))
        raise Unavailable(f"no node answered {method} {path}: {last}")

    # -- transactions --------------------------------------------------------------------------
    def envelope(self, type_: str, payload: dict, private: dict | str | None = None, *,
                 nonce: str | None = None) -> dict:
        """A signed envelope; with `private` (a profile map, or a text), a fresh salt is
        drawn, the payload's hash field filled in, and the private part put beside it."""
        if self.key is None:
            raise ValueError("signing needs a key")
        payload = dict(payload)
        part = None
        if private is not None:
            if type_ not in HASHED:
                raise ValueError(f"a {type_} transaction carries no private part")
            kind, field = HASHED[type_]
            salt = os.urandom(16)
            payload[field] = private_hash(salt, private)
            part = {"salt": salt.hex(), "profile" if kind == "profile" else "text": private}
        env = sign_tx(self.key, type_, self.org, nonce or secrets.token_hex(12), _now_ms(), payload)
        if part is not None:
            env["private"] = part
        return env

    async def submit(self, type_: str, payload: dict, private: dict | str | None = None, *, wait: bool = True,
                     nonce: str | None = None) -> dict:
        """Submit one transaction; with `wait`, its committed record (`valid`, `code`).
        A transaction already committed (sent again after a lost answer) is answered with
        its record too."""
        env = self.envelope(type_, payload, private, nonce=nonce)
        try:
            return await self.request("POST", "/v1/tx" + ("?wait=commit" if wait else ""), env)
        except ApiError as e:
            if e.code == "already_committed":
                return await self.tx(e.body["tx_id"])
            raise

    async def submit_batch(self, envelopes: list[dict]) -> list[dict]:
        """Envelopes (see `envelope`) in one request: each answered on its own."""
        return await self.request("POST", "/v1/tx/batch", envelopes)

    async def tx(self, tx_id: str) -> dict:
        return await self.request("GET", f"/v1/tx/{tx_id}")

    # typed helpers, one per type of SPEC §3
    async def register_identity(self, pubkey: str, role: str = "agent", **kw) -> dict:
        return await self.submit("identity.register", {"pubkey": pubkey, "role": role}, **kw)

    async def register_customer(self, customer_id: str, profile: dict[str, str], customer_key: str | None = None,
                                **kw) -> dict:
        return await self.submit("customer.register", {"customer_id": customer_id, "customer_key": customer_key},
                                 profile, **kw)

    async def update_customer(self, customer_id: str, profile: dict[str, str], **kw) -> dict:
        return await self.submit("customer.update", {"customer_id": customer_id}, profile, **kw)

    async def grant_consent(self, customer_id: str, grantee_org: str, scope: list[str], purpose: str,
                            expires_ts: int | None = None, **kw) -> dict:
        return await self.submit("consent.grant", {"customer_id": customer_id, "grantee_org": grantee_org,
                                                   "scope": scope, "purpose": purpose, "expires_ts": expires_ts}, **kw)

    async def revoke_consent(self, customer_id: str, grantee_org: str, **kw) -> dict:
        return await self.submit("consent.revoke", {"customer_id": customer_id, "grantee_org": grantee_org}, **kw)

    async def erase_customer(self, customer_id: str, **kw) -> dict:
        return await self.submit("customer.erase", {"customer_id": customer_id}, **kw)

    async def open_ticket(self, ticket_id: str, customer_id: str, channel: str, subject: str, **kw) -> dict:
        return await self.submit("ticket.open", {"ticket_id": ticket_id, "customer_id": customer_id,
                                                 "channel": channel}, subject, **kw)

    async def update_ticket(self, ticket_id: str, status: str, note: str, **kw) -> dict:
        return await self.submit("ticket.update", {"ticket_id": ticket_id, "status": status}, note, **kw)

    async def post_review(self, review_id: str, customer_id: str, org: str, ticket_id: str, rating: int, text: str,
                          **kw) -> dict:
        return await self.submit("review.post", {"review_id": review_id, "customer_id": customer_id, "org": org,
                                                 "ticket_id": ticket_id, "rating": rating}, text, **kw)

    async def define_program(self, program: str, partners: list[str], **kw) -> dict:
        return await self.submit("loyalty.program", {"program": program, "partners": partners}, **kw)

    async def issue_points(self, customer_id: str, program: str, amount: int, **kw) -> dict:
        return await self.submit("loyalty.issue", {"customer_id": customer_id, "program": program,
                                                   "amount": amount}, **kw)

    async def redeem_points(self, customer_id: str, program: str, amount: int, at_org: str, **kw) -> dict:
        return await self.submit("loyalty.redeem", {"customer_id": customer_id, "program": program,
                                                    "amount": amount, "at_org": at_org}, **kw)

    # -- reads ---------------------------------------------------------------------------------
    async def status(self) -> dict:
        return await self.request("GET", "/v1/status")

    async def block(self, height: int | str = "latest", full: bool = False) -> dict:
        return await self.request("GET", f"/v1/blocks/{height}" + ("?full=1" if full else ""))

    async def customer(self, customer_id: str, purpose: str | None = None, fields: list[str] | None = None,
                       signed: bool | None = None) -> dict:
        """The public record; signed by an org with a purpose (and fields): the fields,
        once the read is on the chain; signed by the customer: the whole profile."""
        path = f"/v1/customers/{customer_id}"
        if purpose is not None:
            path += f"?purpose={purpose}" + (f"&fields={','.join(fields)}" if fields else "")
        return await self.request("GET", path, signed=self.key is not None if signed is None else signed)

    async def access_log(self, customer_id: str) -> list[dict]:
        return (await self.request("GET", f"/v1/customers/{customer_id}/access", signed=True))["access"]

    async def consents(self, customer_id: str) -> list[dict]:
        return (await self.request("GET", f"/v1/customers/{customer_id}/consents"))["consents"]

    async def consent_receipt(self, customer_id: str, grantee_org: str) -> dict:
        return await self.request("GET", f"/v1/customers/{customer_id}/consents/{grantee_org}/receipt")

    async def export(self, customer_id: str) -> dict:
        return await self.request("GET", f"/v1/customers/{customer_id}/export", signed=True)

    async def ticket(self, ticket_id: str, signed: bool = True) -> dict:
        return await self.request("GET", f"/v1/tickets/{ticket_id}", signed=signed and self.key is not None)

    async def loyalty(self, customer_id: str) -> dict:
        return (await self.request("GET", f"/v1/loyalty/{customer_id}"))["balances"]

    async def reviews(self, org: str) -> dict:
        return await self.request("GET", f"/v1/orgs/{org}/reviews")

    async def history(self, customer_id: str, order: str = "asc", page: int = 1000) -> AsyncIterator[dict]:
        """Every committed transaction touching the customer, a page at a time."""
        after = None
        while True:
            q = f"?order={order}&limit={page}" + (f"&after={after}" if after else "")
            doc = await self.request("GET", f"/v1/customers/{customer_id}/history{q}")
            for e in doc["history"]:
                yield e
            after = doc["next"]
            if after is None:
                return

    async def events(self, from_height: int = 1) -> AsyncIterator[tuple[str, dict]]:
        """(event name, data) from the nodes' event streams: every block from
        `from_height` on, in order, once; a dropped stream is resumed, at the next node if
        need be, after the last block seen."""
        next_height = from_height
        at = self.current
        failures = 0
        while True:
            url = self.nodes[at % len(self.nodes)]
            try:
                timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
                async with self._http().get(f"{url}/v1/events?from_height={next_height}", timeout=timeout) as r:
                    if r.status != 200:
                        raise aiohttp.ClientConnectionError(f"HTTP {r.status}")
                    failures = 0
                    name = None
                    async for line in r.content:
                        text = line.decode().rstrip("\n")
                        if text.startswith("event: "):
                            name = text[7:]
                        elif text.startswith("data: ") and name is not None:
                            data = json.loads(text[6:])
                            if name == "block":
                                if data["height"] < next_height:
                                    continue
                                next_height = data["height"] + 1
                            yield name, data
                            name = None
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                pass
            # the stream ended (the node stopped, or the connection dropped): next node
            failures += 1
            at += 1
            await asyncio.sleep(min(0.1 * failures, MAX_RETRY_WAIT_S))
