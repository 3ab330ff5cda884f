"""The HTTP API in process, on a one-node consortium (which commits on its own)."""
import asyncio
import json
import time

import msgpack
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings, strategies as st

from crmledger.node.backlog import Backlog
from crmledger.node.api import make_app
from crmledger.node.ops.cluster_init import init_cluster
from crmledger.node.config import load_config
from crmledger.ledger.keys import SigningKey
from crmledger.ledger.tx import sign_tx
from crmledger.node.openapi import OPENAPI
from crmledger.node.runtime import Node


def _node(tmp_path, **tables) -> tuple[Node, SigningKey]:
    d = init_cluster(tmp_path / "c", 1, base_port=1000, tables=tables or None)
    node = Node(load_config(d / "node1.toml"))
    return node, SigningKey.from_pem((d / "keys" / "org1.pem").read_bytes())


def _env(key, cid="c1", nonce=None):
    return sign_tx(key, "customer.register", "org1", nonce or f"{cid}-{time.time_ns()}",
                   int(time.time() * 1000), {"customer_id": cid, "customer_key": None, "profile_hash": "ab" * 32})


@pytest.fixture
async def api(tmp_path):
    node, key = _node(tmp_path)
    client = TestClient(TestServer(make_app(node)))
    async with node.running(links=False):
        await client.start_server()
        try:
            yield client, node, key
        finally:
            await client.close()


async def test_submit_wait_and_statuses(api):
    client, node, key = api
    env = _env(key)
    r = await client.post("/v1/tx?wait=commit", json=env)
    body = await r.json()
    assert r.status == 200 and body["status"] == "committed" and body["valid"] and body["code"] == "valid"
    assert (await client.post("/v1/tx", json=env)).status == 409
    got = await (await client.get(f"/v1/tx/{body['tx_id']}")).json()
    assert got["status"] == "committed" and got["height"] == body["height"]
    assert (await (await client.get("/v1/tx/" + "0" * 64)).json())["status"] == "unknown"
    blk = await (await client.get("/v1/blocks/latest?full=1")).json()
    assert blk["txs"] == [body["tx_id"]] and blk["results"] == ["valid"] and blk["envelopes"][0] == env
    assert (await client.get("/v1/blocks/99")).status == 404
    cust = await (await client.get("/v1/customers/c1")).json()
    assert cust["owner"] == "org1" and cust["erased"] is False
    st_ = await (await client.get("/v1/status")).json()
    assert st_["role"] == "leader" and st_["height"] == 1 and st_["leader_id"] == "node1"


async def test_msgpack_and_json_give_the_same_tx(api):
    client, node, key = api
    env = _env(key, "c2")
    r = await client.post("/v1/tx", data=msgpack.packb(env), headers={"Content-Type": "application/msgpack"})
    a = await r.json()
    assert r.status == 202 and a["status"] == "pending"
    r2 = await client.post("/v1/tx", data=json.dumps(env), headers={"Content-Type": "application/json"})
    assert (await r2.json())["tx_id"] == a["tx_id"]


async def test_batch_reports_each_in_order(api):
    client, node, key = api
    good = _env(key, "b1")
    bad = dict(good, sig="00" * 64)
    r = await client.post("/v1/tx/batch", json=[good, bad, {"nope": 1}, _env(key, "b2")])
    out = await r.json()
    assert r.status == 202
    assert [o["status_code"] for o in out] == [202, 400, 400, 202]
    assert out[1]["error"] == "bad_signature" and out[2]["error"] == "malformed"


async def test_events_replay_then_follow(api):
    client, node, key = api
    for i in range(2):
        assert (await client.post("/v1/tx?wait=commit", json=_env(key, f"e{i}"))).status == 200
    resp = await client.get("/v1/events?from_height=1")
    seen = []
    async def read():
        async for line in resp.content:
            if line.startswith(b"data: "):
                seen.append(json.loads(line[6:])["height"])
                if len(seen) == 3:
                    return
    reader = asyncio.create_task(read())
    await asyncio.sleep(0)
    assert (await client.post("/v1/tx?wait=commit", json=_env(key, "e2"))).status == 200
    await asyncio.wait_for(reader, 10)
    assert seen == [1, 2, 3]
    resp.close()


async def test_full_mempool_answers_503_with_retry_after(tmp_path):
    node, key = _node(tmp_path, mempool={"max_txs": 2})
    client = TestClient(TestServer(make_app(node)))   # no driver: nothing leaves the pool
    await client.start_server()
    try:
        codes = [(await client.post("/v1/tx", json=_env(key, f"m{i}"))) for i in range(3)]
        assert [r.status for r in codes] == [202, 202, 503]
        assert codes[2].headers["Retry-After"] == "1" and (await codes[2].json())["error"] == "overloaded"
    finally:
        await client.close()
        node.close()


async def test_beyond_what_the_cluster_commits_submissions_are_shed(tmp_path):
    node, key = _node(tmp_path, blocks={"max_txs": 4}, mempool={"max_queue_ms": 500})
    client = TestClient(TestServer(make_app(node)))   # no driver: nothing leaves the pool
    await client.start_server()
    try:
        # nothing committed yet: room for a full block
        codes = [(await client.post("/v1/tx", json=_env(key, f"s{i}"))).status for i in range(4)]
        assert codes == [202] * 4 and node.backlog.limit() == 4
        r = await client.post("/v1/tx", json=_env(key, "s4"))
        body = await r.json()
        assert r.status == 503 and r.headers["Retry-After"] == "1" and body["error"] == "overloaded"
        assert "4 transactions are waiting" in body["detail"]
        r = await client.post("/v1/tx/batch", json=[_env(key, "s5")])   # refused whole, before decoding
        assert r.status == 503 and r.headers["Retry-After"] == "1"
        # the cluster commits 40 tx/s: half a second of that is 20 transactions
        t = time.monotonic()
        for k in range(3):
            node.backlog.committed(20, t + k * 0.5)
        assert node.backlog.limit() == 20
        assert (await client.post("/v1/tx", json=_env(key, "s4"))).status == 202
    finally:
        await client.close()
        node.close()


async def test_a_submission_held_for_room_is_taken_when_a_block_makes_it(tmp_path):
    node, key = _node(tmp_path, blocks={"max_txs": 2}, mempool={"max_queue_ms": 2000})
    client = TestClient(TestServer(make_app(node)))   # no driver: blocks are played by hand
    await client.start_server()
    try:
        first = await (await client.post("/v1/tx", json=_env(key, "h0"))).json()
        assert (await client.post("/v1/tx", json=_env(key, "h1"))).status == 202
        held = asyncio.create_task(client.post("/v1/tx", json=_env(key, "h2")))   # full: held, up to 1 s
        await asyncio.sleep(0.05)
        assert not held.done()
        node.mempool.remove([first["tx_id"]], time.monotonic())   # a block commits h0
        node._block_done(1)
        r = await asyncio.wait_for(held, 5)
        assert r.status == 202 and len(node.mempool) == 2
    finally:
        await client.close()
        node.close()


def test_backlog_follows_the_commit_rate():
    b = Backlog(max_queue_ms=500, floor=10)
    assert b.limit() == 10
    b.committed(0, 0.0)
    b.committed(1000, 0.5)      # 2,000 tx/s over the first window
    assert b.limit() == 1000
    b.committed(0, 1.0)         # then nothing: the estimate halves each window, to the floor
    assert b.limit() == 500
    for k in range(20):
        b.committed(0, 1.5 + k * 0.5)
    assert b.limit() == 10


async def test_openapi_lists_every_route(api):
    client, node, key = api
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.") and set(doc["paths"]) == set(OPENAPI["paths"])
    routes = {r.resource.canonical for r in client.app.router.routes()} - {"/ui", "/ui/"}   # pages, not API
    assert routes == set(doc["paths"])
    assert (await client.get("/healthz")).status == 200
    assert b"crmledger_raft_term" in await (await client.get("/metrics")).read()


_junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                     max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/tx", "/v1/tx/batch", "/v1/tx/{x}", "/v1/blocks/{x}", "/v1/customers/{x}",
                             "/v1/customers/{x}/history", "/v1/tickets/{x}", "/v1/loyalty/{x}", "/v1/status",
                             "/v1/customers/{x}/access", "/v1/customers/{x}/consents", "/v1/customers/{x}/export",
                             "/v1/customers/{x}/consents/{x}/receipt", "/v1/orgs/{x}/reviews",
                             "/v1/orgs/{x}/tickets", "/v1/orgs", "/v1/nodes"]),
       x=st.text(alphabet="abcdef0123456789-_.%", max_size=70), body=_junk,
       ctype=st.sampled_from(["application/json", "application/msgpack", "text/html"]),
       query=st.sampled_from(["", "?wait=commit&timeout=0.01", "?wait=x", "?timeout=-1", "?full=1",
                              "?order=desc&limit=5&after=1.0", "?limit=%C2%B2", "?after=abc", "?order=up",
                              "?from_height=%C2%B2", "?purpose=dpv:CustomerCare&fields=a,,b",
                              "?purpose=%ED%A0%80", "?fields=*"]))
def test_no_input_gives_a_500(tmp_path_factory, path, x, body, ctype, query):
    async def run():
        node, key = _node(tmp_path_factory.mktemp("fuzz"))
        client = TestClient(TestServer(make_app(node)))
        await client.start_server()
        try:
            url = path.replace("{x}", x or "x") + query
            try:
                data = msgpack.packb(body) if ctype == "application/msgpack" else json.dumps(body).encode()
            except OverflowError:   # msgpack cannot carry it: send truncated msgpack instead
                data = b"\xcf\x00"
            for method in ("GET", "POST"):
                r = await client.request(method, url, data=data, headers={"Content-Type": ctype})
                assert r.status < 500 or r.status in (503, 504), (method, url, r.status, await r.text())
                if r.status >= 400:
                    err = await r.json()
                    assert set(err) >= {"error", "detail"}
        finally:
            await client.close()
            node.close()
    asyncio.run(run())
