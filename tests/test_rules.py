"""SPEC §3 ledger rules: who may send what, each type's own codes, duplicates, staleness,
determinism."""
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from crmledger.ledger.statekeys import k_customer, k_loyalty, k_ticket
from crmledger.storage.datadir import open_data_dir
from tests.ledger_kit import GENESIS, T0, Chain, key, tx

A1, A2 = key("org1-admin"), key("org2-admin")
AG1 = key("org1-agent")
CK = key("customer-1")
H = "ab" * 32


def register(a=A1, org="org1", cid="c1", ck=CK, **kw):
    return tx(a, "customer.register", org, customer_id=cid, customer_key=ck.public_hex if ck else None,
              profile_hash=H, **kw)


def test_identity_registration_and_agents(chain):
    assert chain.commit([tx(A1, "identity.register", "org1", pubkey=AG1.public_hex, role="agent")]) == ["valid"]
    assert chain.commit([register(a=AG1)]) == ["valid"]
    # an agent is not an admin; another org's admin cannot act for org1; keys register once
    assert chain.commit([
        tx(AG1, "identity.register", "org1", pubkey=key("x").public_hex, role="agent"),
        tx(A2, "identity.register", "org1", pubkey=key("y").public_hex, role="agent"),
        tx(A1, "identity.register", "org1", pubkey=AG1.public_hex, role="admin"),
        tx(A1, "identity.register", "org1", pubkey=A2.public_hex, role="agent"),
        tx(AG1, "customer.register", "org2", customer_id="c2", customer_key=None, profile_hash=H),
    ]) == ["forbidden", "forbidden", "identity_exists", "identity_exists", "forbidden"]


def test_customer_register_update_and_ownership(chain):
    assert chain.commit([register(), register()]) == ["valid", "customer_exists"]
    assert chain.commit([
        tx(A1, "customer.update", "org1", customer_id="c1", profile_hash="cd" * 32),
        tx(A2, "customer.update", "org2", customer_id="c1", profile_hash="cd" * 32),
        tx(A1, "customer.update", "org1", customer_id="nobody", profile_hash="cd" * 32),
        tx(CK, "customer.update", "", customer_id="c1", profile_hash="cd" * 32),
    ]) == ["valid", "forbidden", "unknown_customer", "forbidden"]
    assert chain.store.get(k_customer("c1"))["profile_hash"] == "cd" * 32


def test_consent_grant_revoke_by_the_customer_only(chain):
    chain.commit([register(), register(cid="nokey", ck=None)])
    grant = dict(customer_id="c1", grantee_org="org2", scope=["email"], purpose="dpv:CustomerCare")
    assert chain.commit([
        tx(CK, "consent.grant", "", expires_ts=None, **grant),
        tx(A1, "consent.grant", "org1", expires_ts=None, **grant),
        tx(CK, "consent.grant", "", expires_ts=None, **{**grant, "grantee_org": "org9"}),
        tx(CK, "consent.grant", "", expires_ts=T0 - 1, **grant),
        tx(key("other"), "consent.grant", "", expires_ts=None, **{**grant, "customer_id": "nokey"}),
    ]) == ["valid", "forbidden", "unknown_org", "bad_expiry", "forbidden"]
    c = chain.store.get(b"co/c1\x00org2")
    assert (c["scope"], c["purpose"], c["expires_ts"]) == (["email"], "dpv:CustomerCare", None)
    assert chain.commit([
        tx(CK, "consent.revoke", "", customer_id="c1", grantee_org="org2"),
        tx(CK, "consent.revoke", "", customer_id="c1", grantee_org="org2"),
    ]) == ["valid", "no_consent"]


def test_erasure_by_customer_or_owner_admin_then_nothing_more(chain):
    chain.commit([register(), register(cid="c2", ck=None),
                  tx(A1, "identity.register", "org1", pubkey=AG1.public_hex, role="agent")])
    assert chain.commit([
        tx(AG1, "customer.erase", "org1", customer_id="c2"),   # agents may not erase
        tx(A2, "customer.erase", "org2", customer_id="c2"),    # nor other orgs
        tx(A1, "customer.erase", "org1", customer_id="c2"),
        tx(CK, "customer.erase", "", customer_id="c1"),
        tx(CK, "consent.grant", "", customer_id="c1", grantee_org="org2", scope=["*"], purpose="dpv:CustomerCare",
           expires_ts=None),
        tx(A1, "loyalty.issue", "org1", customer_id="c1", program="p", amount=1),
    ]) == ["forbidden", "forbidden", "valid", "valid", "erased", "erased"]
    assert chain.store.get(k_customer("c1"))["erased"] is True
    assert chain.store.get(k_customer("c1"))["profile_hash"] is None


def program(name="miles", a=None, org="org1", partners=()):
    return tx(a or A1, "loyalty.program", org, program=name, partners=list(partners))


def test_loyalty_redeems_race_in_one_block(chain):
    chain.commit([register(), program(),
                   tx(A1, "loyalty.issue", "org1", customer_id="c1", program="miles", amount=100)])
    r = lambda n: tx(CK, "loyalty.redeem", "", customer_id="c1", program="miles", amount=n, at_org="org1")  # noqa
    assert chain.commit([r(60), r(60), r(40), r(1)]) == ["valid", "insufficient_balance", "valid",
                                                         "insufficient_balance"]
    assert chain.store.get(k_loyalty("c1", "miles"))["balance"] == 0
    # only partners issue; only the customer redeems
    assert chain.commit([
        tx(A2, "loyalty.issue", "org2", customer_id="c1", program="miles", amount=5),
        tx(A1, "loyalty.redeem", "org1", customer_id="c1", program="miles", amount=1, at_org="org1"),
        tx(A1, "loyalty.issue", "org1", customer_id="c1", program="miles", amount=(1 << 63) - 1),
        tx(A1, "loyalty.issue", "org1", customer_id="c1", program="miles", amount=1),
        tx(A1, "loyalty.issue", "org1", customer_id="c1", program="nope", amount=1),
    ]) == ["forbidden", "forbidden", "valid", "overflow", "unknown_program"]


def test_loyalty_programs_are_shared_by_partners(chain):
    """A program names its partners; a partner issues to its own customers or to those
    who consented to it for personalised benefits; the customer redeems at any partner."""
    chain.commit([register(), register(cid="c2", a=A2, org="org2", ck=None)])
    assert chain.commit([
        program("shared", partners=["org2"]), program("shared", A2, "org2"), program("x", A2, "org2", ["org9"]),
        program("solo", A2, "org2"),
    ]) == ["valid", "program_exists", "unknown_org", "valid"]
    issue = lambda a, org, cid, prog="shared", n=10: tx(a, "loyalty.issue", org, customer_id=cid,  # noqa: E731
                                                      program=prog, amount=n)
    assert chain.commit([issue(A1, "org1", "c1"), issue(A2, "org2", "c2"), issue(A2, "org2", "c1"),
                         issue(A1, "org1", "c1", "solo")]) == ["valid", "valid", "forbidden", "forbidden"]
    grant = lambda purpose: tx(CK, "consent.grant", "", customer_id="c1", grantee_org="org2",  # noqa: E731
                               scope=["*"], purpose=purpose, expires_ts=None)
    chain.commit([grant("dpv:DirectMarketing")])
    assert chain.commit([issue(A2, "org2", "c1")]) == ["forbidden"]     # consented, but not for benefits
    chain.commit([grant("dpv:PersonalisedBenefits")])
    assert chain.commit([issue(A2, "org2", "c1", n=5)]) == ["valid"]
    redeem = lambda n, at: tx(CK, "loyalty.redeem", "", customer_id="c1", program="shared", amount=n,  # noqa
                              at_org=at)
    assert chain.commit([redeem(3, "org2"), redeem(3, "org3"), redeem(13, "org1"), redeem(12, "org1")]) == \
        ["valid", "forbidden", "insufficient_balance", "valid"]
    assert chain.store.get(k_loyalty("c1", "shared"))["balance"] == 0


def test_ticket_timeline(chain):
    chain.commit([register(), register(cid="c2", a=A2, org="org2", ck=None)])
    assert chain.commit([
        tx(CK, "ticket.open", "", ticket_id="t1", customer_id="c1", channel="phone", subject_hash=H),
        tx(A1, "ticket.open", "org1", ticket_id="t1", customer_id="c1", channel="phone", subject_hash=H),
        tx(A1, "ticket.open", "org1", ticket_id="t2", customer_id="c2", channel="web", subject_hash=H),
    ]) == ["valid", "ticket_exists", "forbidden"]  # org1 has no consent for c2
    up = lambda s, a=A1, org="org1": tx(a, "ticket.update", org, ticket_id="t1", status=s, note_hash=H)  # noqa
    assert chain.commit([up("in_progress"), up("resolved", A2, "org2"), up("closed")]) == \
        ["valid", "forbidden", "valid"]
    assert chain.commit([up("open"), tx(A1, "ticket.update", "org1", ticket_id="nope", status="open",
                                        note_hash=H)]) == ["ticket_closed", "unknown_ticket"]
    t = chain.store.get(k_ticket("t1"))
    assert t["org"] == "org1" and [s["status"] for s in t["timeline"]] == ["open", "in_progress", "closed"]
    # with consent, another org may open a ticket for the customer
    chain.commit([tx(CK, "consent.grant", "", customer_id="c1", grantee_org="org2", scope=["*"],
                     purpose="dpv:CustomerCare", expires_ts=None)])
    assert chain.commit([tx(A2, "ticket.open", "org2", ticket_id="t3", customer_id="c1", channel="web",
                            subject_hash=H)]) == ["valid"]


def test_duplicates_and_staleness(chain):
    t = register()
    assert chain.commit([t, t]) == ["valid", "duplicate"]
    assert chain.commit([t]) == ["duplicate"]
    same_nonce = tx(A1, "customer.register", "org1", nonce="fixed", customer_id="c7", customer_key=None,
                    profile_hash=H)
    again = tx(A1, "customer.register", "org1", nonce="fixed", customer_id="c8", customer_key=None,
               profile_hash=H)
    assert chain.commit([same_nonce]) == ["valid"]
    assert chain.commit([again]) == ["duplicate"]
    old = register(cid="c9", ts=T0 - 700_000)
    assert chain.commit([old], ts=T0 + 1000) == ["stale"]
    assert chain.commit([old]) == ["duplicate"]       # committed, if only as stale
    assert chain.commit([register(cid="c10", ts=T0 + 2_000_000)], ts=T0 + 2_000_000 - 599_000) == ["valid"]


def test_history_lists_everything_touching_a_customer(chain):
    chain.store.index.merge_at = 3   # exercise both the merged tables and the recent part
    chain.commit([register(), program("m")])
    chain.commit([tx(A1, "loyalty.issue", "org1", customer_id="c1", program="m", amount=3),
                  register(cid="other", ck=None)])
    chain.commit([tx(CK, "ticket.open", "", ticket_id="t1", customer_id="c1", channel="x", subject_hash=H)])
    chain.commit([tx(A1, "ticket.update", "org1", ticket_id="t1", status="closed", note_hash=H)])
    hist = chain.store.history("c1")
    assert [(h.height, h.code) for h in hist] == [(1, "valid"), (2, "valid"), (3, "valid"), (4, "valid")]
    rec = chain.store.tx_record(hist[1].tx_id)
    assert (rec.height, rec.pos, rec.code) == (2, 0, "valid")
    assert chain.store.tx_record("00" * 32) is None


# -- determinism: the same blocks give the same results and state root everywhere ------------
_ops = st.lists(st.tuples(st.sampled_from(["reg", "upd", "grant", "revoke", "issue", "redeem", "open",
                                           "close", "erase", "dup"]),
                          st.integers(0, 3), st.integers(1, 80)), min_size=1, max_size=30)


def _build(ops):
    out, prev = [program("m")], None
    for op, c, n in ops:
        cid, ck = f"c{c}", key(f"cust{c}")
        t = {
            "reg": lambda: register(cid=cid, ck=ck),
            "upd": lambda: tx(A1, "customer.update", "org1", customer_id=cid, profile_hash="ee" * 32),
            "grant": lambda: tx(ck, "consent.grant", "", customer_id=cid, grantee_org="org2", scope=["*"],
                                purpose="dpv:CustomerCare", expires_ts=None),
            "revoke": lambda: tx(ck, "consent.revoke", "", customer_id=cid, grantee_org="org2"),
            "issue": lambda: tx(A1, "loyalty.issue", "org1", customer_id=cid, program="m", amount=n),
            "redeem": lambda: tx(ck, "loyalty.redeem", "", customer_id=cid, program="m", amount=n, at_org="org1"),
            "open": lambda: tx(ck, "ticket.open", "", ticket_id=f"t{c}", customer_id=cid, channel="w",
                               subject_hash=H),
            "close": lambda: tx(A1, "ticket.update", "org1", ticket_id=f"t{c}", status="closed", note_hash=H),
            "erase": lambda: tx(ck, "customer.erase", "", customer_id=cid),
            "dup": lambda: prev or register(cid=cid, ck=ck),
        }[op]()
        out.append(t)
        prev = t
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ops, st.integers(1, 4))
def test_same_blocks_same_results_and_state_root(ops, nblocks):
    txs = _build(ops)
    runs = []
    for _ in range(2):
        with tempfile.TemporaryDirectory() as tmp:
            d = open_data_dir(tmp, GENESIS)
            ch = Chain(d.ledger)
            codes = []
            per = max(1, len(txs) // nblocks)
            for i in range(0, len(txs), per):
                codes += ch.commit(txs[i:i + per])
            runs.append((codes, d.ledger.state_root, d.ledger.head_hash, list(d.ledger.iter_state())))
            d.close()
    assert runs[0] == runs[1]
    # and the balance never goes negative, whatever the order of issues and redeems
    for k, v in runs[0][3]:
        if k.startswith(b"lo/"):
            import msgpack
            assert msgpack.unpackb(v)["balance"] >= 0
