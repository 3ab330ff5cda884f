"""Writes tx_vectors.json: transaction bodies with their canonical bytes, signing bytes,
tx_id and an Ed25519 signature by a fixed key, for clients in any language to check
themselves against. Run from the repository root: python tests/vectors/make_tx_vectors.py"""
import hashlib
import json
from pathlib import Path

from crmledger.ledger.canonical import canonical_bytes
from crmledger.ledger.keys import SigningKey
from crmledger.ledger.tx import TX_PREFIX

SEED = hashlib.sha256(b"crmledger test vector key").digest()
KEY = SigningKey.from_seed(SEED)

BODIES = [
    {"type": "customer.register", "signer": KEY.public_hex, "org": "org1", "nonce": "1",
     "ts": 1760000000000, "payload": {"customer_id": "cust-001", "customer_key": None,
                                      "profile_hash": "00" * 32}},
    {"type": "consent.grant", "signer": KEY.public_hex, "org": "", "nonce": "n-\u00e9\u4e2d",
     "ts": 1760000000001, "payload": {"customer_id": "cust-001", "grantee_org": "org2",
                                      "scope": ["email", "phone"], "purpose": "dpv:CustomerCare",
                                      "expires_ts": 1790000000000}},
    {"type": "loyalty.issue", "signer": KEY.public_hex, "org": "org1", "nonce": "x" * 64,
     "ts": 0, "payload": {"customer_id": "c", "program": "miles", "amount": 9223372036854775807}},
    {"type": "ticket.update", "signer": KEY.public_hex, "org": "org1", "nonce": "t",
     "ts": 1760000000002, "payload": {"ticket_id": "T-1", "status": "in_progress",
                                      "note_hash": "ab" * 32, "zz": {"b": -1, "a": [True, False, None]},
                                      "\u00e9": "key sorted by UTF-8 bytes", "Z": "upper case sorts first"}},
]


def main() -> None:
    out = []
    for body in BODIES:
        cb = canonical_bytes(body)
        sb = TX_PREFIX + cb
        out.append({"body": body, "canonical_hex": cb.hex(), "signing_hex": sb.hex(),
                    "tx_id": hashlib.sha256(sb).hexdigest(), "sig": KEY.sign(sb).hex()})
    doc = {"key_seed_hex": SEED.hex(), "public_key_hex": KEY.public_hex,
           "note": "the last body is not a valid ticket.update payload: it only shows canonical ordering",
           "vectors": out}
    Path(__file__).with_name("tx_vectors.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
