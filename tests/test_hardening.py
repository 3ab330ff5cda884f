"""What an outsider can do to a node, in process: malformed values on every decode path
(HTTP JSON, HTTP msgpack, batch, gossip, blocks from peers) get a 4xx and change nothing;
strangers cannot write; a member's flood is shed while another member still commits;
the exact cases an adversarial probe found."""
import asyncio
import json
import os
import re
import stat
import time

import msgpack
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings, strategies as st

from crmledger.node.api import loads_strict, make_app
from crmledger.node.ops.cluster_init import init_cluster
from crmledger.node.config import load_config
from crmledger.ledger import tx as tx_mod
from crmledger.ledger.block import make_block
from crmledger.ledger.keys import SigningKey
from crmledger.ledger.tx import TxError, decode_tx, parse_envelope, sign_tx, signing_bytes
from crmledger.node.runtime import Node


def _node(tmp_path, **tables) -> tuple[Node, SigningKey]:
    d = init_cluster(tmp_path / "c", 1, base_port=1000, tables=tables or None)
    node = Node(load_config(d / "node1.toml"))
    return node, SigningKey.from_pem((d / "keys" / "org1.pem").read_bytes())


def _now() -> int:
    return int(time.time() * 1000)


def _register(key, cid, org="org1", customer_key=None):
    return sign_tx(key, "customer.register", org, f"{cid}-{time.time_ns()}", _now(),
                   {"customer_id": cid, "customer_key": customer_key, "profile_hash": "ab" * 32})


class _Api:
    """A one-node consortium served in process; the driver commits what is admitted."""

    def __init__(self, node: Node, key: SigningKey) -> None:
        self.node, self.key = node, key
        self.client = TestClient(TestServer(make_app(node)))

    async def __aenter__(self):
        self.running = self.node.running(links=False)
        await self.running.__aenter__()
        await self.client.start_server()
        return self

    async def __aexit__(self, *exc):
        await self.client.close()
        await self.running.__aexit__(*exc)

    async def commit(self, env) -> dict:
        r = await self.client.post("/v1/tx?wait=commit", json=env)
        body = await r.json()
        assert r.status == 200, body
        return body


# -- every decode path, as a property ------------------------------------------------------
_strings = st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)
_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70) | _strings
    | st.sampled_from(["\ud800", "a\udfff", "²", "", "*", "ab" * 32, "customer.register"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_strings, inner, max_size=3), max_leaves=6)
_FIELDS = ["type", "signer", "org", "nonce", "ts", "payload", "payload.customer_id", "payload.customer_key",
           "payload.profile_hash", "payload.scope", "payload.extra", "extra"]


def _mutated(key: SigningKey, where: str, value) -> dict:
    """A customer.register (or, for scope, a consent.grant) with one field replaced by
    `value`, signed again, so that only its shape can be wrong."""
    if where == "payload.scope":
        body = {"type": "consent.grant", "signer": key.public_hex, "org": "", "nonce": "n1", "ts": _now(),
                "payload": {"customer_id": "c1", "grantee_org": "org1", "scope": value,
                            "purpose": "dpv:CustomerCare", "expires_ts": None}}
    else:
        body = {"type": "customer.register", "signer": key.public_hex, "org": "org1", "nonce": "n1",
                "ts": _now(), "payload": {"customer_id": "c1", "customer_key": None, "profile_hash": "ab" * 32}}
        if where.startswith("payload."):
            body["payload"][where[8:]] = value
        else:
            body[where] = value
    try:
        sig = key.sign(signing_bytes(body)).hex()
    except Exception:   # not signable as it stands: what a client could still send
        sig = "00" * 64
    return {"body": body, "sig": sig}


@settings(max_examples=200, deadline=None)
@given(where=st.sampled_from(_FIELDS), value=_values)
def test_parsing_refuses_with_tx_error_only(where, value):
    env = _mutated(SigningKey.from_seed(b"k" * 32), where, value)
    try:
        parse_envelope(env)
    except TxError:
        pass
    try:
        packed = msgpack.packb(env)
    except (UnicodeEncodeError, OverflowError, TypeError):
        return
    try:
        decode_tx(packed)
    except TxError:
        pass


def test_every_decode_path_answers_4xx_and_changes_nothing(tmp_path):
    """Over HTTP JSON, HTTP msgpack, a batch, gossip and a block from a peer, a malformed
    transaction gets a 4xx JSON answer (or is dropped, from a peer) and leaves the
    mempool and the chain as they were."""
    loop = asyncio.new_event_loop()
    node, key = _node(tmp_path)
    client = TestClient(TestServer(make_app(node)), loop=loop)   # no driver: nothing commits
    loop.run_until_complete(client.start_server())

    async def check(where, value):
        env = _mutated(key, where, value)
        try:
            parse_envelope(env)
            return   # well formed after all
        except TxError:
            pass
        before = (len(node.mempool), node.dd.ledger.height)
        data = json.dumps(env).encode()
        answers = [await client.post("/v1/tx", data=data, headers={"Content-Type": "application/json"})]
        try:
            packed = msgpack.packb(env)
        except (UnicodeEncodeError, OverflowError, TypeError):
            packed = None
        if packed is not None:
            answers.append(await client.post("/v1/tx", data=packed,
                                             headers={"Content-Type": "application/msgpack"}))
        for r in answers:
            assert r.status == 400, (where, value, r.status, await r.text())
            assert (await r.json())["error"] in ("malformed", "bad_signature")
        good = _register(key, f"g{time.time_ns()}")
        r = await client.post("/v1/tx/batch", data=b"[" + data + b"," + json.dumps(good).encode() + b"]",
                              headers={"Content-Type": "application/json"})
        out = await r.json()
        assert r.status == 202 and [o["status_code"] for o in out] == [400, 202], out
        node.mempool.remove([out[1]["tx_id"]], 0.0)
        if packed is not None:
            await node.gossip.take([packed])   # a peer's gossip: dropped, no exception
            block = make_block(node.key, height=node.dd.ledger.height + 1, prev_hash=node.dd.ledger.head_hash,
                               state_root=node.dd.ledger.state_root, timestamp=_now(), proposer="node1", term=1,
                               index=node.dd.ledger.applied_index + 1, txs=[packed], tx_ids=["00" * 32])
            await node.applier.apply_block(block.header.index, block.encode(), from_log=False)
        assert (len(node.mempool), node.dd.ledger.height) == before

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(where=st.sampled_from(_FIELDS), value=_values)
    def prop(where, value):
        loop.run_until_complete(check(where, value))

    try:
        prop()
    finally:
        loop.run_until_complete(client.close())
        node.close()
        loop.close()


# -- the exact cases -------------------------------------------------------------------------
def test_exact_malformed_values_are_refused(tmp_path):
    key = SigningKey.from_seed(b"e" * 32)
    cases = [("type", ["customer.register"]), ("payload.scope", [["a"], "b"]), ("payload.scope", [{"a": 1}]),
             ("nonce", "\ud800"), ("payload.customer_id", "x\udfff"), ("payload.extra", {"\ud800": 1}),
             ("signer", ["ab" * 32]), ("org", {"o": 1})]
    for where, value in cases:
        with pytest.raises(TxError) as e:
            parse_envelope(_mutated(key, where, value))
        assert e.value.code == "malformed", (where, value)


def test_size_is_bounded_by_type(monkeypatch):
    key = SigningKey.from_seed(b"s" * 32)
    big_scope = [f"f{i:03d}" + "x" * 60 for i in range(64)]   # the largest scope a grant may carry
    grant = parse_envelope(_mutated(key, "payload.scope", big_scope))
    with pytest.raises(TxError, match="1-64 field names"):
        parse_envelope(_mutated(key, "payload.scope", big_scope + ["one-more"]))
    ident = "i" * 128
    ticket = parse_envelope(sign_tx(key, "ticket.open", ident, "n" * 64, _now(), {
        "ticket_id": ident, "customer_id": ident, "channel": "c" * 64, "subject_hash": "ab" * 32}))
    assert len(ticket.signing_bytes) <= tx_mod.MAX_BYTES_DEFAULT < len(grant.signing_bytes)
    monkeypatch.setitem(tx_mod.MAX_BYTES_BY_TYPE, "consent.grant", len(grant.signing_bytes) - 1)
    with pytest.raises(TxError, match="a consent.grant transaction takes at most"):
        parse_envelope(_mutated(key, "payload.scope", big_scope))


def test_json_with_a_key_twice_is_refused():
    assert loads_strict(b'{"a": 1, "b": {"c": 2}}') == {"a": 1, "b": {"c": 2}}
    with pytest.raises(ValueError, match="appears twice"):
        loads_strict(b'{"a": 1, "b": {"c": 2, "c": 3}}')


async def test_exact_requests_get_json_4xx(tmp_path):
    node, key = _node(tmp_path)
    async with _Api(node, key) as api:
        c = api.client
        env = _register(key, "dup")
        raw = json.dumps(env)
        twice = raw[:-1] + ', "sig": "' + "00" * 64 + '"}'   # "sig" twice: the last would win
        for path in ("/v1/customers/%ED%A0%80", "/v1/customers/" + "a" * 129 + "/history",
                     "/v1/tickets/a%20b", "/v1/loyalty/%FF", "/v1/blocks/²", "/v1/blocks/1²",
                     "/v1/events?from_height=²", "/v1/events?from_height=abc",
                     "/v1/customers/x/history?limit=0", "/v1/customers/x/history?limit=²",
                     "/v1/customers/x/history?after=1", "/v1/customers/x/history?order=up"):
            r = await c.get(path)
            assert r.status == 400 and set(await r.json()) >= {"error", "detail"}, path
        r = await c.post("/v1/tx", data=twice, headers={"Content-Type": "application/json"})
        assert r.status == 400 and (await r.json())["error"] == "malformed"
        lone = raw.replace('"nonce": "', '"nonce": "\\ud800')
        r = await c.post("/v1/tx", data=lone, headers={"Content-Type": "application/json"})
        assert r.status == 400 and (await r.json())["error"] == "malformed"
        # a batch with unhashable values after good envelopes: each answered, the good ones admitted
        a, b = _register(key, "ba"), _register(key, "bb")
        bad = json.loads(raw)
        bad["body"]["type"] = ["customer.register"]
        r = await c.post("/v1/tx/batch", json=[a, b, bad])
        out = await r.json()
        assert r.status == 202 and [o["status_code"] for o in out] == [202, 202, 400]
        for o in out[:2]:
            got = await (await c.get(f"/v1/tx/{o['tx_id']}")).json()
            assert got["status"] in ("pending", "committed")
        assert node.dd.ledger.height < 5


# -- who may write -----------------------------------------------------------------------------
async def test_a_stranger_is_refused_over_http_and_over_gossip(tmp_path):
    node, key = _node(tmp_path)
    stranger = SigningKey.from_seed(b"x" * 32)
    async with _Api(node, key) as api:
        for env in (_register(stranger, "s1"), _register(stranger, "s2", org=""),
                    sign_tx(stranger, "consent.grant", "", "n", _now(), {
                        "customer_id": "c1", "grantee_org": "org1", "scope": ["*"], "purpose": "dpv:CustomerCare",
                        "expires_ts": None})):
            r = await api.client.post("/v1/tx", json=env)
            assert r.status == 403 and (await r.json())["error"] == "unknown_signer"
        r = await api.client.post("/v1/tx/batch", json=[_register(stranger, "s3")])
        assert (await r.json())[0]["status_code"] == 403
        # over gossip: a peer that passes it on gets it dropped, not kept, not proposed
        gossiped = decode_tx(msgpack.packb(_register(stranger, "s4")))
        node._on_frame("node1", "txs", [gossiped.encode()])   # queued for the intake
        await node.gossip.take(node.gossip.incoming.get_nowait()[1])
        assert gossiped.tx_id not in node.mempool
        assert b'reason="unknown_signer_gossiped"} 1.0' in node.render_metrics()
        # a customer's own registered key is a member for its own record, not for another's
        ck = SigningKey.from_seed(b"c" * 32)
        await api.commit(_register(key, "mine", customer_key=ck.public_hex))
        await api.commit(_register(key, "other"))
        grant = {"grantee_org": "org1", "scope": ["*"], "purpose": "dpv:CustomerCare", "expires_ts": None}
        body = await api.commit(sign_tx(ck, "consent.grant", "", "g1", _now(), {"customer_id": "mine", **grant}))
        assert body["valid"]
        r = await api.client.post("/v1/tx", json=sign_tx(ck, "consent.grant", "", "g2", _now(),
                                                          {"customer_id": "other", **grant}))
        assert r.status == 403
        assert node.dd.ledger.history("s1") == [] and node.dd.ledger.history("other")[-1].code == "valid"


async def test_a_members_flood_is_shed_while_another_member_commits(tmp_path):
    node, key = _node(tmp_path, limits={"signer_tx_per_s": 20, "signer_burst": 50})
    agent = SigningKey.from_seed(b"a" * 32)
    async with _Api(node, key) as api:
        await api.commit(sign_tx(key, "identity.register", "org1", "agent", _now(),
                                 {"pubkey": agent.public_hex, "role": "agent"}))
        r = await api.client.post("/v1/tx/batch", json=[_register(key, f"f{i}") for i in range(200)])
        codes = [o["status_code"] for o in await r.json()]
        assert codes.count(202) <= 50 and codes.count(429) >= 149, codes
        r = await api.client.post("/v1/tx", json=_register(key, "one-more"))
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        assert (await r.json())["error"] == "rate_limited"
        body = await api.commit(sign_tx(agent, "customer.register", "org1", "a1", _now(), {
            "customer_id": "by-agent", "customer_key": None, "profile_hash": "ab" * 32}))
        assert body["valid"]


async def test_a_signer_cannot_fill_the_mempool(tmp_path):
    node, key = _node(tmp_path, limits={"signer_max_pending": 5})
    client = TestClient(TestServer(make_app(node)))   # no driver: nothing leaves the pool
    await client.start_server()
    try:
        codes = [(await client.post("/v1/tx", json=_register(key, f"p{i}"))).status for i in range(7)]
        assert codes == [202] * 5 + [429] * 2
    finally:
        await client.close()
        node.close()


def test_private_data_is_readable_by_the_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        node, _ = _node(tmp_path)
        node.close()
    finally:
        os.umask(old)
    d = node.cfg.data_dir
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for f in d.glob("private.db*"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


# -- connections -----------------------------------------------------------------------------
class _Served:
    """The API on a real socket through the runner the node uses (GuardedRunner)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __aenter__(self):
        from aiohttp import web

        from crmledger.node.httpguard import GuardedRunner
        self.runner = GuardedRunner(make_app(self.node), access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()
        self.node.close()

    async def raw(self, data: bytes, read_for: float = 5.0) -> bytes:
        """Send `data` on a new connection, then read until the server closes it."""
        r, w = await asyncio.open_connection("127.0.0.1", self.port)
        w.write(data)
        try:
            return await asyncio.wait_for(r.read(), read_for)
        finally:
            w.close()


async def test_parser_errors_are_answered_in_json(tmp_path):
    node, _ = _node(tmp_path)
    async with _Served(node) as s:
        out = await s.raw(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"400" and b"application/json" in head, out[:300]
        err = json.loads(body)
        assert set(err) == {"error", "detail"} and "8190 bytes" in err["detail"]
        out = await s.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert out.split(b" ")[1] == b"400" and b"application/json" in out


async def test_slow_and_idle_connections_are_closed_and_capped_per_client(tmp_path):
    node, _ = _node(tmp_path, limits={"header_timeout_s": 1, "idle_timeout_s": 2, "client_connections": 3})
    async with _Served(node) as s:
        loop = asyncio.get_running_loop()
        # headers trickled a byte at a time: closed once the header time is up
        r, w = await asyncio.open_connection("127.0.0.1", s.port)
        t0 = loop.time()
        closed_after = None
        for ch in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                w.write(bytes([ch]))
                await w.drain()
                if await asyncio.wait_for(r.read(1), 0.2) == b"":
                    closed_after = loop.time() - t0
                    break
            except asyncio.TimeoutError:
                continue
            except ConnectionError:
                closed_after = loop.time() - t0
                break
        w.close()
        assert closed_after is not None and closed_after < 3, closed_after
        # an idle keep-alive connection is closed after the idle time
        r, w = await asyncio.open_connection("127.0.0.1", s.port)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = loop.time()
        rest = await asyncio.wait_for(r.read(), 10)   # the answer, then EOF when closed
        assert b"200 OK" in rest and 1.5 < loop.time() - t0 < 5
        w.close()
        # at most three connections per client: the fourth is answered 503 and closed
        held = [await asyncio.open_connection("127.0.0.1", s.port) for _ in range(3)]
        out = await s.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 503") and b"too_many_connections" in out
        for _, w in held:
            w.close()
        await asyncio.sleep(0.1)   # let the server see them go
        text = (await s.raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).decode()
        assert 'crmledger_http_connections_closed{reason="too_many_connections"} 1.0' in text
        timed_out = re.search(r'crmledger_http_connections_closed\{reason="timed_out"\} (\S+)', text).group(1)
        assert float(timed_out) >= 1   # the trickler (the idle one may go by aiohttp's own keep-alive limit)


# -- the audit trail ------------------------------------------------------------------------------
async def test_a_history_of_50000_entries_pages_completely_both_ways(tmp_path):
    node, key = _node(tmp_path)
    led = node.dd.ledger
    led.index.merge_at = 20_000   # part of it in the stored runs, part in memory
    ts = _now()
    want = []

    def block(envs):
        txs = [parse_envelope(e) for e in envs]
        b = make_block(node.key, height=led.height + 1, prev_hash=led.head_hash, state_root=led.state_root,
                       timestamp=ts, proposer="node1", term=1, index=led.applied_index + 1,
                       txs=[t.encode() for t in txs], tx_ids=[t.tx_id for t in txs])
        out = led.apply_block(b, txs, b.header.index)
        return b.header.height, [r.code for r in out.results]

    block([_register(key, "c1"), _register(key, "c2")])
    want.append((1, 0))
    for n in range(51):
        envs = [sign_tx(key, "loyalty.issue", "org1", f"l{n}-{i}", ts, {"customer_id": "c1", "program": "p",
                                                                       "amount": 1}) for i in range(999)]
        envs.insert(n % 7, _register(key, f"x{n}"))   # someone else's entry among them
        h, codes = block(envs)
        want += [(h, p) for p in range(1000) if p != n % 7]
    assert len(want) == 50_950 and led.index.runs
    client = TestClient(TestServer(make_app(node)))
    await client.start_server()
    try:
        for order, expect in (("asc", want), ("desc", want[::-1])):
            got, after, pages = [], None, 0
            while True:
                url = f"/v1/customers/c1/history?order={order}&limit=1000" + (f"&after={after}" if after else "")
                page = await (await client.get(url)).json()
                got += [(e["height"], e["position"]) for e in page["history"]]
                pages += 1
                after = page["next"]
                if after is None:
                    break
            assert got == expect and pages == 51, (order, pages)
        page = await (await client.get("/v1/customers/c1/history")).json()   # the defaults
        assert page["order"] == "asc" and len(page["history"]) == 100 and page["next"] == "2.99"
        e = page["history"][0]
        assert (e["type"], e["code"], e["timestamp"]) == ("customer.register", "valid", ts)
        page = await (await client.get("/v1/customers/c1/history?order=desc&limit=3&after=2.5")).json()
        assert [(x["height"], x["position"]) for x in page["history"]] == [(2, 4), (2, 3), (2, 2)]
        assert (await (await client.get("/v1/customers/nobody/history")).json())["history"] == []
    finally:
        await client.close()
        node.close()
