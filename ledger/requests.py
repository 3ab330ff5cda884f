"""Signed requests (SPEC §4): the bytes an org's or a customer's key signs to read, the
headers that carry the signature, and the profile read a request asks for. The rules
check an `access.read` entry's request with these same functions, so a node can file
only a request the reader really signed, for the customer, purpose and fields it names."""
from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

from .keys import SigningKey, verify
from .tx import PURPOSES, is_ident

REQ_PREFIX = b"crmledger/req/v1\n"
REQUEST_WINDOW_MS = 300_000   # a request's X-Ts may be this far from the clock that judges it
ALL_FIELDS = ["*"]


def request_bytes(method: str, path: str, ts: int) -> bytes:
    """`path` is the path with its query, exactly as sent."""
    return REQ_PREFIX + method.encode() + b"\n" + path.encode() + b"\n" + str(ts).encode()


def sign_request(key: SigningKey, method: str, path: str, ts: int) -> dict[str, str]:
    """The headers of a request signed by `key`."""
    return {"X-Signer": key.public_hex, "X-Ts": str(ts), "X-Sig": key.sign(request_bytes(method, path, ts)).hex()}


def request_ok(signer: str, method: str, path: str, ts: int, sig_hex: str) -> bool:
    try:
        sig = bytes.fromhex(sig_hex)
    except (ValueError, TypeError):
        return False
    return len(sig) == 64 and verify(signer, sig, request_bytes(method, path, ts))


class ProfileRead(NamedTuple):
    customer_id: str
    purpose: str
    fields: list[str]   # sorted, unique; ["*"] when the request names none (the whole profile)


def parse_profile_read(path: str) -> ProfileRead | str:
    """What `GET /v1/customers/{id}?purpose=P[&fields=a,b]` asks for, or why it is not
    such a request."""
    parts = urlsplit(path)
    segs = parts.path.split("/")
    if len(segs) != 4 or segs[:3] != ["", "v1", "customers"] or not is_ident(segs[3]):
        return "the path is not /v1/customers/{customer_id}"
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query),
                          max_num_fields=8)
    except ValueError:
        return "the query cannot be parsed"
    q = dict(query)
    if len(q) != len(query) or set(q) - {"purpose", "fields"}:
        return "the query names purpose and, optionally, fields, each once"
    purpose = q.get("purpose")
    if purpose not in PURPOSES:
        return f"purpose must be one of {', '.join(PURPOSES)}"
    if "fields" not in q:
        return ProfileRead(segs[3], purpose, ALL_FIELDS)
    fields = q["fields"].split(",")
    if not 0 < len(fields) <= 64 or len(set(fields)) != len(fields) \
            or not all(is_ident(f) and len(f) <= 64 and f != "*" for f in fields):
        return "fields is a comma-separated list of up to 64 distinct field names"
    return ProfileRead(segs[3], purpose, sorted(fields))


def scope_covers(scope: list[str], fields: list[str]) -> bool:
    return scope == ALL_FIELDS or (fields != ALL_FIELDS and set(fields) <= set(scope))
