"""Governance on the chain: proposals and votes change the consortium (orgs, admin keys,
nodes, policy) at the block where the policy is met; the consortium is part of the
state and its root, every rule and the block check follow the version in force, and
`crmledger verify` replays it."""
import pytest

from crmledger.ledger.consortium import CONSORTIUM_KEY, check_proposal
from crmledger.ledger.statekeys import k_proposal
from crmledger.ledger.tx import TxError
from crmledger.node.ops.verify import verify
from tests.ledger_kit import T0, key, tx

A1, A2, A3 = key("org1-admin"), key("org2-admin"), key("org3-admin")
A4 = key("org4-admin")
DEADLINE = T0 + 3_600_000
H = "ab" * 32


def propose(chain, signer, org, proposal, deadline=DEADLINE):
    t = tx(signer, "consortium.propose", org, proposal=proposal, deadline_ts=deadline)
    return t.tx_id, chain.commit([t])[0]


def vote(pid, signer, org):
    return tx(signer, "consortium.vote", org, proposal_id=pid)


def add_org4(node=True):
    p = {"action": "add_org", "org": "org4", "admins": [A4.public_hex],
         "contact": {"name": "Org Four", "email": "dpo@org4.example"}}
    if node:
        p["node"] = {"node_id": "node4", "raft_id": 4, "pubkey": key("node4").public_hex,
                     "peer_addr": "127.0.0.1:9004", "api_addr": "127.0.0.1:8004"}
    return p


def test_an_org_is_added_at_the_vote_that_meets_the_majority(chain):
    pid, code = propose(chain, A1, "org1", add_org4())
    assert code == "valid"
    root_before = chain.store.state_root
    # the new org's admin is no one yet
    assert chain.commit([tx(A4, "identity.register", "org4", pubkey=key("a4-agent").public_hex, role="agent")]) \
        == ["forbidden"]
    assert chain.commit([vote(pid, A1, "org1")]) == ["valid"]
    assert chain.store.get(CONSORTIUM_KEY) is None, "one vote of three is not a majority"
    # the second vote decides; the transaction right after it in the same block already
    # runs under the new consortium
    assert chain.commit([
        vote(pid, A2, "org2"),
        tx(A4, "identity.register", "org4", pubkey=key("a4-agent").public_hex, role="agent"),
        vote(pid, A3, "org3"),
    ]) == ["valid", "valid", "proposal_closed"]
    cs = chain.store.consortium()
    assert sorted(cs.orgs) == ["org1", "org2", "org3", "org4"] and cs.version == 1
    assert cs.nodes["node4"].org == "org4" and cs.org_info["org4"].contact["name"] == "Org Four"
    assert chain.store.state_root != root_before
    rec = chain.store.get(k_proposal(pid))
    assert (rec["status"], rec["votes"]) == ("executed", ["org1", "org2"])
    # a consent may now name the new org
    chain.commit([tx(A1, "customer.register", "org1", customer_id="c1", customer_key=key("ck").public_hex,
                     profile_hash=H)])
    assert chain.commit([tx(key("ck"), "consent.grant", "", customer_id="c1", grantee_org="org4",
                            scope=["*"], purpose="dpv:CustomerCare", expires_ts=None)]) == ["valid"]


def test_a_rotated_key_is_refused_from_the_effective_block(chain):
    new = key("org2-admin-new")
    pid, _ = propose(chain, A2, "org2", {"action": "rotate_key", "org": "org2", "old_key": A2.public_hex,
                                         "new_key": new.public_hex})
    assert chain.commit([tx(A2, "identity.register", "org2", pubkey=key("before").public_hex, role="agent")]) \
        == ["valid"]
    assert chain.commit([
        vote(pid, A1, "org1"), vote(pid, A3, "org3"),
        tx(A2, "identity.register", "org2", pubkey=key("after").public_hex, role="agent"),
        tx(new, "identity.register", "org2", pubkey=key("after").public_hex, role="agent"),
    ]) == ["valid", "valid", "forbidden", "valid"]


def test_removing_an_org_never_needs_its_own_vote_and_ends_its_rights(chain):
    chain.commit([tx(A3, "identity.register", "org3", pubkey=key("org3-agent").public_hex, role="agent")])
    pid, code = propose(chain, A1, "org1", {"action": "remove_org", "org": "org3"})
    assert code == "valid"
    assert chain.commit([vote(pid, A3, "org3")]) == ["forbidden"]
    assert chain.commit([vote(pid, A1, "org1")]) == ["valid"]
    assert chain.store.get(CONSORTIUM_KEY) is None, "1 of the 2 orgs that vote is not a majority"
    assert chain.commit([vote(pid, A2, "org2")]) == ["valid"]
    cs = chain.store.consortium()
    assert sorted(cs.orgs) == ["org1", "org2"] and "node3" not in cs.nodes
    # its admin and its agents are no one now; a consent to it is refused
    assert chain.commit([
        tx(A3, "customer.register", "org3", customer_id="x", customer_key=None, profile_hash=H),
        tx(key("org3-agent"), "customer.register", "org3", customer_id="y", customer_key=None, profile_hash=H),
    ]) == ["forbidden", "forbidden"]


def test_bad_votes_and_proposals_are_refused_with_their_codes_and_change_nothing(chain):
    pid, _ = propose(chain, A1, "org1", add_org4(node=False), deadline=T0 + 8_000)
    agent = key("org1-agent")
    chain.commit([tx(A1, "identity.register", "org1", pubkey=agent.public_hex, role="agent")])
    root = chain.store.state_root
    assert chain.commit([
        vote(pid, agent, "org1"),                  # not an admin
        vote(pid, A2, "org1"),                     # an admin of another org
        vote("cd" * 32, A1, "org1"),               # no such proposal
    ]) == ["forbidden", "forbidden", "unknown_proposal"]
    assert chain.store.state_root == root
    assert chain.commit([vote(pid, A1, "org1")]) == ["valid"]
    root = chain.store.state_root
    assert chain.commit([vote(pid, A1, "org1")]) == ["already_voted"]
    assert chain.store.state_root == root
    # past its deadline
    assert chain.commit([vote(pid, A2, "org2")], ts=T0 + 20_000) == ["proposal_closed"]
    assert chain.store.state_root == root and chain.store.get(CONSORTIUM_KEY) is None
    # proposals that could not take effect
    ts = chain.ts + 1000
    refused = [
        {"action": "rotate_key", "org": "org1", "old_key": A1.public_hex, "new_key": None},   # its last key
        {"action": "rotate_key", "org": "org1", "old_key": A2.public_hex, "new_key": None},   # not its key
        {"action": "remove_org", "org": "org9"},
        {"action": "add_org", "org": "org2", "admins": [A4.public_hex]},                       # a member already
        {**add_org4(), "admins": [A2.public_hex]},                                             # a key in use
    ]
    codes = chain.commit([tx(A1, "consortium.propose", "org1", ts=ts, proposal=p, deadline_ts=DEADLINE + 10_000)
                          for p in refused]
                         + [tx(A1, "consortium.propose", "org1", ts=ts, proposal=add_org4(), deadline_ts=ts - 1),
                            tx(agent, "consortium.propose", "org1", ts=ts, proposal=add_org4(),
                               deadline_ts=DEADLINE + 10_000)], ts=ts)
    assert codes == ["bad_proposal"] * 5 + ["bad_expiry", "forbidden"]
    assert chain.store.state_root == root


def test_the_consortium_is_never_left_without_a_node(data_dir):
    from crmledger.ledger.genesis import genesis_from_dict
    from tests.ledger_kit import Chain, genesis_dict
    g = genesis_dict()
    g["nodes"] = {"node1": g["nodes"]["node1"]}    # only org1 runs a node
    from crmledger.storage.datadir import open_data_dir
    dd = open_data_dir(data_dir.path.parent / "one-node", genesis_from_dict(g))
    try:
        chain = Chain(dd.ledger)
        assert propose(chain, A2, "org2", {"action": "remove_org", "org": "org1"})[1] == "bad_proposal"
        assert propose(chain, A2, "org2", {"action": "remove_org", "org": "org3"})[1] == "valid"
    finally:
        dd.close()


def test_a_stricter_policy_then_needs_every_org(chain):
    pid, _ = propose(chain, A1, "org1", {"action": "set_policy", "policy": "all"})
    chain.commit([vote(pid, A1, "org1"), vote(pid, A2, "org2")])
    assert chain.store.consortium().policy == "all"
    pid, _ = propose(chain, A1, "org1", add_org4(node=False))
    chain.commit([vote(pid, A1, "org1"), vote(pid, A2, "org2")])
    assert "org4" not in chain.store.consortium().orgs
    chain.commit([vote(pid, A3, "org3")])
    assert "org4" in chain.store.consortium().orgs


def test_a_proposal_overtaken_by_another_fails_when_decided(chain):
    p1, _ = propose(chain, A1, "org1", add_org4(node=False))
    p2, _ = propose(chain, A2, "org2", add_org4(node=False))
    # org4 is in once p1 is decided: p2 now needs 3 of 4 votes, and cannot take effect
    chain.commit([vote(p1, A1, "org1"), vote(p1, A2, "org2"), vote(p2, A1, "org1"), vote(p2, A3, "org3"),
                  vote(p2, A4, "org4")])
    assert chain.store.get(k_proposal(p1))["status"] == "executed"
    assert chain.store.get(k_proposal(p2))["status"] == "failed"
    assert chain.store.consortium().version == 1


def test_blocks_of_an_added_node_verify_and_a_removed_nodes_do_not(chain, data_dir):
    pid, _ = propose(chain, A1, "org1", add_org4())
    chain.commit([vote(pid, A1, "org1"), vote(pid, A2, "org2")])
    chain.proposer = "node4"
    assert chain.commit([tx(A4, "customer.register", "org4", customer_id="c4", customer_key=None,
                            profile_hash=H)]) == ["valid"]
    chain.proposer = "node1"
    pid, _ = propose(chain, A1, "org1", {"action": "remove_org", "org": "org4"})
    chain.commit([vote(pid, A1, "org1"), vote(pid, A2, "org2")])
    chain.proposer = "node4"
    from crmledger.storage.ledger_reads import BlockRejected
    with pytest.raises(BlockRejected, match="not a node of the consortium"):
        chain.commit([])
    chain.proposer = "node1"
    chain.commit([])
    data_dir.ledger.sync()
    report = verify(data_dir.path)
    assert report.ok, report


def test_proposal_shapes_are_checked_at_the_door():
    assert check_proposal(add_org4()) is None
    for bad in [{"action": "nuke"}, {"action": "remove_org"}, {"action": "remove_org", "org": "a b"},
                {"action": "set_policy", "policy": "most"},
                {"action": "rotate_key", "org": "org1", "old_key": "x", "new_key": None},
                {**add_org4(), "admins": []}, {**add_org4(), "extra": 1},
                {**add_org4(), "node": {**add_org4()["node"], "raft_id": 0}},
                {**add_org4(), "node": {**add_org4()["node"], "tls_cert": "PEM"}}]:
        assert check_proposal(bad), bad
    with pytest.raises(TxError):
        tx(A1, "consortium.propose", "org1", proposal={"action": "nuke"}, deadline_ts=DEADLINE)
    with pytest.raises(TxError):
        tx(A1, "consortium.vote", "org1", proposal_id="nope")
