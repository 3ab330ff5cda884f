"""Reads that involve private data or a reader's identity (SPEC §4): a customer's record
and profile (the audited read by an org, the customer's own read), the access log,
consents and their receipts, the customer's export, a ticket's texts and an org's
reviews. Requests are signed (see node.reqauth); a profile reaches an org only once its
`access.read` entry is committed valid (see node.disclosure)."""
from __future__ import annotations

import asyncio
import time

from aiohttp import web

from crmledger.ledger.requests import parse_profile_read
from crmledger.ledger.statekeys import k_review, k_ticket
from crmledger.ledger.tx import admit, sign_tx
from crmledger.node.admission import Refused
from crmledger.node.api import NODE, ApiError, bad_query, path_id
from crmledger.node.audit import access_log, entries, reads_among
from crmledger.node.consent_receipt import consent_receipt, consent_state
from crmledger.node.mempool import MempoolFull
from crmledger.node.peercalls import CallFailed
from crmledger.node.reqauth import SignedRequest, Unauthorized, signed_request, staff_of
from crmledger.node.runtime import Node, NodeError

READ_TIMEOUT_S = 10.0   # how long an audited read waits for its entry to commit


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _signed_current(request: web.Request) -> SignedRequest | None:
    """The request's signature, checked; a signed read then waits until this node is
    current (see `_current`)."""
    req = _signed(request)
    if req is not None:
        await _current(request.app[NODE])
    return req


def _signed(request: web.Request) -> SignedRequest | None:
    try:
        return signed_request(request, request.app[NODE].replay)
    except Unauthorized as e:
        raise ApiError(401, "unauthorized", str(e)) from None


def _record(node: Node, cid: str) -> dict:
    rec = node.dd.ledger.customer(cid)
    if rec is None:
        raise ApiError(404, "not_found", "no such customer")
    return rec


def _public(node: Node, cid: str, rec: dict) -> dict:
    return {"customer_id": cid, "owner": rec["owner"], "profile_hash": rec["profile_hash"],
            "customer_key": rec["key"], "erased": rec["erased"], "consents": node.dd.ledger.consents(cid)}


def _gone(cid: str) -> ApiError:
    return ApiError(410, "erased", f"customer {cid} is erased: no personal data is held any more")


async def _current(node: Node) -> None:
    """Private data is served only by a node that has applied everything committed before
    the read came (every erasure, and the writes its reader made through other nodes)."""
    try:
        await node.ensure_current()
    except NodeError as e:
        raise ApiError(503, "catching_up", str(e), 1) from None


def _is_customer(req: SignedRequest | None, rec: dict) -> bool:
    return req is not None and rec["key"] is not None and req.signer == rec["key"]


def _customer_or_owner(node: Node, req: SignedRequest | None, rec: dict) -> None:
    if req is None:
        raise ApiError(401, "unauthorized", "sign this request with the customer's key or an owner org's key")
    staff = staff_of(node.consortium, node.dd.ledger.get, req.signer)
    if not (_is_customer(req, rec) or (staff is not None and staff[0] == rec["owner"])):
        raise ApiError(403, "forbidden", "only the customer or the owner org may read this")


# -- the record, and the profile -------------------------------------------------------------------
async def customer(request: web.Request) -> web.Response:
    node = request.app[NODE]
    cid = path_id(request, "customer_id")
    req = _signed(request)
    if req is None:
        if "purpose" in request.query:
            raise ApiError(401, "unauthorized", "a read of profile fields is signed by the reader (SPEC §4)")
        return web.json_response(_public(node, cid, _record(node, cid)))
    if "purpose" in request.query or "fields" in request.query:
        return web.json_response(await _audited_read(node, req, cid))
    await _current(node)
    rec = _record(node, cid)
    if not _is_customer(req, rec):
        raise ApiError(403, "forbidden", "an org reads a profile for a stated purpose (?purpose=...)")
    if rec["erased"]:
        raise _gone(cid)
    vals = await node.disclosure.values(req, {rec["owner"]: [rec["profile_hash"]]})
    if rec["profile_hash"] not in vals:
        raise ApiError(503, "owner_unreachable", "no node of the owner org answered", 1)
    return web.json_response({**_public(node, cid, rec), "profile": vals[rec["profile_hash"]][1]})


async def _audited_read(node: Node, req: SignedRequest, cid: str) -> dict:
    """File the read as an `access.read` entry, and answer with the fields once it is
    committed valid; a refused entry stays on the chain and is answered 403."""
    staff = staff_of(node.consortium, node.dd.ledger.get, req.signer)
    if staff is None:
        raise ApiError(403, "unknown_signer", "the signer is not an admin or agent of any org")
    asked = parse_profile_read(req.path)
    if isinstance(asked, str):
        raise bad_query(asked)
    rec = _record(node, cid)
    if rec["erased"]:
        raise _gone(cid)
    if not node.accepting:
        raise ApiError(503, "shutting_down", "this node is stopping", 1)
    tx = admit(sign_tx(node.key, "access.read", node.me.org, "read-" + req.sig[:59], _now_ms(), {
        "customer_id": cid, "reader": req.signer, "reader_org": staff[0], "fields": asked.fields,
        "purpose": asked.purpose, "request": req.as_map()}))
    try:
        node.admit(tx)
    except Refused as e:
        raise ApiError(e.status, e.code, e.detail, e.retry_after) from None
    except MempoolFull:
        raise ApiError(503, "overloaded", "the mempool is full", 1) from None
    try:
        entry = await node.commit_of(tx.tx_id, READ_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise ApiError(504, "timeout", f"the access entry {tx.tx_id} did not commit in {READ_TIMEOUT_S} s",
                       extra={"access_tx": tx.tx_id}) from None
    filed = {"access_tx": tx.tx_id, "height": entry.height, "code": entry.code}
    if entry.code == "erased":
        raise _gone(cid)
    if entry.code != "valid":
        raise ApiError(403, entry.code, f"the read was refused on the chain ({entry.code}): no consent of "
                                        "this customer covers it, or the request was not acceptable", extra=filed)
    rec = _record(node, cid)
    try:
        profile = await node.disclosure.profile_for_read(entry, rec["owner"])
    except CallFailed as e:
        if e.code == "erased":
            raise _gone(cid) from None
        raise ApiError(503, "owner_unreachable", f"no node of the owner org released the profile: {e.detail}", 1,
                       extra=filed) from None
    return {**_public(node, cid, rec), "profile": profile, **filed}


# -- the audit trail of reads, consents ---------------------------------------------------------------
async def access(request: web.Request) -> web.Response:
    node = request.app[NODE]
    cid = path_id(request, "customer_id")
    req = await _signed_current(request)
    _customer_or_owner(node, req, _record(node, cid))
    log = await node.reader.run(access_log, cid, node.dd.ledger.history_candidates(cid))
    return web.json_response({"customer_id": cid, "access": log})


def _consents(node: Node, cid: str) -> list[dict]:
    now = _now_ms()
    return [{"grantee_org": org, **c, "state": consent_state(c, now)}
            for org, c in sorted(node.dd.ledger.consents(cid).items())]


async def consents(request: web.Request) -> web.Response:
    node = request.app[NODE]
    cid = path_id(request, "customer_id")
    _signed(request)   # a signature, when sent, must hold
    _record(node, cid)
    return web.json_response({"customer_id": cid, "consents": _consents(node, cid)})


async def receipt(request: web.Request) -> web.Response:
    node = request.app[NODE]
    cid = path_id(request, "customer_id")
    org = path_id(request, "grantee_org")
    _signed(request)
    rec = _record(node, cid)
    c = node.dd.ledger.consents(cid).get(org)
    if c is None:
        raise ApiError(404, "not_found", f"the customer gave no consent to {org}")
    return web.json_response(consent_receipt(node.consortium, cid, rec, org, c, _now_ms()))


# -- tickets and reviews ------------------------------------------------------------------------------
def _ticket_hashes(t: dict) -> list[str]:
    return [s["note_hash"] for s in t["timeline"] if s.get("note_hash")]


def _with_texts(t: dict, vals: dict[str, list]) -> dict:
    return {**t, "timeline": [{**s, "text": vals[s["note_hash"]][1]} if s.get("note_hash") in vals else s
                              for s in t["timeline"]]}


async def ticket(request: web.Request) -> web.Response:
    """The timeline; signed by the customer or the ticket's org, with its texts."""
    node = request.app[NODE]
    tid = path_id(request, "ticket_id")
    req = await _signed_current(request)
    t = node.dd.ledger.ticket(tid)
    if t is None:
        raise ApiError(404, "not_found", "no such ticket")
    if req is not None:
        t = _with_texts(t, await node.disclosure.values(req, {t["org"]: _ticket_hashes(t)}))
    return web.json_response({"ticket_id": tid, **t})


MAX_ORG_TICKETS = 500


async def org_tickets(request: web.Request) -> web.Response:
    """An org's tickets for its staff: escalated first, then the newest."""
    node = request.app[NODE]
    org = path_id(request, "org")
    req = _signed(request)
    staff = None if req is None else staff_of(node.consortium, node.dd.ledger.get, req.signer)
    if staff is None or staff[0] != org:
        raise ApiError(401 if req is None else 403, "forbidden", f"signed by an admin or agent of {org} only")
    found = [{"ticket_id": k[3:].decode(), **t} for k, t in node.dd.ledger.scan(b"ti/") if t["org"] == org]
    found.sort(key=lambda t: (not t["escalated"], t["status"] == "closed", -t["timeline"][0]["ts"]))
    return web.json_response({"org": org, "count": len(found), "tickets": found[:MAX_ORG_TICKETS]})


async def reviews(request: web.Request) -> web.Response:
    node = request.app[NODE]
    org = path_id(request, "org")
    if org not in node.consortium.orgs:
        raise ApiError(404, "not_found", "no such org")
    led = node.dd.ledger
    out = []
    for k, r in led.scan(k_review(org, "")):
        item = node.dd.private.get(r["text_hash"])
        out.append({"review_id": k.split(b"\x00", 1)[1].decode(), "rating": r["rating"], "ticket_id": r["ticket_id"],
                    "customer_id": r["customer_id"], "height": r["height"], "ts": r["ts"],
                    "text": item.value if item is not None else None})
    mean = round(sum(r["rating"] for r in out) / len(out), 3) if out else None
    return web.json_response({"org": org, "count": len(out), "mean": mean, "reviews": out})


# -- everything about the customer -----------------------------------------------------------------
async def export(request: web.Request) -> web.Response:
    """One document with everything held about the customer (GDPR Art. 15 and 20)."""
    node = request.app[NODE]
    cid = path_id(request, "customer_id")
    req = await _signed_current(request)
    rec = _record(node, cid)
    if not _is_customer(req, rec):
        raise ApiError(401 if req is None else 403, "forbidden", "only the customer, with their own key, exports")
    led = node.dd.ledger
    history = await node.reader.run(entries, cid, led.history_candidates(cid))
    valid = [e for e in history if e["code"] == "valid"]
    tickets = {}
    for e in valid:
        if e["type"] == "ticket.open":
            t = led.get(k_ticket(e["payload"]["ticket_id"]))
            if t is not None:
                tickets[e["payload"]["ticket_id"]] = t
    reviews_ = [{"review_id": e["payload"]["review_id"], **r} for e in valid if e["type"] == "review.post"
                for r in [led.get(k_review(e["payload"]["org"], e["payload"]["review_id"]))] if r is not None]
    by_org: dict[str | None, list[str]] = {}
    if not rec["erased"]:
        by_org.setdefault(rec["owner"], []).append(rec["profile_hash"])
    for t in tickets.values():
        by_org.setdefault(t["org"], []).extend(_ticket_hashes(t))
    by_org[None] = [r["text_hash"] for r in reviews_]
    missing: set[str] = set()
    vals = await node.disclosure.values(req, by_org, missing)
    if missing:
        raise ApiError(503, "owner_unreachable", f"no node of {', '.join(sorted(missing))} answered: the export "
                                                 "would be incomplete", 1)
    profile = vals.get(rec["profile_hash"]) if not rec["erased"] else None
    doc = {
        "format": "crmledger-export/v1", "generated_ts": _now_ms(), "customer_id": cid,
        "record": _public(node, cid, rec),
        "profile": None if profile is None else {"salt": profile[0], "profile": profile[1]},
        "consents": [{**c, "receipt": consent_receipt(node.consortium, cid, rec, c["grantee_org"], c, _now_ms())}
                     for c in _consents(node, cid)],
        "access": reads_among(node.consortium, history),   # from the trail read above, not read again
        "tickets": [{"ticket_id": tid, **_with_texts(t, vals),
                     "salts": {h: vals[h][0] for h in _ticket_hashes(t) if h in vals}}
                    for tid, t in tickets.items()],
        "loyalty": {"balances": led.balances(cid),
                    "movements": [{k: e[k] for k in ("height", "timestamp", "tx_id", "type", "org")}
                                  | {"program": e["payload"]["program"], "amount": e["payload"]["amount"]}
                                  for e in valid if e["type"] in ("loyalty.issue", "loyalty.redeem")]},
        "reviews": [{**r, "text": vals[r["text_hash"]][1] if r["text_hash"] in vals else None,
                     "salt": vals[r["text_hash"]][0] if r["text_hash"] in vals else None} for r in reviews_],
        "purge_receipts": [{"node": _node_of(node, e["signer"]), "cause": e["payload"]["cause"],
                            "kind": e["payload"]["kind"], "height": e["height"], "timestamp": e["timestamp"],
                            "tx_id": e["tx_id"]} for e in valid if e["type"] == "privacy.purged"],
        "history": history,
    }
    return web.json_response(doc)


def _node_of(node: Node, pubkey: str) -> str | None:
    n = node.consortium.node_by_key(pubkey)
    return n.node_id if n is not None else None
