"""crmledger.client against a real cluster: typed helpers with private parts, signed
reads, errors carrying the API's code, a node down skipped for the next, load shedding
answered after Retry-After, and an event stream that resumes after its node stops."""
from __future__ import annotations

import threading

from aiohttp import web
from aiohttp.test_utils import TestServer

from crmledger.client import ApiError, AsyncClient, Client
from crmledger.ledger.keys import SigningKey
from crmledger.node.bench.localcluster import free_ports
from tests.cluster_kit import Cluster, wait_for

PROFILE = {"name": "Alice Liddell", "email": "alice@example.org", "phone": "+44 20 7946 0000"}


def test_the_client_against_a_cluster(tmp_path):
    c = Cluster(tmp_path)
    dead = f"127.0.0.1:{free_ports([0])}"   # nothing listens there
    urls = [dead] + [c.url(i) for i in (1, 2, 3)]
    ck = SigningKey.generate()
    try:
        c.start_all()
        with Client(urls, key=c.org_keys[1], org="org1") as org1, Client(urls, key=ck) as alice, \
                Client([c.url(3)], key=c.org_keys[3], org="org3") as org3:
            seen: list[tuple[str, dict]] = []
            stream = Client([c.url(1), c.url(2), c.url(3)])
            threading.Thread(target=lambda: [seen.append(e) for e in stream.events(1)], daemon=True).start()
            assert org1.register_customer("alice", PROFILE, customer_key=ck.public_hex)["code"] == "valid"
            assert alice.customer("alice")["profile"] == PROFILE
            try:
                org3.customer("alice", purpose="dpv:CustomerCare", fields=["email"])
                raise AssertionError("a read without consent must be refused")
            except ApiError as e:
                assert (e.status, e.code) == (403, "forbidden") and e.body["access_tx"]
            assert alice.grant_consent("alice", "org3", ["email"], "dpv:CustomerCare")["valid"]
            got = org3.customer("alice", purpose="dpv:CustomerCare", fields=["email"])
            assert got["profile"] == {"email": PROFILE["email"]}
            assert [e["code"] for e in alice.access_log("alice")] == ["forbidden", "valid"]
            assert org1.open_ticket("t1", "alice", "email", "The parcel is late")["valid"]
            assert org1.update_ticket("t1", "resolved", "Sent again")["valid"]
            assert alice.post_review("r1", "alice", "org1", "t1", 4, "Sorted quickly")["valid"]
            assert [s.get("text") for s in alice.ticket("t1")["timeline"]] == ["The parcel is late", "Sent again"]
            assert org1.define_program("miles", ["org3"])["valid"]
            assert org1.issue_points("alice", "miles", 30)["valid"]
            assert alice.redeem_points("alice", "miles", 10, "org3")["valid"]
            assert alice.loyalty("alice") == {"miles": 20}
            assert [e["type"] for e in alice.history("alice", page=2)][:2] == ["customer.register", "access.read"]
            batch = [org1.envelope("customer.register", {"customer_id": f"b{i}", "customer_key": None},
                                   {"name": f"B {i}"}) for i in range(5)]
            assert [r["status_code"] for r in org1.submit_batch(batch)] == [202] * 5
            assert alice.export("alice")["profile"]["profile"] == PROFILE
            # the stream's node stops: the stream goes on from the next node, no block twice or missed
            height = org1.status()["height"]
            wait_for(lambda: any(d["height"] == height for n, d in seen if n == "block"), 10, "the stream")
            c.stop(1)
            c.wait_leader()
            assert org1.issue_points("alice", "miles", 1)["valid"]
            top = org1.status()["height"]
            wait_for(lambda: any(d["height"] == top for n, d in seen if n == "block"), 20, "the stream to resume")
            heights = [d["height"] for n, d in seen if n == "block"]
            assert heights == list(range(1, top + 1))
    finally:
        c.stop_all()


async def test_load_shedding_is_answered_after_retry_after():
    calls = []

    async def status(request):
        calls.append(request.headers.get("X-Sig"))
        if len(calls) < 3:
            return web.json_response({"error": "busy", "detail": "later"}, status=503, headers={"Retry-After": "0"})
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/v1/status", status)
    async with TestServer(app) as server:
        async with AsyncClient([f"127.0.0.1:{server.port}"], key=SigningKey.generate()) as client:
            assert await client.request("GET", "/v1/status", signed=True) == {"ok": True}
    assert len(calls) == 3 and len(set(calls)) == 3   # signed anew for each try
