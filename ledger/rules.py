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

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol

import msgpack

from .canonical import INT_MAX, trusted_canonical_bytes
from .genesis import Genesis
from .requests import REQUEST_WINDOW_MS, parse_profile_read, request_ok, scope_covers
from .statekeys import (
    deadline_of, k_cause, k_consent, k_customer, k_deadline, k_identity, k_loyalty, k_program, k_purged,
    k_request, k_review, k_ticket,
)
from .tx import Tx

STALE_MS = 600_000
VALID = "valid"

CODES = (
    VALID, "duplicate", "stale", "forbidden", "unknown_org", "identity_exists",
    "customer_exists", "unknown_customer", "erased", "bad_expiry", "no_consent",
    "ticket_exists", "unknown_ticket", "ticket_closed", "insufficient_balance", "overflow",
    # stored by number: new codes go at the end
    "unknown_program", "program_exists", "review_exists", "ticket_not_resolved", "unknown_cause",
)
BENEFITS = "dpv:PersonalisedBenefits"   # the purpose under which a partner may issue points


class LedgerView(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def nonce_seen(self, signer: str, nonce: str) -> bool: ...
    def due(self, ts: int) -> list[bytes]:
        """The deadline keys (statekeys.k_deadline) strictly before `ts`, in order."""


class TxResult(NamedTuple):
    code: str
    subject: str | None = None   # the customer the transaction touches, for the history


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    results: tuple[TxResult, ...]
    changes: tuple[tuple[bytes, bytes | None, bytes | None], ...]  # (key, old, new), by key
    # what nodes act on besides the state, in order: {"type": "ticket" | "erasure" |
    # "superseded", ...} (see `_Ctx.event`)
    events: tuple[dict, ...] = ()


class _Overlay:
    """The view plus this block's writes; remembers each key's value before the block.
    A written value is encoded once, when the block's changes are listed (the rules put
    fresh objects and never change one after putting it)."""
    __slots__ = ("view", "orig", "dec", "dirty")

    def __init__(self, view: LedgerView) -> None:
        self.view = view
        self.orig: dict[bytes, bytes | None] = {}
        self.dec: dict[bytes, Any] = {}
        self.dirty: set[bytes] = set()

    def get(self, key: bytes) -> Any:
        if key in self.dec:
            return self.dec[key]
        raw = self.orig[key] = self.view.get(key)
        obj = self.dec[key] = None if raw is None else msgpack.unpackb(raw, raw=False)
        return obj

    def put(self, key: bytes, obj: Any) -> None:
        if key not in self.dec:
            self.get(key)
        self.dec[key] = obj
        self.dirty.add(key)

    def changes(self) -> tuple[tuple[bytes, bytes | None, bytes | None], ...]:
        out = []
        for k in sorted(self.dirty):
            obj = self.dec[k]
            new = None if obj is None else trusted_canonical_bytes(obj)
            if new != self.orig[k]:
                out.append((k, self.orig[k], new))
        return tuple(out)


@dataclass(slots=True)
class _Ctx:
    g: Genesis
    st: _Overlay
    height: int
    ts: int
    events: list[dict]

    def role(self, signer: str, org: str) -> str | None:
        if not org:
            return None
        if self.g.genesis_role(signer, org):
            return "admin"
        rec = self.st.get(k_identity(signer))
        if rec is not None and rec["org"] == org:
            return rec["role"]
        return None

    def staff(self, tx: Tx, org: str) -> bool:
        """The transaction is sent for `org` by one of its admins or agents."""
        return tx.org == org and self.role(tx.signer, org) in ("admin", "agent")

    def consent(self, cid: str, org: str) -> dict | None:
        """The customer's consent to `org`, when neither revoked nor expired now."""
        c = self.st.get(k_consent(cid, org))
        if c is None or c.get("revoked") is not None or (c["expires_ts"] is not None and c["expires_ts"] <= self.ts):
            return None
        return c

    def event(self, type_: str, **fields) -> None:
        self.events.append({"type": type_, "height": self.height, "ts": self.ts, **fields})


def _customer(ctx: _Ctx, cid: str) -> tuple[dict | None, str | None]:
    cust = ctx.st.get(k_customer(cid))
    if cust is None:
        return None, "unknown_customer"
    if cust["erased"]:
        return cust, "erased"
    return cust, None


def _is_customer(tx: Tx, cust: dict) -> bool:
    return tx.org == "" and cust["key"] is not None and cust["key"] == tx.signer


def _by_customer(ctx: _Ctx, tx: Tx) -> tuple[dict | None, str | None]:
    """The customer record for a transaction only the customer's own key may send."""
    cust, err = _customer(ctx, tx.payload["customer_id"])
    if err is None and not _is_customer(tx, cust):
        err = "forbidden"
    return cust, err


def _node_org(ctx: _Ctx, tx: Tx) -> str | None:
    """The org of the genesis node that signed `tx` for its own org, if one did."""
    n = ctx.g.node_by_key(tx.signer)
    return n.org if n is not None and n.org == tx.org else None


# -- one function per type: checks first, writes only when valid ---------------------------
def _identity_register(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    if ctx.role(tx.signer, tx.org) != "admin":
        return "forbidden"
    if ctx.g.is_genesis_admin(p["pubkey"]) or ctx.st.get(k_identity(p["pubkey"])) is not None:
        return "identity_exists"
    ctx.st.put(k_identity(p["pubkey"]), {"org": tx.org, "role": p["role"], "height": ctx.height})
    return VALID


def _customer_register(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    if not ctx.staff(tx, tx.org):
        return "forbidden"
    if ctx.st.get(k_customer(p["customer_id"])) is not None:
        return "customer_exists"
    ctx.st.put(k_customer(p["customer_id"]), {
        "owner": tx.org, "key": p["customer_key"], "profile_hash": p["profile_hash"],
        "erased": False, "registered": ctx.height})
    return VALID


def _customer_update(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    cid = p["customer_id"]
    cust, err = _customer(ctx, cid)
    if err:
        return err
    if not ctx.staff(tx, cust["owner"]):
        return "forbidden"
    ctx.st.put(k_customer(cid), {**cust, "profile_hash": p["profile_hash"]})
    if cust["profile_hash"] != p["profile_hash"]:
        ctx.st.put(k_cause(tx.tx_id), {"customer_id": cid, "kind": "update"})
        ctx.event("superseded", customer_id=cid, cause=tx.tx_id, profile_hash=cust["profile_hash"])
    return VALID


def _consent_grant(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    _, err = _by_customer(ctx, tx)
    if err:
        return err
    if p["grantee_org"] not in ctx.g.orgs:
        return "unknown_org"
    if p["expires_ts"] is not None and p["expires_ts"] <= ctx.ts:
        return "bad_expiry"
    ctx.st.put(k_consent(p["customer_id"], p["grantee_org"]), {
        "scope": p["scope"], "purpose": p["purpose"], "expires_ts": p["expires_ts"],
        "granted": ctx.height, "granted_ts": ctx.ts, "tx_id": tx.tx_id, "revoked": None})
    return VALID


def _consent_revoke(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    _, err = _by_customer(ctx, tx)
    if err:
        return err
    key = k_consent(p["customer_id"], p["grantee_org"])
    c = ctx.st.get(key)
    if c is None or c.get("revoked") is not None:
        return "no_consent"
    ctx.st.put(key, {**c, "revoked": ctx.height, "revoked_ts": ctx.ts})
    return VALID


def _customer_erase(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    cid = p["customer_id"]
    cust, err = _customer(ctx, cid)
    if err:
        return err
    by_owner_admin = tx.org == cust["owner"] and ctx.role(tx.signer, tx.org) == "admin"
    if not (_is_customer(tx, cust) or by_owner_admin):
        return "forbidden"
    ctx.st.put(k_customer(cid), {**cust, "erased": True, "profile_hash": None, "erased_at": ctx.height,
                                 "erased_ts": ctx.ts, "erase_tx": tx.tx_id})
    ctx.st.put(k_cause(tx.tx_id), {"customer_id": cid, "kind": "erase"})
    ctx.event("erasure", customer_id=cid, cause=tx.tx_id)
    return VALID


# -- tickets, with their service levels -------------------------------------------------------
def _set_deadline(ctx: _Ctx, t: dict, tid: str, kind: str, due: int | None) -> None:
    """Replace the ticket's `kind` deadline (first_response or resolution) by `due`."""
    old = t["deadlines"].get(kind)
    if old is not None:
        ctx.st.put(k_deadline(old, tid, kind), None)
    t["deadlines"] = {**t["deadlines"], kind: due} if due is not None else \
        {k: v for k, v in t["deadlines"].items() if k != kind}
    if due is not None:
        ctx.st.put(k_deadline(due, tid, kind), {"ticket_id": tid, "kind": kind})


def _ticket_open(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    tid = p["ticket_id"]
    if ctx.st.get(k_ticket(tid)) is not None:
        return "ticket_exists"
    cust, err = _customer(ctx, p["customer_id"])
    if err:
        return err
    if _is_customer(tx, cust):
        org = cust["owner"]
    elif ctx.staff(tx, tx.org) and (tx.org == cust["owner"] or ctx.consent(p["customer_id"], tx.org)):
        org = tx.org
    else:
        return "forbidden"
    levels = ctx.g.org_info[org]
    t = {"org": org, "customer_id": p["customer_id"], "channel": p["channel"], "status": "open",
         "escalated": [], "deadlines": {}, "review_id": None,
         "timeline": [{"height": ctx.height, "ts": ctx.ts, "status": "open", "note_hash": p["subject_hash"],
                       "by": tx.signer}]}
    _set_deadline(ctx, t, tid, "first_response", ctx.ts + levels.first_response_ms)
    _set_deadline(ctx, t, tid, "resolution", ctx.ts + levels.resolution_ms)
    ctx.st.put(k_ticket(tid), t)
    return VALID


def _ticket_update(ctx: _Ctx, tx: Tx) -> str:
    """The ticket's org moves it through any status; the customer may only accept a
    resolved ticket (`closed`) or reopen it (`open`). A reply of the org ends the wait for
    a first response; resolving or closing ends the one for resolution; reopening starts
    that one again."""
    p = tx.payload
    tid, status = p["ticket_id"], p["status"]
    t = ctx.st.get(k_ticket(tid))
    if t is None:
        return "unknown_ticket"
    cust = ctx.st.get(k_customer(t["customer_id"]))
    by_customer = cust is not None and _is_customer(tx, cust)
    if not (ctx.staff(tx, t["org"]) or by_customer):
        return "forbidden"
    if t["status"] == "closed":
        return "ticket_closed"
    if by_customer and not (t["status"] == "resolved" and status in ("open", "closed")):
        return "forbidden"
    t = {**t, "status": status, "timeline": t["timeline"] + [
        {"height": ctx.height, "ts": ctx.ts, "status": status, "note_hash": p["note_hash"], "by": tx.signer}]}
    if not by_customer:
        _set_deadline(ctx, t, tid, "first_response", None)
    if status in ("resolved", "closed"):
        _set_deadline(ctx, t, tid, "resolution", None)
    elif status == "open" and "resolution" not in t["deadlines"]:
        _set_deadline(ctx, t, tid, "resolution", ctx.ts + ctx.g.org_info[t["org"]].resolution_ms)
    ctx.st.put(k_ticket(tid), t)
    return VALID


def _escalate(ctx: _Ctx, due_keys: list[bytes]) -> None:
    """Every ticket whose deadline the block's timestamp has passed is escalated."""
    for key in due_keys:
        due, tid, kind = deadline_of(key)
        t = ctx.st.get(k_ticket(tid))
        ctx.st.put(key, None)
        if t is None:
            continue
        deadlines = {k: v for k, v in t["deadlines"].items() if k != kind}
        ctx.st.put(k_ticket(tid), {**t, "deadlines": deadlines, "escalated": t["escalated"] + [kind],
                                   "timeline": t["timeline"] + [{"height": ctx.height, "ts": ctx.ts,
                                                                 "status": "escalated", "missed": kind,
                                                                 "due": due}]})
        ctx.event("ticket", ticket_id=tid, org=t["org"], customer_id=t["customer_id"], status="escalated",
                  missed=kind, due=due)


def _review_post(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    _, err = _by_customer(ctx, tx)
    if err:
        return err
    t = ctx.st.get(k_ticket(p["ticket_id"]))
    if t is None:
        return "unknown_ticket"
    if t["customer_id"] != p["customer_id"] or t["org"] != p["org"]:
        return "forbidden"
    if t["status"] not in ("resolved", "closed"):
        return "ticket_not_resolved"
    if t.get("review_id") is not None or ctx.st.get(k_review(p["org"], p["review_id"])) is not None:
        return "review_exists"
    ctx.st.put(k_review(p["org"], p["review_id"]), {
        "customer_id": p["customer_id"], "ticket_id": p["ticket_id"], "rating": p["rating"],
        "text_hash": p["text_hash"], "height": ctx.height, "ts": ctx.ts, "tx_id": tx.tx_id})
    ctx.st.put(k_ticket(p["ticket_id"]), {**t, "review_id": p["review_id"]})
    return VALID


# -- loyalty programs shared by partner orgs ---------------------------------------------------
def _loyalty_program(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    if ctx.role(tx.signer, tx.org) != "admin":
        return "forbidden"
    if any(o not in ctx.g.orgs for o in p["partners"]):
        return "unknown_org"
    if ctx.st.get(k_program(p["program"])) is not None:
        return "program_exists"
    ctx.st.put(k_program(p["program"]), {"org": tx.org, "partners": sorted({*p["partners"], tx.org}),
                                         "height": ctx.height})
    return VALID


def _loyalty_issue(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    cid = p["customer_id"]
    cust, err = _customer(ctx, cid)
    if err:
        return err
    prog = ctx.st.get(k_program(p["program"]))
    if prog is None:
        return "unknown_program"
    c = ctx.consent(cid, tx.org)
    if not ctx.staff(tx, tx.org) or tx.org not in prog["partners"] \
            or not (cust["owner"] == tx.org or (c is not None and c["purpose"] == BENEFITS)):
        return "forbidden"
    key = k_loyalty(cid, p["program"])
    acct = ctx.st.get(key)
    balance = acct["balance"] if acct else 0
    if balance + p["amount"] > INT_MAX:
        return "overflow"
    ctx.st.put(key, {"balance": balance + p["amount"]})
    return VALID


def _loyalty_redeem(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    _, err = _by_customer(ctx, tx)
    if err:
        return err
    prog = ctx.st.get(k_program(p["program"]))
    if prog is None:
        return "unknown_program"
    if p["at_org"] not in prog["partners"]:
        return "forbidden"
    key = k_loyalty(p["customer_id"], p["program"])
    acct = ctx.st.get(key)
    if acct is None or acct["balance"] < p["amount"]:
        return "insufficient_balance"
    ctx.st.put(key, {**acct, "balance": acct["balance"] - p["amount"]})
    return VALID


# -- privacy: audited reads and purge receipts -------------------------------------------------
def _access_read(ctx: _Ctx, tx: Tx) -> str:
    """A node files a reader's signed request for profile fields: valid only when the
    request is the reader's, for this customer, purpose and fields, recent at the block's
    time, filed once, and the reader's org owns the customer or holds a live consent for
    that purpose whose scope covers the fields. A refused read stays with its code."""
    p = tx.payload
    req = p["request"]
    if ctx.g.node_by_key(tx.signer) is None:
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
    cust, err = _customer(ctx, p["customer_id"])
    if err:
        return err
    if cust["owner"] != p["reader_org"]:
        c = ctx.consent(p["customer_id"], p["reader_org"])
        if c is None or c["purpose"] != p["purpose"] or not scope_covers(c["scope"], p["fields"]):
            return "forbidden"
    ctx.st.put(k_request(req["sig"]), {"height": ctx.height})
    return VALID


def _privacy_purged(ctx: _Ctx, tx: Tx) -> str:
    """A node's receipt that it purged what an erase or update required of it."""
    p = tx.payload
    if _node_org(ctx, tx) is None:
        return "forbidden"
    cause = ctx.st.get(k_cause(p["cause"]))
    if cause is None or cause["customer_id"] != p["customer_id"]:
        return "unknown_cause"
    key = k_purged(p["cause"], tx.signer, p["kind"])
    if ctx.st.get(key) is not None:
        return "duplicate"
    ctx.st.put(key, {"height": ctx.height, "ts": ctx.ts, "tx_id": tx.tx_id})
    return VALID


_HANDLERS: dict[str, Callable[[_Ctx, Tx], str]] = {
    "identity.register": _identity_register,
    "customer.register": _customer_register,
    "customer.update": _customer_update,
    "consent.grant": _consent_grant,
    "consent.revoke": _consent_revoke,
    "customer.erase": _customer_erase,
    "ticket.open": _ticket_open,
    "ticket.update": _ticket_update,
    "review.post": _review_post,
    "loyalty.program": _loyalty_program,
    "loyalty.issue": _loyalty_issue,
    "loyalty.redeem": _loyalty_redeem,
    "access.read": _access_read,
    "privacy.purged": _privacy_purged,
}


def _subject(ctx: _Ctx, tx: Tx) -> str | None:
    cid = tx.payload.get("customer_id")
    if cid is None and tx.type == "ticket.update":
        t = ctx.st.get(k_ticket(tx.payload["ticket_id"]))
        cid = t["customer_id"] if t else None
    return cid


def apply_block(genesis: Genesis, view: LedgerView, txs: list[Tx], *, height: int,
                timestamp: int) -> BlockOutcome:
    st = _Overlay(view)
    ctx = _Ctx(genesis, st, height, timestamp, [])
    _escalate(ctx, view.due(timestamp))
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
