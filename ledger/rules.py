"""Ledger rules: validation and state transition per transaction type (SPEC §2, §3), as
a deterministic function of (state, block). No I/O: the state is read through a
`LedgerView`, and the outcome lists every changed key with its old and new value.

Each transaction gets `valid` or exactly one code, checked in this order: `duplicate`
(tx_id or signer+nonce already committed, in an earlier block or earlier in this one),
`stale` (ts more than 600 s from the block's timestamp), then the type's own rules,
where `forbidden` means the signer may not send this type for this org or customer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol

import msgpack

from .canonical import INT_MAX, trusted_canonical_bytes
from .genesis import Genesis
from .statekeys import k_consent, k_customer, k_identity, k_loyalty, k_ticket
from .tx import Tx

STALE_MS = 600_000
VALID = "valid"

CODES = (
    VALID, "duplicate", "stale", "forbidden", "unknown_org", "identity_exists",
    "customer_exists", "unknown_customer", "erased", "bad_expiry", "no_consent",
    "ticket_exists", "unknown_ticket", "ticket_closed", "insufficient_balance", "overflow",
)


class LedgerView(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def nonce_seen(self, signer: str, nonce: str) -> bool: ...


class TxResult(NamedTuple):
    code: str
    subject: str | None = None   # the customer the transaction touches, for the history


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    results: tuple[TxResult, ...]
    changes: tuple[tuple[bytes, bytes | None, bytes | None], ...]  # (key, old, new), by key


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

    def consent_active(self, cid: str, org: str) -> bool:
        c = self.st.get(k_consent(cid, org))
        return c is not None and (c["expires_ts"] is None or c["expires_ts"] > self.ts)


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
    cust, err = _customer(ctx, p["customer_id"])
    if err:
        return err
    if not ctx.staff(tx, cust["owner"]):
        return "forbidden"
    ctx.st.put(k_customer(p["customer_id"]), {**cust, "profile_hash": p["profile_hash"]})
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
        "granted": ctx.height})
    return VALID


def _consent_revoke(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    _, err = _by_customer(ctx, tx)
    if err:
        return err
    key = k_consent(p["customer_id"], p["grantee_org"])
    if ctx.st.get(key) is None:
        return "no_consent"
    ctx.st.put(key, None)
    return VALID


def _customer_erase(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    cust, err = _customer(ctx, p["customer_id"])
    if err:
        return err
    by_owner_admin = tx.org == cust["owner"] and ctx.role(tx.signer, tx.org) == "admin"
    if not (_is_customer(tx, cust) or by_owner_admin):
        return "forbidden"
    ctx.st.put(k_customer(p["customer_id"]), {**cust, "erased": True, "profile_hash": None,
                                              "erased_at": ctx.height})
    return VALID


def _ticket_open(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    if ctx.st.get(k_ticket(p["ticket_id"])) is not None:
        return "ticket_exists"
    cust, err = _customer(ctx, p["customer_id"])
    if err:
        return err
    if _is_customer(tx, cust):
        org = cust["owner"]
    elif ctx.staff(tx, tx.org) and (tx.org == cust["owner"] or ctx.consent_active(p["customer_id"], tx.org)):
        org = tx.org
    else:
        return "forbidden"
    ctx.st.put(k_ticket(p["ticket_id"]), {
        "org": org, "customer_id": p["customer_id"], "channel": p["channel"], "status": "open",
        "timeline": [{"height": ctx.height, "ts": ctx.ts, "status": "open",
                      "note_hash": p["subject_hash"], "by": tx.signer}]})
    return VALID


def _ticket_update(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    t = ctx.st.get(k_ticket(p["ticket_id"]))
    if t is None:
        return "unknown_ticket"
    if not ctx.staff(tx, t["org"]):
        return "forbidden"
    if t["status"] == "closed":
        return "ticket_closed"
    step = {"height": ctx.height, "ts": ctx.ts, "status": p["status"], "note_hash": p["note_hash"],
            "by": tx.signer}
    ctx.st.put(k_ticket(p["ticket_id"]), {**t, "status": p["status"], "timeline": t["timeline"] + [step]})
    return VALID


def _loyalty_issue(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    _, err = _customer(ctx, p["customer_id"])
    if err:
        return err
    key = k_loyalty(p["customer_id"], p["program"])
    acct = ctx.st.get(key)
    if not ctx.staff(tx, tx.org) or (acct is not None and acct["org"] != tx.org):
        return "forbidden"  # a program belongs to the org that first issued in it
    balance = acct["balance"] if acct else 0
    if balance + p["amount"] > INT_MAX:
        return "overflow"
    ctx.st.put(key, {"org": tx.org, "balance": balance + p["amount"]})
    return VALID


def _loyalty_redeem(ctx: _Ctx, tx: Tx) -> str:
    p = tx.payload
    _, err = _by_customer(ctx, tx)
    if err:
        return err
    key = k_loyalty(p["customer_id"], p["program"])
    acct = ctx.st.get(key)
    if acct is None or acct["balance"] < p["amount"]:
        return "insufficient_balance"
    ctx.st.put(key, {**acct, "balance": acct["balance"] - p["amount"]})
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
    "loyalty.issue": _loyalty_issue,
    "loyalty.redeem": _loyalty_redeem,
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
    ctx = _Ctx(genesis, st, height, timestamp)
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
    return BlockOutcome(tuple(results), st.changes())
