"""SPEC §2: canonical bytes, signing bytes, tx_id, signatures, and what is refused."""
import hashlib
import json
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from crmledger.ledger.canonical import EncodingError, canonical_bytes, trusted_canonical_bytes, unpack_strict
from crmledger.ledger.keys import SigningKey, verify, verify_with_cryptography
from crmledger.ledger.tx import TxError, admit, decode_tx, parse_envelope, sign_tx

VECTORS = json.loads((Path(__file__).parent / "vectors" / "tx_vectors.json").read_text())


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["body"]["type"])
def test_vectors(v):
    key = SigningKey.from_seed(bytes.fromhex(VECTORS["key_seed_hex"]))
    assert key.public_hex == VECTORS["public_key_hex"]
    cb = canonical_bytes(v["body"])
    assert cb.hex() == v["canonical_hex"]
    sb = b"crmledger/tx/v1\n" + cb
    assert sb.hex() == v["signing_hex"]
    assert hashlib.sha256(sb).hexdigest() == v["tx_id"]
    assert key.sign(sb).hex() == v["sig"]          # Ed25519 is deterministic
    assert verify(key.public_hex, bytes.fromhex(v["sig"]), sb)


def test_vectors_parse_to_the_same_tx_id():
    for v in VECTORS["vectors"][:3]:
        tx = admit({"body": v["body"], "sig": v["sig"]})
        assert tx.tx_id == v["tx_id"]


def test_canonical_bytes_by_hand():
    # keys sorted by UTF-8 bytes: "Z" (0x5a) < "a" (0x61) < "b" < "é" (0xc3 0xa9)
    got = canonical_bytes({"b": 1, "é": [True, None], "a": "x", "Z": -1})
    want = (b"\x84" + b"\xa1Z\xff" + b"\xa1a\xa1x" + b"\xa1b\x01"
            + b"\xa2\xc3\xa9" + b"\x92\xc3\xc0")
    assert got == want


@pytest.mark.parametrize("bad, why", [
    ({"x": 1.5}, "float"),
    ({"x": b"\x00"}, "binary"),
    ({"x": 1 << 63}, "64-bit"),
    ({1: "x"}, "keys"),
])
def test_refused_values(bad, why):
    with pytest.raises(EncodingError, match=why):
        canonical_bytes(bad)


def test_too_deep_and_too_large():
    deep = {}
    cur = deep
    for _ in range(40):
        cur["a"] = {}
        cur = cur["a"]
    with pytest.raises(EncodingError, match="deeper"):
        canonical_bytes(deep)
    with pytest.raises(EncodingError, match="more than"):
        canonical_bytes({"x": list(range(20_000))})


ADMIN = SigningKey.from_seed(b"\x01" * 32)


def _env(**payload):
    payload = payload or {"customer_id": "c1", "customer_key": None, "profile_hash": "ab" * 32}
    return sign_tx(ADMIN, "customer.register", "org1", "n1", 1760000000000, payload)


def test_bad_signature_is_its_own_error():
    env = _env()
    env["sig"] = ("0" if env["sig"][0] != "0" else "1") + env["sig"][1:]
    with pytest.raises(TxError) as e:
        admit(env)
    assert e.value.code == "bad_signature"


@pytest.mark.parametrize("mutate, field", [
    (lambda e: e["body"].pop("nonce"), "nonce"),
    (lambda e: e["body"].update(ts=1.0), "float"),
    (lambda e: e["body"].update(extra=1), "unknown field"),
    (lambda e: e["body"]["payload"].update(amount=5), "unknown field"),
    (lambda e: e["body"].update(type="customer.fly"), "type"),
    (lambda e: e["body"].update(signer="AB" * 32), "signer"),
    (lambda e: e["body"].update(nonce=""), "nonce"),
    (lambda e: e["body"].update(nonce="x" * 65), "nonce"),
    (lambda e: e["body"]["payload"].update(profile_hash="zz"), "profile_hash"),
    (lambda e: e.update(sig="xyz"), "sig"),
    (lambda e: e.update(more=1), "exactly"),
])
def test_malformed_envelopes_name_the_problem(mutate, field):
    env = _env()
    mutate(env)
    with pytest.raises(TxError) as e:
        parse_envelope(env)
    assert e.value.code == "malformed" and field in e.value.detail


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 63) - 1) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_text, _json_values, max_size=5))
def test_json_and_msgpack_give_the_same_tx_id(extra):
    payload = {"ticket_id": "t1", "customer_id": "c1", "channel": "web", "subject_hash": "cd" * 32}
    env = sign_tx(ADMIN, "ticket.open", "org1", "n", 1, payload)
    # the body travels as JSON and as msgpack (keys in any order): same tx
    via_json = json.loads(json.dumps(env))
    via_msgpack = unpack_strict(msgpack.packb(env, use_bin_type=True), 1 << 20)
    a, b = admit(via_json), admit(via_msgpack)
    assert a.tx_id == b.tx_id and a.encode() == b.encode()
    assert decode_tx(a.encode()).tx_id == a.tx_id
    # the stored form, built from the signing bytes, is the canonical packing of the envelope
    for tx in (a, admit(sign_tx(ADMIN, "ticket.open", "org1", json.dumps(extra)[:64], 1, payload))):
        assert tx.encode() == msgpack.packb({"body": tx.body, "sig": tx.sig.hex()}, use_bin_type=True)
    # and any value allowed by SPEC §2 encodes canonically, whatever the key order
    shuffled = dict(reversed(list(extra.items())))
    assert canonical_bytes(extra) == canonical_bytes(shuffled)


@settings(max_examples=150, deadline=None)
@given(_json_values)
def test_trusted_encoding_of_world_state_values_is_canonical(value):
    assert trusted_canonical_bytes(value) == canonical_bytes(value)
    assert trusted_canonical_bytes({"b": value, "a": [value]}) == canonical_bytes({"a": [value], "b": value})


def test_both_ed25519_libraries_agree():
    k = SigningKey.generate()
    msg = b"crmledger/tx/v1\n" + b"hello"
    sig = k.sign(msg)
    assert verify(k.public_hex, sig, msg) and verify_with_cryptography(k.public_hex, sig, msg)
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    assert not verify(k.public_hex, bad, msg) and not verify_with_cryptography(k.public_hex, bad, msg)
    assert not verify("00" * 32, sig, msg)
    assert not verify("nothex", sig, msg)


def test_pem_round_trip():
    k = SigningKey.generate()
    assert SigningKey.from_pem(k.to_pem()).public_hex == k.public_hex
    assert b"BEGIN PRIVATE KEY" in k.to_pem()


def test_profile_hash_as_spec_says():
    from crmledger.ledger.tx import private_hash
    salt = bytes.fromhex("00112233445566778899aabbccddeeff")
    profile = {"phone": "+1 555", "email": "a@b.c", "name": "Ada"}
    packed = msgpack.packb({"email": "a@b.c", "name": "Ada", "phone": "+1 555"}, use_bin_type=True)
    assert private_hash(salt, profile) == hashlib.sha256(salt + packed).hexdigest()
