"""Ledger rules of privacy: audited profile reads (`access.read`), judged at block time
against the customer's consents, and purge receipts (`privacy.purged`)."""
from __future__ import annotations

from .requests import REQUEST_WINDOW_MS, parse_profile_read, request_ok, scope_covers
from .rulectx import VALID, Ctx, customer, node_org
from .statekeys import k_cause, k_purged, k_request
from .tx import Tx

def access_read(ctx: Ctx, tx: Tx) -> str:
    """A node files a reader's signed request for profile fields: valid only when the
    request is the reader's, for this customer, purpose and fields, recent at the block's
    time, filed once, and the reader's org owns the customer or holds a live consent for
    that purpose whose scope covers the fields. A refused read stays with its code."""
    p = tx.payload
    req = p["request"]
    if ctx.cs.node_by_key(tx.signer) is None:
        return "forbidden"
    asked = parse_profile_read(req["path"])
    if isinstance(asked, str) or asked != (p["customer_id"], p["purpose"], p["fields"]) \
            or not request_ok(p["reader"], req["method"], req["path"], req["ts"], req["sig"]):
        return "forbidden"
    if abs(req["ts"] - ctx.ts) > REQUEST_WINDOW_MS:
        return "stale"
    if ctx.st.get(k_request(req["sig"])) is not None:
        return "duplicate"
    if ctx.role(p["reader"], p["reader_org"]) not in ("admin", "agent"):
        return "forbidden"
    cust, err = customer(ctx, p["customer_id"])
    if err:
        return err
    if cust["owner"] != p["reader_org"]:
        c = ctx.consent(p["customer_id"], p["reader_org"])
        if c is None or c["purpose"] != p["purpose"] or not scope_covers(c["scope"], p["fields"]):
            return "forbidden"
    ctx.st.put(k_request(req["sig"]), {"height": ctx.height})
    return VALID


def privacy_purged(ctx: Ctx, tx: Tx) -> str:
    """A node's receipt that it purged what an erase or update required of it."""
    p = tx.payload
    if node_org(ctx, tx) is None:
        return "forbidden"
    cause = ctx.st.get(k_cause(p["cause"]))
    if cause is None or cause["customer_id"] != p["customer_id"]:
        return "unknown_cause"
    key = k_purged(p["cause"], tx.signer, p["kind"])
    if ctx.st.get(key) is not None:
        return "duplicate"
    ctx.st.put(key, {"height": ctx.height, "ts": ctx.ts, "tx_id": tx.tx_id})
    return VALID
