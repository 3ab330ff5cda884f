"""The keys of the world state: one prefix per kind of record (identities, customers,
consents, tickets and their deadlines, loyalty programs and accounts, reviews, read
requests filed, purge causes and receipts), and the keys a transaction may read, so that
storage can fetch a whole block's worth at once."""
from __future__ import annotations

import hashlib

from .tx import Tx

DEADLINE_PREFIX = b"dl/"


def k_identity(pubkey: str) -> bytes:
    return b"id/" + pubkey.encode()


def k_customer(cid: str) -> bytes:
    return b"cu/" + cid.encode()


def k_consent(cid: str, org: str) -> bytes:
    return b"co/" + cid.encode() + b"\x00" + org.encode()


def k_ticket(tid: str) -> bytes:
    return b"ti/" + tid.encode()


def k_deadline(due_ms: int, tid: str, kind: str) -> bytes:
    """A ticket's service-level deadline, ordered by time (see `due_before`)."""
    return DEADLINE_PREFIX + b"%020d/" % due_ms + tid.encode() + b"\x00" + kind.encode()


def due_before(ts: int) -> tuple[bytes, bytes]:
    """The key range [lo, hi) of the deadlines strictly before `ts`."""
    return DEADLINE_PREFIX, DEADLINE_PREFIX + b"%020d" % ts


def deadline_of(key: bytes) -> tuple[int, str, str]:
    """(due, ticket_id, kind) of a deadline key."""
    due, rest = key[len(DEADLINE_PREFIX):].split(b"/", 1)
    tid, kind = rest.split(b"\x00", 1)
    return int(due), tid.decode(), kind.decode()


def k_program(program: str) -> bytes:
    return b"lp/" + program.encode()


def k_loyalty(cid: str, program: str) -> bytes:
    return b"lo/" + cid.encode() + b"\x00" + program.encode()


def k_review(org: str, review_id: str) -> bytes:
    return b"rv/" + org.encode() + b"\x00" + review_id.encode()


def k_request(sig_hex: str) -> bytes:
    """A signed read request filed in a valid `access.read` (by its signature)."""
    return b"rq/" + hashlib.sha256(sig_hex.encode()).digest()


def k_cause(tx_id: str) -> bytes:
    """An erase or update after which nodes purge private data."""
    return b"pc/" + tx_id.encode()


def k_purged(cause: str, node_key: str, kind: str) -> bytes:
    return b"pg/" + cause.encode() + b"\x00" + node_key.encode() + b"\x00" + kind.encode()


PROPOSAL_PREFIX = b"cp/"


def k_proposal(proposal_id: str) -> bytes:
    """A governance proposal, by the tx_id of its `consortium.propose`."""
    return PROPOSAL_PREFIX + proposal_id.encode()


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
    elif t == "review.post":
        keys += [k_ticket(p["ticket_id"]), k_review(p["org"], p["review_id"])]
    elif t == "loyalty.program":
        keys.append(k_program(p["program"]))
    elif t in ("loyalty.issue", "loyalty.redeem"):
        keys += [k_loyalty(cid, p["program"]), k_program(p["program"])]
    elif t == "access.read":
        keys += [k_identity(p["reader"]), k_consent(cid, p["reader_org"]), k_request(p["request"]["sig"])]
    elif t == "consortium.vote":
        keys.append(k_proposal(p["proposal_id"]))
    elif t == "privacy.purged":
        keys += [k_cause(p["cause"]), k_purged(p["cause"], tx.signer, p["kind"])]
    return keys
