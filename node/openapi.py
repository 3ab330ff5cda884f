"""The OpenAPI 3 description served at /openapi.json (SPEC §4)."""
from __future__ import annotations

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
        "/v1/customers/{customer_id}": {"get": _op("public record of a customer", params=[_path("customer_id")],
                                                   extra={"404": _ERR})},
        "/v1/customers/{customer_id}/history": {"get": _op(
            "every committed transaction touching a customer, a page at a time (the answer's 'next' is the "
            "'after' of the following page, null on the last)", params=[
                _path("customer_id"), _query("order", {"type": "string", "enum": ["asc", "desc"]}),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                _query("after", {"type": "string", "pattern": "^[0-9]{1,18}\\.[0-9]{1,7}$"})],
            extra={"503": _ERR})},
        "/v1/tickets/{ticket_id}": {"get": _op("a ticket and its timeline", params=[_path("ticket_id")],
                                               extra={"404": _ERR})},
        "/v1/loyalty/{customer_id}": {"get": _op("loyalty balances per program", params=[_path("customer_id")])},
        "/v1/events": {"get": {"summary": "server-sent events, one 'block' event per committed block",
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
