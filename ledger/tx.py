"""Transactions (SPEC §2): the envelope `{"body": BODY, "sig": HEX}`, its canonical and
signing bytes, tx_id, and the shape of each type's payload (SPEC §3). Everything here
is checked once, at admission; authorization and state rules are in `rules`."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack

from .canonical import EncodingError, canonical, canonical_bytes, unpack_strict
from .consortium import check_proposal
from .keys import SigningKey, verify

TX_PREFIX = b"crmledger/tx/v1\n"
MAX_TX_BYTES = 64 * 1024   # the most any stored or gossiped envelope may take
# the most each type's signing bytes may take: what its largest legal payload needs, so
# that no signer can make every node store more than its transaction says
MAX_BYTES_BY_TYPE = {"consent.grant": 6 * 1024, "access.read": 8 * 1024, "loyalty.program": 10 * 1024,
                     "consortium.propose": 16 * 1024}
MAX_BYTES_DEFAULT = 2 * 1024

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_HEXANY = re.compile(r"(?:[0-9a-f]{2})*\Z")
_ID = re.compile(r"[A-Za-z0-9._:@+\-]{1,128}\Z")
# what personal data may be used for (W3C Data Privacy Vocabulary names, SPEC §3)
PURPOSES = ("dpv:CustomerCare", "dpv:CustomerRelationshipManagement", "dpv:CustomerClaimsManagement",
            "dpv:DirectMarketing", "dpv:PersonalisedBenefits", "dpv:ServiceProvision")


class TxError(ValueError):
    """A transaction refused before it enters any pool: `code` is `malformed` or
    `bad_signature`."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _malformed(detail: str) -> TxError:
    return TxError("malformed", detail)


# -- field checks: each returns an error text or None --------------------------------
Check = Callable[[Any], "str | None"]


def _hex64(v: Any) -> str | None:
    return None if type(v) is str and _HEX64.match(v) else "must be 64 lowercase hex characters"


def is_ident(v: Any) -> bool:
    """An id (customer, ticket, org, program...) as transactions carry them."""
    return type(v) is str and _ID.match(v) is not None


def _ident(v: Any) -> str | None:
    return None if is_ident(v) else "must be 1-128 characters of A-Z a-z 0-9 . _ : @ + -"


def _text(max_len: int) -> Check:
    def check(v: Any) -> str | None:
        return None if type(v) is str and 0 < len(v) <= max_len else f"must be a string of 1-{max_len} characters"
    return check


def _one_of(*options: str) -> Check:
    allowed = frozenset(options)
    def check(v: Any) -> str | None:
        return None if type(v) is str and v in allowed else f"must be one of {', '.join(options)}"
    return check


def _or_null(inner: Check) -> Check:
    def check(v: Any) -> str | None:
        return None if v is None else inner(v)
    return check


def _positive_int(v: Any) -> str | None:
    return None if type(v) is int and v > 0 else "must be a positive integer"


def _int(v: Any) -> str | None:
    return None if type(v) is int else "must be an integer"


def _scope(v: Any) -> str | None:
    if type(v) is not list or not v or len(v) > 64 or any(type(f) is not str for f in v):
        return 'must be a list of 1-64 field names, or ["*"]'
    if "*" in v and v != ["*"]:
        return '"*" must stand alone'
    if len(set(v)) != len(v):
        return "has repeated field names"
    for f in v:
        if f != "*" and (len(f) > 64 or _ident(f)):
            return "field names must be 1-64 characters of A-Z a-z 0-9 . _ : @ + -"
    return None


def _rating(v: Any) -> str | None:
    return None if type(v) is int and 1 <= v <= 5 else "must be an integer from 1 to 5"


def _orgs(v: Any) -> str | None:
    if type(v) is not list or len(v) > 64 or any(_ident(o) for o in v) or len(set(v)) != len(v):
        return "must be a list of up to 64 distinct org names"
    return None


def _fields(v: Any) -> str | None:
    if v == ["*"]:
        return None
    return _scope(v) or (None if v == sorted(v) else "must be sorted")


def _request(v: Any) -> str | None:
    ok = type(v) is dict and set(v) == {"method", "path", "ts", "sig"} and v["method"] == "GET" \
        and type(v["path"]) is str and 0 < len(v["path"]) <= 2048 and type(v["ts"]) is int and v["ts"] >= 0 \
        and type(v["sig"]) is str and len(v["sig"]) == 128 and _HEXANY.match(v["sig"]) is not None
    return None if ok else 'must be {"method": "GET", "path", "ts", "sig"} of the signed request'


PAYLOADS: dict[str, dict[str, Check]] = {
    "identity.register": {"pubkey": _hex64, "role": _one_of("agent", "admin")},
    "customer.register": {"customer_id": _ident, "customer_key": _or_null(_hex64), "profile_hash": _hex64},
    "customer.update": {"customer_id": _ident, "profile_hash": _hex64},
    "consent.grant": {"customer_id": _ident, "grantee_org": _ident, "scope": _scope,
                      "purpose": _one_of(*PURPOSES), "expires_ts": _or_null(_int)},
    "consent.revoke": {"customer_id": _ident, "grantee_org": _ident},
    "customer.erase": {"customer_id": _ident},
    "ticket.open": {"ticket_id": _ident, "customer_id": _ident, "channel": _text(64), "subject_hash": _hex64},
    "ticket.update": {"ticket_id": _ident, "status": _one_of("open", "in_progress", "resolved", "closed"),
                      "note_hash": _hex64},
    "review.post": {"review_id": _ident, "customer_id": _ident, "org": _ident, "ticket_id": _ident,
                    "rating": _rating, "text_hash": _hex64},
    "loyalty.program": {"program": _ident, "partners": _orgs},
    "loyalty.issue": {"customer_id": _ident, "program": _ident, "amount": _positive_int},
    "loyalty.redeem": {"customer_id": _ident, "program": _ident, "amount": _positive_int, "at_org": _ident},
    "access.read": {"customer_id": _ident, "reader": _hex64, "reader_org": _ident, "fields": _fields,
                    "purpose": _one_of(*PURPOSES), "request": _request},
    "privacy.purged": {"customer_id": _ident, "cause": _hex64, "kind": _one_of("profile", "ticket", "review")},
    "consortium.propose": {"proposal": check_proposal, "deadline_ts": _positive_int},
    "consortium.vote": {"proposal_id": _hex64},
}
TX_TYPES = frozenset(PAYLOADS)
# the types whose private part travels beside the envelope (SPEC §3): type -> (kind of
# private data, the payload field holding its salted hash)
HASHED = {"customer.register": ("profile", "profile_hash"), "customer.update": ("profile", "profile_hash"),
          "ticket.open": ("ticket", "subject_hash"), "ticket.update": ("ticket", "note_hash"),
          "review.post": ("review", "text_hash")}

_BODY: dict[str, Check] = {
    "type": _one_of(*sorted(PAYLOADS)),
    "signer": _hex64,
    "org": lambda v: None if v == "" else _ident(v),
    "nonce": lambda v: None if type(v) is str and 1 <= len(v) <= 64 else "must be a string of 1-64 characters",
    "ts": lambda v: None if type(v) is int and v >= 0 else "must be a non-negative integer (Unix ms)",
    "payload": lambda v: None if type(v) is dict else "must be a map",
}


def _check_fields(obj: dict, spec: dict[str, Check], where: str) -> None:
    for name, check in spec.items():
        if name not in obj:
            raise _malformed(f"{where}: missing field '{name}'")
        why = check(obj[name])
        if why:
            raise _malformed(f"{where}.{name} {why}")
    if len(obj) == len(spec):   # every field of spec is there: nothing else is
        return
    extra = set(obj) - set(spec)
    if extra:
        raise _malformed(f"{where}: unknown field(s) {', '.join(sorted(map(str, extra)))}")


_ENV_HEAD = b"\x82\xa4body"      # msgpack: a map of two, the key "body"
_ENV_SIG = b"\xa3sig\xd9\x80"     # the key "sig", then a str8 of 128 characters


@dataclass(frozen=True, slots=True)
class Tx:
    body: dict
    sig: bytes
    signing_bytes: bytes
    tx_id: str
    # the body's fields as attributes (read many times per transaction by the rules)
    type: str = field(init=False, repr=False, compare=False)
    signer: str = field(init=False, repr=False, compare=False)
    org: str = field(init=False, repr=False, compare=False)
    nonce: str = field(init=False, repr=False, compare=False)
    ts: int = field(init=False, repr=False, compare=False)
    payload: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        b, put = self.body, object.__setattr__
        put(self, "type", b["type"])
        put(self, "signer", b["signer"])
        put(self, "org", b["org"])
        put(self, "nonce", b["nonce"])
        put(self, "ts", b["ts"])
        put(self, "payload", b["payload"])

    def envelope(self) -> dict:
        return {"body": self.body, "sig": self.sig.hex()}

    def encode(self) -> bytes:
        """The stored and gossiped form: canonical msgpack of the envelope. The body is
        canonical already and "body" sorts before "sig", so packing as is gives it; the
        packed body is the signing bytes after their prefix, so it is not packed again."""
        if not self.signing_bytes:
            return msgpack.packb({"body": self.body, "sig": self.sig.hex()}, use_bin_type=True)
        return _ENV_HEAD + self.signing_bytes[len(TX_PREFIX):] + _ENV_SIG + self.sig.hex().encode()

    def signature_ok(self) -> bool:
        return verify(self.signer, self.sig, self.signing_bytes)


def signing_bytes(body: dict) -> bytes:
    return TX_PREFIX + canonical_bytes(body)


def tx_id_of(sb: bytes) -> str:
    return hashlib.sha256(sb).hexdigest()


def parse_envelope(obj: Any) -> Tx:
    """Check the shape of an envelope decoded from JSON or msgpack; the signature is
    not checked here (see `admit`)."""
    if type(obj) is not dict:
        raise _malformed("an envelope must be a map with 'body' and 'sig'")
    if set(obj) != {"body", "sig"}:
        raise _malformed("an envelope has exactly the fields 'body' and 'sig'")
    sig = obj["sig"]
    if type(sig) is not str or len(sig) != 128 or not _HEXANY.match(sig):
        raise _malformed("sig must be 128 lowercase hex characters")
    try:
        body = canonical(obj["body"])
    except EncodingError as e:
        raise _malformed(f"body: {e}") from None
    if type(body) is not dict:
        raise _malformed("body must be a map")
    _check_fields(body, _BODY, "body")
    _check_fields(body["payload"], PAYLOADS[body["type"]], "payload")
    sb = TX_PREFIX + msgpack.packb(body, use_bin_type=True)  # body is canonical already
    limit = MAX_BYTES_BY_TYPE.get(body["type"], MAX_BYTES_DEFAULT)
    if len(sb) > limit:
        raise _malformed(f"a {body['type']} transaction takes at most {limit} bytes, this one {len(sb)}")
    return Tx(body, bytes.fromhex(sig), sb, tx_id_of(sb))


def admit(obj: Any) -> Tx:
    """Parse and verify the signature: what every node does once per transaction."""
    tx = parse_envelope(obj)
    if not tx.signature_ok():
        raise TxError("bad_signature", "the signature does not verify against body.signer")
    return tx


def stored_tx(stored: bytes, checked_id: str | None = None) -> Tx:
    """The transaction of an envelope in its stored form, checked before (a block's
    transactions, an audit worker's): no shape checks, only what the form guarantees.
    With `checked_id` (its tx_id, already checked against it, as an audit's worker
    does) it is only unpacked, for replaying: its signing bytes are left empty."""
    obj = msgpack.unpackb(stored, raw=False)
    body = obj["body"]
    if checked_id is not None:
        return Tx(body, b"", b"", checked_id)
    sb = TX_PREFIX + msgpack.packb(body, use_bin_type=True)  # the stored body is canonical
    return Tx(body, bytes.fromhex(obj["sig"]), sb, tx_id_of(sb))


def decode_tx(data: bytes) -> Tx:
    """An envelope in its stored msgpack form (from a block or a peer)."""
    try:
        obj = unpack_strict(data, MAX_TX_BYTES + 256)
    except EncodingError as e:
        raise _malformed(str(e)) from None
    return parse_envelope(obj)


def sign_tx(key: SigningKey, type_: str, org: str, nonce: str, ts: int, payload: dict) -> dict:
    """A signed envelope (as a JSON-ready map) for `key`."""
    body = {"type": type_, "signer": key.public_hex, "org": org, "nonce": nonce, "ts": ts,
            "payload": payload}
    return {"body": body, "sig": key.sign(signing_bytes(body)).hex()}



def private_hash(salt: bytes, value: dict | str) -> str:
    """SPEC §3: hex SHA-256 of salt + msgpack(canonical(value)), for a profile map or a
    text."""
    return hashlib.sha256(salt + canonical_bytes(value)).hexdigest()

