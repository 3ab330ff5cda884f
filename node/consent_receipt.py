"""A consent as a receipt in the shape of the Kantara Initiative Consent Receipt v1.1,
built from the `consent.grant` on the chain and the controllers' contact details in the
genesis; and the state of a consent at a given time."""
from __future__ import annotations

from typing import Mapping

from crmledger.ledger.consortium import Consortium

VERSION = "KI-CR-v1.1.0"
JURISDICTION = "EU"   # GDPR: the consent and its receipt follow Art. 7
COLLECTION = "signed by the customer's key in a consent.grant transaction on the consortium's chain"


def consent_state(c: dict, now_ms: int) -> str:
    if c.get("revoked") is not None:
        return "revoked"
    if c["expires_ts"] is not None and c["expires_ts"] <= now_ms:
        return "expired"
    return "active"


def _contact(consortium: Consortium, org: str) -> Mapping[str, str]:
    """An org's contact details (none for an org no longer a member)."""
    info = consortium.org_info.get(org)
    return info.contact if info is not None else {}


def _controller(consortium: Consortium, org: str, on_behalf: bool) -> dict:
    contact = _contact(consortium, org)
    return {"piiController": contact.get("name", org), "onBehalf": on_behalf,
            "contact": contact.get("name", org), "address": contact.get("address", ""),
            "email": contact.get("email", ""), "phone": contact.get("phone", ""),
            "piiControllerUrl": contact.get("url", "")}


def consent_receipt(consortium: Consortium, cid: str, customer: dict, grantee: str, c: dict, now_ms: int) -> dict:
    owner = customer["owner"]
    controllers = [_controller(consortium, grantee, False)]
    if owner != grantee:   # the owner org holds the data and discloses it on the grantee's behalf
        controllers.append(_controller(consortium, owner, True))
    url = _contact(consortium, grantee).get("url", "")
    expiry = "until revoked by the customer" if c["expires_ts"] is None else \
        f"at {c['expires_ts']} (Unix ms), or when revoked by the customer before"
    return {
        "version": VERSION,
        "jurisdiction": JURISDICTION,
        "consentTimestamp": c["granted_ts"] // 1000,
        "collectionMethod": COLLECTION,
        "consentReceiptID": c["tx_id"],
        "publicKey": customer["key"] or "",
        "language": "en",
        "piiPrincipalId": cid,
        "piiControllers": controllers,
        "policyUrl": f"{url.rstrip('/')}/privacy" if url else "",
        "services": [{
            "service": f"customer records shared through the consortium ledger with {grantee}",
            "purposes": [{
                "purpose": c["purpose"],
                "consentType": "EXPLICIT",
                "purposeCategory": [c["purpose"]],
                "piiCategory": list(c["scope"]),
                "primaryPurpose": True,
                "termination": expiry,
                "thirdPartyDisclosure": grantee != owner,
                "thirdPartyName": grantee if grantee != owner else "",
            }],
        }],
        "sensitive": False,
        "spiCat": [],
        # beyond v1.1: where this consent stands now, on the chain
        "state": consent_state(c, now_ms),
    }
