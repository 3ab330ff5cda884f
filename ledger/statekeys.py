"""The keys of the world state: one prefix per kind of record (identities, customers,
consents, tickets, loyalty accounts), and the keys a transaction may read, so that
storage can fetch a whole block's worth at once."""
from __future__ import annotations

from .tx import Tx


def k_identity(pubkey: str) -> bytes:
    return b"id/" + pubkey.encode()


def k_customer(cid: str) -> bytes:
    return b"cu/" + cid.encode()


def k_consent(cid: str, org: str) -> bytes:
    return b"co/" + cid.encode() + b"\x00" + org.encode()


def k_ticket(tid: str) -> bytes:
    return b"ti/" + tid.encode()


def k_loyalty(cid: str, program: str) -> bytes:
    return b"lo/" + cid.encode() + b"\x00" + program.encode()


def keys_for(tx: Tx) -> list[bytes]:
    """The state keys applying `tx` may read, so that storage can fetch a whole block's
    worth in one query."""
    p = tx.payload
    keys = [k_identity(tx.signer)]
    cid = p.get("customer_id")
    if cid is not None:
        keys.append(k_customer(cid))
        if tx.org:
            keys.append(k_consent(cid, tx.org))
    t = tx.type
    if t == "identity.register":
        keys.append(k_identity(p["pubkey"]))
    elif t in ("consent.grant", "consent.revoke"):
        keys.append(k_consent(cid, p["grantee_org"]))
    elif t in ("ticket.open", "ticket.update"):
        keys.append(k_ticket(p["ticket_id"]))
    elif t in ("loyalty.issue", "loyalty.redeem"):
        keys.append(k_loyalty(cid, p["program"]))
    return keys
