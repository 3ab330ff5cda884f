"""Customer data rights end to end, through real node processes (SPEC §3, §4): private
data held by the owner org's nodes only, reads disclosed only once on the chain, signed
requests, erasure with purge receipts, a node down during an erase, escalations."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import jsonschema
import pytest

from crmledger.ledger.keys import SigningKey
from tests.cluster_kit import Cluster, bytes_in, running, wait_for, with_private
from tests.kantara import RECEIPT_SCHEMA

CARE = "dpv:CustomerCare"
PROFILE = {"name": "Zoe Quintessential-Marker", "email": "zoe.qm@example.org", "phone": "+1 555 0199"}
SECRETS = [b"Quintessential", b"zoe.qm@example.org"]


def _read_path(cid: str, purpose: str = CARE, fields: str | None = "email") -> str:
    return f"/v1/customers/{cid}?purpose={purpose}" + (f"&fields={fields}" if fields else "")


def _now() -> int:
    return int(time.time() * 1000)


def _grant(c: Cluster, i: int, ck: SigningKey, cid: str, org: str, scope: list[str], expires=None,
           purpose: str = CARE):
    st, out = c.submit(i, ck, "consent.grant", "", {"customer_id": cid, "grantee_org": org, "scope": scope,
                                                    "purpose": purpose, "expires_ts": expires})
    assert (st, out.get("code")) == (200, "valid"), out
    return out


def _register(c: Cluster, via: int, cid: str, ck: SigningKey, profile: dict = PROFILE, org: int = 1):
    h, private = with_private(profile)
    st, out = c.submit(via, c.org_keys[org], "customer.register", f"org{org}",
                       {"customer_id": cid, "customer_key": ck.public_hex, "profile_hash": h}, private)
    assert (st, out.get("code")) == (200, "valid"), out
    return private


class _Events:
    """The SSE stream of one node, read in a thread."""

    def __init__(self, url: str) -> None:
        self.events: list[tuple[str, dict]] = []
        self.resp = urllib.request.urlopen(url, timeout=60)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        name = None
        try:
            for line in self.resp:
                line = line.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name:
                    self.events.append((name, json.loads(line[6:])))
        except (OSError, ValueError, AttributeError):   # AttributeError: closed while reading
            pass

    def named(self, name: str) -> list[dict]:
        return [d for n, d in self.events if n == name]

    def close(self) -> None:
        self.resp.close()


@pytest.fixture
def cluster(tmp_path):
    with running(tmp_path, service_levels={"first_response_ms": 1500, "resolution_ms": 600_000}) as c:
        yield c


def test_private_data_rights_end_to_end(cluster):
    c = cluster
    ck = SigningKey.generate()
    events = _Events(c.url(3, "/v1/events"))
    # registered through org2's node: only org1's node keeps the profile
    private = _register(c, 2, "c1", ck)
    wait_for(lambda: c.signed_get(1, "/v1/customers/c1", ck)[0] == 200, 10, "the owner node to hold the profile")
    st, out = c.signed_get(3, "/v1/customers/c1", ck)
    assert st == 200 and out["profile"] == PROFILE, out   # fetched from the owner node
    assert c.signed_get(2, "/v1/customers/c1", c.org_keys[2])[0] == 403        # orgs read for a purpose
    org3 = c.org_keys[3]
    reads = []

    def read(path: str, i: int = 3, key: SigningKey = org3) -> tuple[int, dict]:
        st, out = c.signed_get(i, path, key)
        reads.append((st, out))
        return st, out

    # no consent: refused, and the refusal is on the chain
    st, out = read(_read_path("c1"))
    assert (st, out["error"]) == (403, "forbidden") and out["access_tx"]
    _grant(c, 1, ck, "c1", "org3", ["email", "name"])
    st, out = read(_read_path("c1"))
    assert st == 200 and out["profile"] == {"email": PROFILE["email"]}, out
    assert c.get(3, f"/v1/tx/{out['access_tx']}")["code"] == "valid"
    st, out = read(_read_path("c1", fields="name,email"))
    assert st == 200 and out["profile"] == {"email": PROFILE["email"], "name": PROFILE["name"]}
    assert read(_read_path("c1", purpose="dpv:DirectMarketing"))[0] == 403    # another purpose
    assert read(_read_path("c1", fields="phone"))[0] == 403                   # out of scope
    assert read(_read_path("c1", fields=None))[0] == 403                      # the whole profile: out of scope
    # a replayed or stale signature is refused before anything is filed
    path = _read_path("c1")
    headers = c.sign(org3, path)
    assert c.request(3, "GET", path, headers=headers)[0] == 200
    reads.append((200, None))
    assert c.request(3, "GET", path, headers=headers)[0] == 401
    assert c.signed_get(3, path, org3, ts=_now() - 400_000)[0] == 401
    assert c.signed_get(3, "/v1/customers/c1", SigningKey.generate())[0] == 403   # not the customer
    # expiry, judged at block time; then revocation
    _grant(c, 1, ck, "c1", "org3", ["email"], expires=_now() + 1500)
    assert read(_read_path("c1"))[0] == 200
    wait_for(lambda: c.get(1, "/v1/customers/c1/consents")["consents"][0]["state"] == "expired", 10,
             "the consent to expire")
    assert read(_read_path("c1"))[0] == 403
    _grant(c, 1, ck, "c1", "org3", ["*"])
    assert read(_read_path("c1", fields=None))[1]["profile"] == PROFILE
    assert c.submit(1, ck, "consent.revoke", "", {"customer_id": "c1", "grantee_org": "org3"})[1]["code"] == "valid"
    assert read(_read_path("c1"))[0] == 403
    consents = c.signed_get(2, "/v1/customers/c1/consents", ck)[1]["consents"]
    assert [(x["grantee_org"], x["state"]) for x in consents] == [("org3", "revoked")]
    receipt = c.get(2, "/v1/customers/c1/consents/org3/receipt")
    jsonschema.validate(receipt, RECEIPT_SCHEMA)
    assert receipt["piiPrincipalId"] == "c1" and receipt["publicKey"] == ck.public_hex
    # N reads, N entries, each with its outcome
    log = c.signed_get(2, "/v1/customers/c1/access", ck)[1]["access"]
    assert [e["code"] == "valid" for e in log] == [st == 200 for st, _ in reads]
    assert {e["reader_org"] for e in log} == {"org3"}
    assert c.signed_get(2, "/v1/customers/c1/access", c.org_keys[2])[0] == 403
    # an update: the owner node purges the superseded version, and says so on the chain
    old = _register(c, 1, "c1-old", ck, {"name": "Ophelia Superseded-Version"})
    new_hash, new = with_private({"name": "Ophelia New"})
    st, up = c.submit(1, c.org_keys[1], "customer.update", "org1", {"customer_id": "c1-old", "profile_hash": new_hash},
                      new)
    assert up["code"] == "valid"
    wait_for(lambda: any(r["cause"] == up["tx_id"] and (r["node"], r["kind"]) == ("node1", "profile") for r in
                         c.signed_get(2, "/v1/customers/c1-old/export", ck)[1]["purge_receipts"]), 20,
             "the receipt for the superseded profile")
    assert not bytes_in(c.dir / "node1", [b"Superseded-Version", bytes.fromhex(old["salt"])])
    assert c.signed_get(3, "/v1/customers/c1-old", ck)[1]["profile"] == {"name": "Ophelia New"}
    # a ticket with the owner org, resolved, and a review of it
    subject_hash, subject = with_private("My parcel never arrived, Quintessential")
    assert c.submit(3, ck, "ticket.open", "", {"ticket_id": "t1", "customer_id": "c1", "channel": "web",
                                               "subject_hash": subject_hash}, subject)[1]["code"] == "valid"
    note_hash, note = with_private("Refunded in full")
    assert c.submit(1, c.org_keys[1], "ticket.update", "org1", {"ticket_id": "t1", "status": "resolved",
                                                                 "note_hash": note_hash}, note)[1]["code"] == "valid"
    text_hash, text = with_private("Quick refund, thank you")
    review = {"review_id": "r1", "customer_id": "c1", "org": "org1", "ticket_id": "t1", "rating": 5,
              "text_hash": text_hash}
    assert c.submit(2, ck, "review.post", "", review, text)[1]["code"] == "valid"
    wait_for(lambda: all(c.get(i, "/v1/orgs/org1/reviews")["reviews"][0]["text"] == text["text"]
                         for i in (1, 2, 3)), 10, "every node to hold the review text")
    assert c.get(3, "/v1/orgs/org1/reviews")["mean"] == 5
    t = c.signed_get(2, "/v1/tickets/t1", ck)[1]
    assert [s.get("text") for s in t["timeline"]] == [subject["text"], note["text"]]
    assert "text" not in c.get(2, "/v1/tickets/t1")["timeline"][0]
    # the export: everything held, and it round-trips
    exp = c.signed_get(3, "/v1/customers/c1/export", ck)[1]
    assert json.loads(json.dumps(exp)) == exp
    assert exp["profile"]["profile"] == PROFILE and exp["profile"]["salt"] == private["salt"]
    from crmledger.ledger.tx import private_hash
    assert private_hash(bytes.fromhex(exp["profile"]["salt"]), exp["profile"]["profile"]) == \
        exp["record"]["profile_hash"]
    assert len(exp["access"]) == len(log) and exp["reviews"][0]["text"] == text["text"]
    for r in (x["receipt"] for x in exp["consents"]):
        jsonschema.validate(r, RECEIPT_SCHEMA)
    # before the erase: nodes of other orgs hold neither the name nor the e-mail
    for i in (2, 3):
        assert not bytes_in(c.dir / f"node{i}", SECRETS)
        assert SECRETS[1] not in (c.dir / f"node{i}.log").read_bytes()
    # erase: every node purges, says so on the chain, and org3 (which read) hears of it
    assert c.submit(2, ck, "customer.erase", "", {"customer_id": "c1"})[1]["code"] == "valid"
    expected = {("node1", "profile"), ("node1", "ticket"), ("node1", "review"), ("node2", "review"),
                ("node3", "review")}

    def receipts():
        st, doc = c.signed_get(3, "/v1/customers/c1/export", ck)
        return {(r["node"], r["kind"]) for r in doc.get("purge_receipts", [])}
    wait_for(lambda: receipts() == expected, 20, "a purge receipt from every node that held data")
    assert c.signed_get(1, "/v1/customers/c1", ck)[0] == 410
    assert read(_read_path("c1"))[0] == 410
    assert c.get(1, "/v1/orgs/org1/reviews")["reviews"][0]["text"] is None
    wait_for(lambda: any(e["customer_id"] == "c1" for e in events.named("erasure")), 10, "the erasure event")
    assert events.named("erasure")[0]["orgs_that_read"] == ["org3"]
    events.close()
    salt = bytes.fromhex(private["salt"])
    needles = SECRETS + [salt, private["salt"].encode(), b"Quick refund", b"never arrived"]
    c.stop_all()
    for i in (1, 2, 3):
        assert not bytes_in(c.dir / f"node{i}", needles), i
        assert not [n for n in needles if n in (c.dir / f"node{i}.log").read_bytes()], i
        r = subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "verify", "--data-dir",
                            str(c.dir / f"node{i}")], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr


def test_a_node_down_during_an_erase_purges_on_return_before_serving(cluster):
    c = cluster
    ck = SigningKey.generate()
    _register(c, 1, "c9", ck)
    wait_for(lambda: c.signed_get(1, "/v1/customers/c9", ck)[0] == 200, 10, "the owner node to hold the profile")
    c.stop(1, signal.SIGKILL)
    leader = c.wait_leader()
    assert c.submit(leader, ck, "customer.erase", "", {"customer_id": "c9"})[1]["code"] == "valid"
    assert bytes_in(c.dir / "node1", SECRETS)     # node 1 was down: it holds the profile still
    c.start(1)
    wait_for(lambda: _up(c, 1), 20, "node 1 to serve")
    # until it has caught up with the chain, it serves no private data at all (503)
    answers = []

    def answered() -> bool:
        answers.append(c.signed_get(1, "/v1/customers/c9", ck)[0])
        return answers[-1] != 503
    wait_for(answered, 20, "node 1 to answer the customer")
    assert set(answers) <= {503, 410} and answers[-1] == 410, answers
    assert not bytes_in(c.dir / "node1", SECRETS)

    def receipts():
        doc = c.signed_get(2, "/v1/customers/c9/export", ck)[1]
        return {(r["node"], r["kind"]) for r in doc["purge_receipts"]}
    wait_for(lambda: receipts() == {("node1", "profile")}, 20, "node 1's purge receipt")


def _up(c: Cluster, i: int) -> bool:
    try:
        return c.request(i, "GET", "/healthz")[0] == 200
    except OSError:
        return False


def test_a_late_ticket_is_escalated_at_the_same_block_on_every_node(cluster):
    c = cluster
    ck = SigningKey.generate()
    _register(c, 1, "c5", ck)
    events = _Events(c.url(2, "/v1/events"))
    h, subject = with_private("Where is my order?")
    st, out = c.submit(1, ck, "ticket.open", "", {"ticket_id": "t5", "customer_id": "c5", "channel": "web",
                                                  "subject_hash": h}, subject)
    assert out["code"] == "valid"
    # no traffic: the leader cuts a block once the deadline has passed
    wait_for(lambda: all(c.get(i, "/v1/tickets/t5")["escalated"] == ["first_response"] for i in (1, 2, 3)), 15,
             "the escalation on every node")
    steps = [c.get(i, "/v1/tickets/t5")["timeline"][-1] for i in (1, 2, 3)]
    assert len({json.dumps(s, sort_keys=True) for s in steps}) == 1
    step = steps[0]
    assert step["status"] == "escalated" and step["missed"] == "first_response"
    block = c.get(1, f"/v1/blocks/{step['height']}")
    before = c.get(1, f"/v1/blocks/{step['height'] - 1}")
    assert block["timestamp"] > step["due"] >= before["timestamp"]
    wait_for(lambda: events.named("ticket"), 10, "the ticket event")
    assert events.named("ticket")[0]["ticket_id"] == "t5"
    events.close()
    # the customer sees the escalation in the timeline with the texts
    t = c.signed_get(3, "/v1/tickets/t5", ck)[1]
    assert t["timeline"][0]["text"] == "Where is my order?"


def test_a_node_that_missed_a_profile_fetches_it_from_its_org_on_return(tmp_path):
    """Two nodes of org1: one was down when a profile was registered; on its return it
    fetches the profile from the other, and serves it alone once that one is down."""
    c = Cluster(tmp_path, node_orgs=[1, 1, 2])
    try:
        c.start_all()
        c.stop(2)
        c.wait_leader()
        ck = SigningKey.generate()
        _register(c, 3, "c7", ck)
        wait_for(lambda: c.signed_get(1, "/v1/customers/c7", ck)[0] == 200, 10, "node 1 to hold the profile")
        assert not bytes_in(c.dir / "node2", SECRETS) and not bytes_in(c.dir / "node3", SECRETS)
        c.start(2)
        wait_for(lambda: bytes_in(c.dir / "node2", SECRETS[:1]), 30, "node 2 to fetch the profile from node 1")
        c.stop(1)
        c.wait_leader()
        st, out = c.signed_get(2, "/v1/customers/c7", ck)
        assert st == 200 and out["profile"] == PROFILE
        assert not bytes_in(c.dir / "node3", SECRETS)
    finally:
        c.stop_all()


def test_reads_share_blocks_and_loyalty_points_are_shared_by_partners(cluster):
    c = cluster
    ck = SigningKey.generate()
    _register(c, 1, "c3", ck)
    _grant(c, 2, ck, "c3", "org2", ["email"])
    # 24 reads at once: 24 entries, in far fewer blocks than reads
    from concurrent.futures import ThreadPoolExecutor
    t0 = _now()   # one millisecond apart: the same path signed at the same time is the same request
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda i: c.signed_get(2, _read_path("c3"), c.org_keys[2], t0 + i), range(24)))
    assert [st for st, _ in answers] == [200] * 24
    heights = {out["height"] for _, out in answers}
    assert len({out["access_tx"] for _, out in answers}) == 24 and len(heights) < 12, heights
    assert len(c.signed_get(1, "/v1/customers/c3/access", ck)[1]["access"]) == 24
    # a program of org1 with org2 as partner: org2 issues once the customer consents to
    # personalised benefits; the customer redeems at either
    org1, org2 = c.org_keys[1], c.org_keys[2]
    ok = lambda out: out[1].get("code")  # noqa: E731
    assert ok(c.submit(1, org1, "loyalty.program", "org1", {"program": "miles", "partners": ["org2"]})) == "valid"
    issue = {"customer_id": "c3", "program": "miles", "amount": 50}
    assert ok(c.submit(2, org1, "loyalty.issue", "org1", issue)) == "valid"
    assert ok(c.submit(2, org2, "loyalty.issue", "org2", issue)) == "forbidden"
    _grant(c, 3, ck, "c3", "org2", ["email"], purpose="dpv:PersonalisedBenefits")
    assert ok(c.submit(3, org2, "loyalty.issue", "org2", issue)) == "valid"
    redeem = {"customer_id": "c3", "program": "miles", "amount": 70, "at_org": "org2"}
    assert ok(c.submit(1, ck, "loyalty.redeem", "", redeem)) == "valid"
    assert ok(c.submit(1, ck, "loyalty.redeem", "", {**redeem, "amount": 31})) == "insufficient_balance"
    assert ok(c.submit(1, ck, "loyalty.redeem", "", {**redeem, "at_org": "org3"})) == "forbidden"
    assert c.get(3, "/v1/loyalty/c3")["balances"] == {"miles": 30}
    exp = c.signed_get(2, "/v1/customers/c3/export", ck)[1]
    assert [(m["type"], m["amount"]) for m in exp["loyalty"]["movements"]] == \
        [("loyalty.issue", 50), ("loyalty.issue", 50), ("loyalty.redeem", 70)]


def test_a_customer_registered_through_one_node_acts_at_once_through_another(cluster):
    """The node a customer's first transaction reaches may not have applied the
    registration yet: it catches up with the leader before refusing a stranger."""
    c = cluster
    for n in range(6):
        ck = SigningKey.generate()
        _register(c, 1 + n % 3, f"quick{n}", ck)
        _grant(c, 1 + (n + 1) % 3, ck, f"quick{n}", "org2", ["email"])
        st, out = c.signed_get(1 + (n + 2) % 3, f"/v1/customers/quick{n}", ck)
        assert st == 200 and out["profile"] == PROFILE, out
