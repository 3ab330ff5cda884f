"""What every ledger rule works with (see `rules`): the view of the state and the outcome
of a block, the block's overlay of writes, the context a rule runs in (who a signer is,
a customer's live consent, the events to report) and the checks many types share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import msgpack

from .canonical import trusted_canonical_bytes
from .consortium import Consortium
from .genesis import DEFAULT_SERVICE_LEVELS, OrgInfo
from .statekeys import k_consent, k_customer, k_identity
from .tx import Tx

STALE_MS = 600_000
VALID = "valid"


class LedgerView(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def nonce_seen(self, signer: str, nonce: str) -> bool: ...
    def due(self, ts: int, limit: int) -> list[bytes]:
        """The first `limit` deadline keys (statekeys.k_deadline) strictly before `ts`, in
        order."""


class TxResult(NamedTuple):
    code: str
    subject: str | None = None   # the customer the transaction touches, for the history


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    results: tuple[TxResult, ...]
    changes: tuple[tuple[bytes, bytes | None, bytes | None], ...]  # (key, old, new), by key
    # what nodes act on besides the state, in order: {"type": "ticket" | "erasure" |
    # "superseded", ...} (see `Ctx.event`)
    events: tuple[dict, ...] = ()


class Overlay:
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
class Ctx:
    cs: Consortium      # the consortium in force (a governance change takes effect mid-block)
    st: Overlay
    height: int
    ts: int
    events: list[dict]

    def role(self, signer: str, org: str) -> str | None:
        if not org or org not in self.cs.orgs:
            return None
        if self.cs.is_admin_of(signer, org):
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

    def service_levels(self, org: str) -> OrgInfo:
        """The org's service levels (the defaults, for an org no longer a member)."""
        info = self.cs.org_info.get(org)
        return info if info is not None else OrgInfo({}, **DEFAULT_SERVICE_LEVELS)

    def event(self, type_: str, **fields) -> None:
        self.events.append({"type": type_, "height": self.height, "ts": self.ts, **fields})


def customer(ctx: Ctx, cid: str) -> tuple[dict | None, str | None]:
    cust = ctx.st.get(k_customer(cid))
    if cust is None:
        return None, "unknown_customer"
    if cust["erased"]:
        return cust, "erased"
    return cust, None


def is_customer(tx: Tx, cust: dict) -> bool:
    return tx.org == "" and cust["key"] is not None and cust["key"] == tx.signer


def by_customer(ctx: Ctx, tx: Tx) -> tuple[dict | None, str | None]:
    """The customer record for a transaction only the customer's own key may send."""
    cust, err = customer(ctx, tx.payload["customer_id"])
    if err is None and not is_customer(tx, cust):
        err = "forbidden"
    return cust, err


def node_org(ctx: Ctx, tx: Tx) -> str | None:
    """The org of the consortium's node that signed `tx` for its own org, if one did."""
    n = ctx.cs.node_by_key(tx.signer)
    return n.org if n is not None and n.org == tx.org else None
