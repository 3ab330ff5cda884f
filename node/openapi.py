"""The OpenAPI 3 description served at /openapi.json (SPEC §4)."""
from __future__ import annotations

from crmledger.ledger.tx import PURPOSES

_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_JSON = {"application/json": {"schema": {"type": "object"}}}


def _op(summary: str, ok: str = "200", params=(), body: bool = False, extra: dict | None = None) -> dict:
    op = {"summary": summary, "responses": {ok: {"description": "success", "content": _JSON}, "400": _ERR}}
    if params:
        op["parameters"] = list(params)
    if body:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}},
            "application/msgpack": {"schema": {"$ref": "#/components/schemas/Envelope"}}}}
    op["responses"].update(extra or {})
    return op


def _path(name: str, pattern: str | None = None) -> dict:
    schema = {"type": "string"} | ({"pattern": pattern} if pattern else {})
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _header(name: str, pattern: str) -> dict:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string", "pattern": pattern}}


# a signed request: hex pubkey, Unix ms, hex Ed25519 signature of
# b"crmledger/req/v1\n" + METHOD + b"\n" + PATH_WITH_QUERY + b"\n" + X-Ts
_SIGNED = [_header("X-Signer", "^[0-9a-f]{64}$"), _header("X-Ts", "^[0-9]{1,18}$"),
           _header("X-Sig", "^[0-9a-f]{128}$")]
_PURPOSES = list(PURPOSES)

OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "crmledger node", "version": "1"},
    "paths": {
        "/v1/tx": {"post": _op("submit a signed transaction", "202", body=True, params=[
            _query("wait", {"type": "string", "enum": ["commit"]}),
            _query("timeout", {"type": "number", "minimum": 0, "maximum": 300})],
            extra={"200": {"description": "committed", "content": _JSON}, "403": _ERR, "409": _ERR, "429": _ERR,
                   "503": _ERR, "504": _ERR})},
        "/v1/tx/batch": {"post": _op("submit a list of signed transactions; each gets its own answer "
                                     "(status_code and the fields of a single submission's answer)", "202",
                                     extra={"503": _ERR})
                         | {"requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "type": "array", "items": {"$ref": "#/components/schemas/Envelope"}}}}}}},
        "/v1/tx/{tx_id}": {"get": _op("status of a transaction", params=[_path("tx_id", "^[0-9a-f]{64}$")])},
        "/v1/blocks/{height}": {"get": _op("a block ('latest' or a height)", params=[
            _path("height"), _query("full", {"type": "string", "enum": ["0", "1"]})],
            extra={"404": _ERR, "503": _ERR})},
        "/v1/status": {"get": _op("this node's role, term, leader, commit index and height")},
        "/v1/customers/{customer_id}": {"get": _op(
            "public record of a customer; signed by an org with ?purpose (and &fields=a,b): the fields, once "
            "the access.read entry filed for the read is committed valid; signed by the customer's own key: the "
            "whole profile", params=[_path("customer_id"), _query("purpose", {"type": "string", "enum": _PURPOSES}),
                                     _query("fields", {"type": "string"}), *_SIGNED],
            extra={"401": _ERR, "403": _ERR, "404": _ERR, "410": _ERR, "503": _ERR, "504": _ERR})},
        "/v1/customers/{customer_id}/access": {"get": _op(
            "every access.read entry about the customer (disclosures and refused attempts); signed by the "
            "customer or the owner org", params=[_path("customer_id"), *_SIGNED],
            extra={"401": _ERR, "403": _ERR, "404": _ERR})},
        "/v1/customers/{customer_id}/consents": {"get": _op(
            "each consent with its state (active, revoked, expired)", params=[_path("customer_id")],
            extra={"404": _ERR})},
        "/v1/customers/{customer_id}/consents/{grantee_org}/receipt": {"get": _op(
            "a consent as a Kantara Initiative Consent Receipt v1.1", params=[_path("customer_id"),
                                                                            _path("grantee_org")],
            extra={"404": _ERR})},
        "/v1/customers/{customer_id}/export": {"get": _op(
            "everything held about the customer in one document; signed by the customer",
            params=[_path("customer_id"), *_SIGNED], extra={"401": _ERR, "403": _ERR, "404": _ERR, "503": _ERR})},
        "/v1/orgs": {"get": _op("the consortium's orgs: contact details and ticket service levels")},
        "/v1/nodes": {"get": _op("the consortium's nodes with their API addresses")},
        "/v1/consortium": {"get": _op("the consortium in force (version, voting policy, orgs with their admin "
                                      "keys, nodes) and every governance proposal with its votes and status")},
        "/v1/orgs/{org}/tickets": {"get": _op("an org's tickets, escalated first; signed by an admin or agent of "
                                              "the org", params=[_path("org"), *_SIGNED],
                                              extra={"401": _ERR, "403": _ERR})},
        "/v1/orgs/{org}/reviews": {"get": _op("an org's reviews: ratings, texts (none once erased), count and mean",
                                              params=[_path("org")], extra={"404": _ERR})},
        "/v1/customers/{customer_id}/history": {"get": _op(
            "every committed transaction touching a customer, a page at a time (the answer's 'next' is the "
            "'after' of the following page, null on the last)", params=[
                _path("customer_id"), _query("order", {"type": "string", "enum": ["asc", "desc"]}),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                _query("after", {"type": "string", "pattern": "^[0-9]{1,18}\\.[0-9]{1,7}$"})],
            extra={"503": _ERR})},
        "/v1/tickets/{ticket_id}": {"get": _op(
            "a ticket and its timeline (status changes and escalations); signed by the customer or the ticket's "
            "org, with its texts", params=[_path("ticket_id"), *_SIGNED], extra={"401": _ERR, "404": _ERR})},
        "/v1/loyalty/{customer_id}": {"get": _op("loyalty balances per program", params=[_path("customer_id")])},
        "/v1/events": {"get": {"summary": "server-sent events: one 'block' event per committed block; live, "
                                          "'ticket' (an escalation) and 'erasure' (naming the orgs that read "
                                          "the customer's data) events",
                               "parameters": [_query("from_height", {"type": "integer", "minimum": 0})],
                               "responses": {"200": {"description": "event stream",
                                                     "content": {"text/event-stream": {"schema": {"type": "string"}}}}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/healthz": {"get": _op("200 while the process serves")},
        "/openapi.json": {"get": _op("this document")},
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error", "detail"],
                  "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
        "Envelope": {"type": "object", "required": ["body", "sig"], "properties": {
            "body": {"type": "object", "required": ["type", "signer", "org", "nonce", "ts", "payload"]},
            "sig": {"type": "string", "pattern": "^[0-9a-f]{128}$"}}},
    }},
}
