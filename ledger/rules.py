"""Ledger rules: validation and state transition per transaction type (SPEC §2, §3), as
a deterministic function of (state, block). No I/O: the state is read through a
`LedgerView`, and the outcome lists every changed key with its old and new value.

Each transaction gets `valid` or exactly one code, checked in this order: `duplicate`
(tx_id or signer+nonce already committed, in an earlier block or earlier in this one),
`stale` (ts more than 600 s from the block's timestamp), then the type's own rules,
where `forbidden` means the signer may not send this type for this org or customer.

Before its transactions, a block escalates every ticket whose service-level deadline its
timestamp has passed. What nodes must do besides writing the state (purge private data,
announce an escalation or an erasure) is listed in the outcome's `events`.
"""
from __future__ import annotations

from typing import Callable

from .genesis import Genesis
from .rulectx import (  # noqa: F401  (the view, results and outcome are part of this module's interface)
    STALE_MS, VALID, BlockOutcome, Ctx, LedgerView, Overlay, TxResult, by_customer, customer, is_customer,
)
from .consortium import CONSORTIUM_KEY, in_force
from .rules_governance import consortium_propose, consortium_vote
from .rules_privacy import access_read, privacy_purged
from .rules_service import (
    escalate, loyalty_issue, loyalty_program, loyalty_redeem, review_post, ticket_open, ticket_update,
)
from .statekeys import k_cause, k_consent, k_customer, k_identity, k_ticket
from .tx import Tx

MAX_ESCALATIONS = 1000   # per block; the rest (oldest first) in the blocks after
CODES = (
    VALID, "duplicate", "stale", "forbidden", "unknown_org", "identity_exists",
    "customer_exists", "unknown_customer", "erased", "bad_expiry", "no_consent",
    "ticket_exists", "unknown_ticket", "ticket_closed", "insufficient_balance", "overflow",
    # stored by number: new codes go at the end
    "unknown_program", "program_exists", "review_exists", "ticket_not_resolved", "unknown_cause",
    "bad_proposal", "unknown_proposal", "proposal_closed", "already_voted",
)


# -- one function per type: checks first, writes only when valid ---------------------------
def _identity_register(ctx: Ctx, tx: Tx) -> str:
    p = tx.payload
    if ctx.role(tx.signer, tx.org) != "admin":
        return "forbidden"
    if ctx.cs.is_admin(p["pubkey"]) or ctx.st.get(k_identity(p["pubkey"])) is not None:
        return "identity_exists"
    ctx.st.put(k_identity(p["pubkey"]), {"org": tx.org, "role": p["role"], "height": ctx.height})
    return VALID


def _customer_register(ctx: Ctx, tx: Tx) -> str:
    p = tx.payload
    if not ctx.staff(tx, tx.org):
        return "forbidden"
    if ctx.st.get(k_customer(p["customer_id"])) is not None:
        return "customer_exists"
    ctx.st.put(k_customer(p["customer_id"]), {
        "owner": tx.org, "key": p["customer_key"], "profile_hash": p["profile_hash"],
        "erased": False, "registered": ctx.height})
    return VALID


def _customer_update(ctx: Ctx, tx: Tx) -> str:
    p = tx.payload
    cid = p["customer_id"]
    cust, err = customer(ctx, cid)
    if err:
        return err
    if not ctx.staff(tx, cust["owner"]):
        return "forbidden"
    ctx.st.put(k_customer(cid), {**cust, "profile_hash": p["profile_hash"]})
    if cust["profile_hash"] != p["profile_hash"]:
        ctx.st.put(k_cause(tx.tx_id), {"customer_id": cid, "kind": "update"})
        ctx.event("superseded", customer_id=cid, cause=tx.tx_id, profile_hash=cust["profile_hash"])
    return VALID


def _consent_grant(ctx: Ctx, tx: Tx) -> str:
    p = tx.payload
    _, err = by_customer(ctx, tx)
    if err:
        return err
    if p["grantee_org"] not in ctx.cs.orgs:
        return "unknown_org"
    if p["expires_ts"] is not None and p["expires_ts"] <= ctx.ts:
        return "bad_expiry"
    ctx.st.put(k_consent(p["customer_id"], p["grantee_org"]), {
        "scope": p["scope"], "purpose": p["purpose"], "expires_ts": p["expires_ts"],
        "granted": ctx.height, "granted_ts": ctx.ts, "tx_id": tx.tx_id, "revoked": None})
    return VALID


def _consent_revoke(ctx: Ctx, tx: Tx) -> str:
    p = tx.payload
    _, err = by_customer(ctx, tx)
    if err:
        return err
    key = k_consent(p["customer_id"], p["grantee_org"])
    c = ctx.st.get(key)
    if c is None or c.get("revoked") is not None:
        return "no_consent"
    ctx.st.put(key, {**c, "revoked": ctx.height, "revoked_ts": ctx.ts})
    return VALID


def _customer_erase(ctx: Ctx, tx: Tx) -> str:
    p = tx.payload
    cid = p["customer_id"]
    cust, err = customer(ctx, cid)
    if err:
        return err
    by_owner_admin = tx.org == cust["owner"] and ctx.role(tx.signer, tx.org) == "admin"
    if not (is_customer(tx, cust) or by_owner_admin):
        return "forbidden"
    ctx.st.put(k_customer(cid), {**cust, "erased": True, "profile_hash": None, "erased_at": ctx.height,
                                 "erased_ts": ctx.ts, "erase_tx": tx.tx_id})
    ctx.st.put(k_cause(tx.tx_id), {"customer_id": cid, "kind": "erase"})
    ctx.event("erasure", customer_id=cid, cause=tx.tx_id)
    return VALID


_HANDLERS: dict[str, Callable[[Ctx, Tx], str]] = {
    "identity.register": _identity_register,
    "customer.register": _customer_register,
    "customer.update": _customer_update,
    "consent.grant": _consent_grant,
    "consent.revoke": _consent_revoke,
    "customer.erase": _customer_erase,
    "ticket.open": ticket_open,
    "ticket.update": ticket_update,
    "review.post": review_post,
    "loyalty.program": loyalty_program,
    "loyalty.issue": loyalty_issue,
    "loyalty.redeem": loyalty_redeem,
    "access.read": access_read,
    "privacy.purged": privacy_purged,
    "consortium.propose": consortium_propose,
    "consortium.vote": consortium_vote,
}


def _subject(ctx: Ctx, tx: Tx) -> str | None:
    cid = tx.payload.get("customer_id")
    if cid is None and tx.type == "ticket.update":
        t = ctx.st.get(k_ticket(tx.payload["ticket_id"]))
        cid = t["customer_id"] if t else None
    return cid


def apply_block(genesis: Genesis, view: LedgerView, txs: list[Tx], *, height: int,
                timestamp: int) -> BlockOutcome:
    st = Overlay(view)
    ctx = Ctx(in_force(genesis, view.get(CONSORTIUM_KEY)), st, height, timestamp, [])
    escalate(ctx, view.due(timestamp, MAX_ESCALATIONS))
    nonces: set[tuple[str, str]] = set()
    results = []
    for tx in txs:
        # a transaction committed before has, with its tx_id, its signer and nonce: the
        # (signer, nonce) check finds both kinds of duplicate
        sn = (tx.signer, tx.nonce)
        if sn in nonces or view.nonce_seen(*sn):
            results.append(TxResult("duplicate", _subject(ctx, tx)))
            continue
        nonces.add(sn)
        if abs(tx.ts - timestamp) > STALE_MS:
            code = "stale"
        else:
            code = _HANDLERS[tx.type](ctx, tx)
        results.append(TxResult(code, _subject(ctx, tx)))
    return BlockOutcome(tuple(results), st.changes(), tuple(ctx.events))
