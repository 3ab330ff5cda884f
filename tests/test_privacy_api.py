"""The private-data surface of one node, in process: a private part that does not match
its hash is refused with nothing kept, and no signed-request header or private part,
however malformed, gets a 500 (properties), plus the exact refusals."""
from __future__ import annotations

import asyncio
import json
import time

from hypothesis import HealthCheck, given, settings, strategies as st

from crmledger.ledger.keys import SigningKey
from crmledger.ledger.requests import sign_request
from crmledger.ledger.tx import private_hash, sign_tx
from tests.test_hardening import _Api, _node, _now, _values

PROFILE = {"name": "Ada Lovelace", "email": "ada@example.org"}
SALT = bytes(range(16))
READ = "/v1/customers/c1?purpose=dpv:CustomerCare&fields=email"


def _private_count(node) -> int:
    return node.dd.private.conn.execute("SELECT count(*) FROM private").fetchone()[0]


def _register(key, cid, ck, private, h=None):
    env = sign_tx(key, "customer.register", "org1", f"{cid}-{time.time_ns()}", _now(), {
        "customer_id": cid, "customer_key": ck.public_hex, "profile_hash": h or private_hash(SALT, PROFILE)})
    return {**env, "private": private}


def test_private_parts_and_signed_headers_never_get_a_500(tmp_path):
    loop = asyncio.new_event_loop()
    node, key = _node(tmp_path)
    ck = SigningKey.generate()
    async def start() -> _Api:
        return await _Api(node, key).__aenter__()
    api = loop.run_until_complete(start())
    good = {"salt": SALT.hex(), "profile": PROFILE}
    assert loop.run_until_complete(api.commit(_register(key, "c1", ck, good)))["valid"]
    held = _private_count(node)
    assert held == 1

    async def submit(private):
        r = await api.client.post("/v1/tx", data=json.dumps(_register(key, f"x{time.time_ns()}", ck, private)),
                                  headers={"Content-Type": "application/json"})
        assert r.status == 400 and (await r.json())["error"] in ("bad_private", "malformed"), await r.text()
        assert _private_count(node) == held   # nothing kept

    async def read(headers):
        r = await api.client.get(READ, headers=headers)
        assert 400 <= r.status < 500, (headers, r.status, await r.text())
        assert set(await r.json()) >= {"error", "detail"}

    header = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=130)

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(private=_values | st.fixed_dictionaries({"salt": st.sampled_from([SALT.hex(), "zz", ""]),
                                                    "profile": _values}))
    def private_parts(private):
        loop.run_until_complete(submit(private))

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(signer=header | st.just(key.public_hex), ts=header | st.just(str(_now())), sig=header)
    def headers(signer, ts, sig):
        loop.run_until_complete(read({"X-Signer": signer, "X-Ts": ts, "X-Sig": sig}))

    try:
        private_parts()
        headers()
    finally:
        loop.run_until_complete(api.__aexit__(None, None, None))
        loop.close()


async def test_exact_refusals(tmp_path):
    node, key = _node(tmp_path)
    ck = SigningKey.generate()
    async with _Api(node, key) as api:
        c = api.client
        # a profile that does not match its hash: 400, and nothing kept
        r = await c.post("/v1/tx", json=_register(key, "c0", ck, {"salt": SALT.hex(), "profile": {"name": "Eve"}}))
        assert r.status == 400 and (await r.json())["error"] == "bad_private" and _private_count(node) == 0
        await api.commit(_register(key, "c1", ck, {"salt": SALT.hex(), "profile": PROFILE}))
        # the customer reads their whole profile; another key is refused; a purpose needs a signature
        r = await c.get("/v1/customers/c1", headers=sign_request(ck, "GET", "/v1/customers/c1", _now()))
        assert r.status == 200 and (await r.json())["profile"] == PROFILE
        stranger = SigningKey.generate()
        r = await c.get("/v1/customers/c1", headers=sign_request(stranger, "GET", "/v1/customers/c1", _now()))
        assert r.status == 403
        assert (await c.get(READ)).status == 401
        # a stranger's read is refused before anything is filed; the owner org reads without consent
        r = await c.get(READ, headers=sign_request(stranger, "GET", READ, _now()))
        assert r.status == 403 and (await r.json())["error"] == "unknown_signer"
        height = node.dd.ledger.height
        r = await c.get(READ, headers=sign_request(key, "GET", READ, _now()))
        body = await r.json()
        assert r.status == 200 and body["profile"] == {"email": PROFILE["email"]} and body["height"] > height
        # a bad purpose is a 400; the signature must be over the path as sent
        bad = "/v1/customers/c1?purpose=marketing"
        r = await c.get(bad, headers=sign_request(key, "GET", bad, _now()))
        assert r.status == 400
        r = await c.get(READ, headers=sign_request(key, "GET", READ + "&x", _now()))
        assert r.status == 401
        # the export and the access log are the customer's (or the owner org's, for the log)
        hdr = sign_request(stranger, "GET", "/v1/customers/c1/export", _now())
        assert (await c.get("/v1/customers/c1/export", headers=hdr)).status == 403
        r = await c.get("/v1/customers/c1/access", headers=sign_request(ck, "GET", "/v1/customers/c1/access", _now()))
        assert [e["code"] for e in (await r.json())["access"]] == ["valid"]
