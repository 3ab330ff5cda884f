"""A JSON Schema of the Kantara Initiative Consent Receipt v1.1, written from its list of
fields, with the fields v1.1 marks required; the tests validate every receipt with it."""

_STR = {"type": "string"}

_CONTROLLER = {
    "type": "object",
    "required": ["piiController", "contact", "address", "email", "phone"],
    "properties": {"piiController": _STR, "onBehalf": {"type": "boolean"}, "contact": _STR,
                   "address": _STR, "email": _STR, "phone": _STR, "piiControllerUrl": _STR},
}

_PURPOSE = {
    "type": "object",
    "required": ["purpose", "purposeCategory", "consentType", "piiCategory", "termination",
                 "thirdPartyDisclosure"],
    "properties": {
        "purpose": _STR, "consentType": _STR, "primaryPurpose": {"type": "boolean"}, "termination": _STR,
        "purposeCategory": {"type": "array", "items": _STR, "minItems": 1},
        "piiCategory": {"type": "array", "items": _STR, "minItems": 1},
        "thirdPartyDisclosure": {"type": "boolean"}, "thirdPartyName": _STR,
    },
}

RECEIPT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Kantara Initiative Consent Receipt v1.1",
    "type": "object",
    "required": ["version", "jurisdiction", "consentTimestamp", "collectionMethod", "consentReceiptID",
                 "language", "piiPrincipalId", "piiControllers", "policyUrl", "services", "sensitive", "spiCat"],
    "properties": {
        "version": {"const": "KI-CR-v1.1.0"},
        "jurisdiction": _STR,
        "consentTimestamp": {"type": "integer", "minimum": 0},
        "collectionMethod": _STR,
        "consentReceiptID": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "publicKey": _STR,
        "language": _STR,
        "piiPrincipalId": _STR,
        "piiControllers": {"type": "array", "items": _CONTROLLER, "minItems": 1},
        "policyUrl": _STR,
        "services": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["service", "purposes"],
            "properties": {"service": _STR, "purposes": {"type": "array", "items": _PURPOSE, "minItems": 1}}}},
        "sensitive": {"type": "boolean"},
        "spiCat": {"type": "array", "items": _STR},
    },
}
