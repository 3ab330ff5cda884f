"""SPEC §3 rules of customer service and privacy: tickets with their service levels,
verified reviews, audited reads (`access.read`) and purge receipts (`privacy.purged`)."""
import itertools

from crmledger.ledger.genesis import DEFAULT_SERVICE_LEVELS
from crmledger.ledger.requests import sign_request
from crmledger.ledger.statekeys import k_consent, k_customer, k_review, k_ticket
from crmledger.ledger.tx import admit, sign_tx
from tests.ledger_kit import T0, key, tx
from tests.test_rules import A1, A2, CK, H, register

N1, N2 = key("node1"), key("node2")
FIRST, RESOLVE = DEFAULT_SERVICE_LEVELS["first_response_ms"], DEFAULT_SERVICE_LEVELS["resolution_ms"]


def open_ticket(tid="t1", by=CK, org=""):
    return tx(by, "ticket.open", org, ticket_id=tid, customer_id="c1", channel="web", subject_hash=H)


def update(status, by=A1, org="org1", tid="t1", ts=None):
    return tx(by, "ticket.update", org, ts=ts or T0, ticket_id=tid, status=status, note_hash=H)


def test_the_customer_may_only_accept_or_reopen_a_resolved_ticket(chain):
    chain.commit([register(), open_ticket()])
    assert chain.commit([update("closed", CK, ""), update("in_progress", CK, "")]) == ["forbidden", "forbidden"]
    assert chain.commit([update("resolved")]) == ["valid"]
    assert chain.commit([update("in_progress", CK, ""), update("open", CK, "")]) == ["forbidden", "valid"]
    assert chain.commit([update("resolved"), update("closed", CK, ""), update("open", CK, "")]) == \
        ["valid", "valid", "ticket_closed"]
    t = chain.store.get(k_ticket("t1"))
    assert [s["status"] for s in t["timeline"]] == ["open", "resolved", "open", "resolved", "closed"]
    assert t["deadlines"] == {} and t["escalated"] == []


def test_a_late_ticket_is_escalated_at_the_first_block_past_its_deadline(chain):
    chain.commit([register(), open_ticket()], ts=T0)
    chain.commit([], ts=T0 + FIRST)            # on the deadline: not past it
    assert chain.store.get(k_ticket("t1"))["escalated"] == []
    b = chain.block([], ts=T0 + FIRST + 1)
    out = chain.store.apply_block(b, [], b.header.index)
    assert [(e["type"], e["ticket_id"], e["missed"]) for e in out.events] == [("ticket", "t1", "first_response")]
    t = chain.store.get(k_ticket("t1"))
    assert t["escalated"] == ["first_response"] and t["timeline"][-1]["status"] == "escalated"
    assert t["timeline"][-1]["height"] == b.header.height
    # an answer ends nothing already missed; resolving in time stops the second escalation
    assert chain.commit([update("resolved", ts=T0 + FIRST + 2)], ts=T0 + FIRST + 2) == ["valid"]
    chain.commit([], ts=T0 + RESOLVE + 10)
    assert chain.store.get(k_ticket("t1"))["escalated"] == ["first_response"]


def test_an_answered_ticket_is_escalated_only_when_not_resolved_in_time(chain):
    chain.commit([register(), open_ticket()], ts=T0)
    assert chain.commit([update("in_progress")], ts=T0 + 1) == ["valid"]
    chain.commit([], ts=T0 + RESOLVE + 1)
    t = chain.store.get(k_ticket("t1"))
    assert t["escalated"] == ["resolution"] and t["deadlines"] == {}


_n = itertools.count()


def review(rid="r1", tid="t1", org="org1", by=CK, rating=4):
    return admit(sign_tx(by, "review.post", "", f"review-{next(_n)}", T0, {
        "review_id": rid, "customer_id": "c1", "org": org, "ticket_id": tid, "rating": rating, "text_hash": H}))


def test_reviews_stem_from_a_resolved_ticket_of_the_customer_one_each(chain):
    chain.commit([register(), register(cid="c2", ck=key("c2")), open_ticket()])
    assert chain.commit([review(), review(org="org2"), review(tid="nope")]) == \
        ["ticket_not_resolved", "forbidden", "unknown_ticket"]
    chain.commit([update("resolved")])
    assert chain.commit([review(by=key("c2")), review(), review(rid="r2")]) == \
        ["forbidden", "valid", "review_exists"]
    assert chain.store.get(k_review("org1", "r1"))["rating"] == 4


def read_entry(path, reader=A2, reader_org="org2", fields=("email",), purpose="dpv:CustomerCare", ts=T0,
               by=N1, org="org1"):
    hdr = sign_request(reader, "GET", path, ts)
    return tx(by, "access.read", org, customer_id="c1", reader=reader.public_hex, reader_org=reader_org,
              fields=list(fields), purpose=purpose,
              request={"method": "GET", "path": path, "ts": ts, "sig": hdr["X-Sig"]})


def test_a_read_is_valid_only_within_a_live_consent_for_its_purpose_and_scope(chain):
    chain.commit([register()])
    p = "/v1/customers/c1?purpose=dpv:CustomerCare&fields=email"
    assert chain.commit([read_entry(p)]) == ["forbidden"]                    # no consent
    chain.commit([tx(CK, "consent.grant", "", customer_id="c1", grantee_org="org2", scope=["email", "name"],
                     purpose="dpv:CustomerCare", expires_ts=T0 + 10_000)])
    entry = read_entry(p)
    assert chain.commit([entry, read_entry(p + "&x=1")]) == ["valid", "forbidden"]   # path must match
    assert chain.commit([read_entry(p)]) == ["duplicate"]                    # the same signed request again
    assert chain.commit([read_entry(p, ts=T0 + 1)]) == ["valid"]             # a new request, a new read
    assert chain.commit([tx(N2, "access.read", "org2", **entry.payload)]) == ["duplicate"]  # same request
    m = "/v1/customers/c1?purpose=dpv:DirectMarketing&fields=email"
    assert chain.commit([read_entry(m, purpose="dpv:DirectMarketing")]) == ["forbidden"]   # other purpose
    w = "/v1/customers/c1?purpose=dpv:CustomerCare&fields=phone"
    assert chain.commit([read_entry(w, fields=["phone"])]) == ["forbidden"]          # out of scope
    a = "/v1/customers/c1?purpose=dpv:CustomerCare"
    assert chain.commit([read_entry(a, fields=["*"])]) == ["forbidden"]              # the whole profile
    assert chain.commit([read_entry(p, ts=T0 - 400_000)]) == ["stale"]
    assert chain.commit([read_entry(p, reader=key("stranger"))]) == ["forbidden"]
    assert chain.commit([read_entry(p, by=A1)]) == ["forbidden"]                      # not a node
    assert chain.commit([read_entry(p, ts=T0 + 20_000)], ts=T0 + 20_000) == ["forbidden"]  # expired
    # the owner org reads without consent; after a revoke, org2 reads nothing
    assert chain.commit([read_entry(a, reader=A1, reader_org="org1", fields=["*"], ts=T0 + 20_000)],
                        ts=T0 + 20_001) == ["valid"]
    chain.commit([tx(CK, "consent.grant", "", ts=T0 + 20_000, customer_id="c1", grantee_org="org2", scope=["*"],
                     purpose="dpv:CustomerCare", expires_ts=None)], ts=T0 + 20_002)
    assert chain.commit([read_entry(a, fields=["*"], ts=T0 + 20_000)], ts=T0 + 20_003) == ["valid"]
    chain.commit([tx(CK, "consent.revoke", "", ts=T0 + 20_000, customer_id="c1", grantee_org="org2")],
                 ts=T0 + 20_004)
    assert chain.store.get(k_consent("c1", "org2"))["revoked"] is not None
    assert chain.commit([read_entry(a, fields=["*"], ts=T0 + 20_001)], ts=T0 + 20_005) == ["forbidden"]


def test_purge_receipts_name_a_real_cause_once_per_node_and_kind(chain):
    chain.commit([register()])
    up = tx(A1, "customer.update", "org1", customer_id="c1", profile_hash="cd" * 32)
    b = chain.block([up])
    out = chain.store.apply_block(b, [up], b.header.index)
    assert [(e["type"], e["cause"], e["profile_hash"]) for e in out.events] == [("superseded", up.tx_id, H)]
    purged = lambda cause, by=N1, org="org1", kind="profile", cid="c1": tx(  # noqa: E731
        by, "privacy.purged", org, customer_id=cid, cause=cause, kind=kind)
    assert chain.commit([purged(up.tx_id), purged(up.tx_id), purged(up.tx_id, kind="ticket"),
                         purged("00" * 32), purged(up.tx_id, cid="c2"), purged(up.tx_id, A1),
                         purged(up.tx_id, N2, "org1")]) == \
        ["valid", "duplicate", "valid", "unknown_cause", "unknown_cause", "forbidden", "forbidden"]
    erase = tx(CK, "customer.erase", "", customer_id="c1")
    b = chain.block([erase])
    out = chain.store.apply_block(b, [erase], b.header.index)
    assert [(e["type"], e["customer_id"]) for e in out.events] == [("erasure", "c1")]
    assert chain.store.get(k_customer("c1"))["erase_tx"] == erase.tx_id
    assert chain.commit([purged(erase.tx_id), purged(erase.tx_id, N2, "org2")]) == ["valid", "valid"]


def test_escalations_are_bounded_per_block_oldest_first(chain, monkeypatch):
    from crmledger.ledger import rules
    monkeypatch.setattr(rules, "MAX_ESCALATIONS", 2)
    chain.commit([register(), open_ticket("t1")], ts=T0)
    chain.commit([open_ticket("t2"), open_ticket("t3")], ts=T0 + 1)
    chain.commit([], ts=T0 + FIRST + 10)
    late = lambda: [t for t in ("t1", "t2", "t3") if chain.store.get(k_ticket(t))["escalated"]]  # noqa: E731
    assert late() == ["t1", "t2"]
    chain.commit([], ts=T0 + FIRST + 11)
    assert late() == ["t1", "t2", "t3"]
