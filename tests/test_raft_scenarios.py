"""Scenarios from the Raft paper (sections cited) and the classic lab tests, on the
simulated network. Every event inside them is also checked by the cluster's invariants."""
import random

import pytest
from hypothesis import given, settings, strategies as st

from crmledger.consensus import (
    ConfChangeType, Entry, Message, MessageType as MT, NotLeader,
    ProposalDropped, Snapshot, SnapshotMeta, StateType,
)
from tests.sim.cluster import Cluster, Faults

ELECTION = 10


def elected(n=3, leader=1, **kw) -> Cluster:
    c = Cluster(n, seed=leader * 7919 + n, **kw)
    c.campaign(leader)
    assert c.leader() == leader
    c.deliver_all()
    return c


def commit_everywhere(c: Cluster, data: bytes, ids=None, ticks=100) -> None:
    ids = ids or c.live()
    lead = c.leader()
    c.propose(lead, data)
    ok = c.run_until(lambda: all(data in _applied_data(c, i) for i in ids), ticks)
    assert ok, f"{data!r} not applied on {ids}"


def _applied_data(c: Cluster, nid: int) -> set[bytes]:
    return {c.committed[i][1] for i in c.nodes[nid].applied_log if i in c.committed} | (
        {c.committed[i][1] for i in c.committed if i <= c.applied(nid)})


def role(c, nid):
    return c.raw(nid).raft.state


# -- election (§5.2) -----------------------------------------------------------------
def test_initial_election():
    c = Cluster(3, seed=1)
    assert c.run_until(lambda: c.leader() is not None, 3 * ELECTION)
    lead = c.leader()
    c.run_for(50)
    assert c.leader() == lead, "a healthy leader keeps its place"
    terms = {c.raw(i).raft.term for i in c.live()}
    assert len(terms) == 1 and terms.pop() >= 2


def test_reelection_after_leader_failure():
    c = Cluster(3, seed=2)
    c.run_until(lambda: c.leader() is not None, 3 * ELECTION)
    old = c.leader()
    old_term = c.raw(old).raft.term
    c.crash(old)
    assert c.run_until(lambda: c.leader() not in (None, old), 4 * ELECTION)
    assert c.raw(c.leader()).raft.term > old_term
    c.start(old)
    c.run_for(30)
    assert role(c, old) == StateType.FOLLOWER
    assert c.raw(old).raft.lead == c.leader()


def _report_down(c: Cluster, nid: int, dead: int) -> None:
    c.raw(nid).report_leader_down(dead)
    c.handle_ready(nid)


def test_a_leader_whose_links_break_is_replaced_without_waiting_for_the_timeout():
    """The leader's process dies: its connections end at once, both followers are told,
    and a new leader is elected with no tick at all (pre-vote, then vote)."""
    c = elected(3, leader=2)
    term = c.raw(1).raft.term
    c.crash(2)
    for nid in (1, 3):
        _report_down(c, nid, 2)
    c.deliver_all()
    assert c.leader() == 1 and c.raw(1).raft.term == term + 1   # the first remaining voter by id
    commit_everywhere(c, b"after the failover", ids=[1, 3])


def test_the_next_voter_campaigns_a_tick_later_when_the_first_cannot():
    c = elected(3, leader=1)
    c.crash(1)
    c.crash(2)   # the first remaining voter is gone too: node 3 does not wait the timeout
    _report_down(c, 3, 1)
    c.deliver_all()
    assert role(c, 3) == StateType.FOLLOWER and c.raw(3).raft.lead == 0
    c.start(2)
    c.tick(3, 2)
    c.deliver_all()
    assert c.leader() == 3


def test_the_first_voter_asks_again_a_tick_later_when_the_other_had_not_yet_seen_the_break():
    c = elected(3, leader=1)
    term = c.raw(2).raft.term
    c.crash(1)
    _report_down(c, 2, 1)
    c.deliver_all()                       # node 3 still honours the dead leader's lease
    assert role(c, 2) == StateType.PRE_CANDIDATE and c.raw(2).raft.term == term
    _report_down(c, 3, 1)                 # then it sees its own link end
    c.tick(2)                             # a tick later node 2 asks again, before node 3 would campaign
    c.deliver_all()
    assert c.leader() == 2 and c.raw(2).raft.term == term + 1


def test_a_broken_link_to_a_live_leader_does_not_disrupt_it():
    """Only one follower sees the link end (the leader is alive and heard by the other):
    its pre-vote is refused within the other's lease, and the leader stays."""
    c = elected(3, leader=1)
    term = c.raw(1).raft.term
    _report_down(c, 2, 1)
    c.deliver_all()
    assert c.leader() == 1 and c.raw(1).raft.term == term
    c.run_for(5)
    assert c.leader() == 1 and c.raw(2).raft.lead == 1 and c.raw(1).raft.term == term


def test_silence_still_waits_for_the_election_timeout():
    """A partitioned or stopped leader ends no connection: nothing is reported, and the
    followers elect a new leader only once the timeout has passed."""
    c = elected(3, leader=1)
    c.isolate(1)
    c.run_for(ELECTION - 1)
    assert all(c.raw(i).raft.lead == 1 for i in (2, 3))
    assert c.run_until(lambda: c.leader() in (2, 3), 4 * ELECTION)


def test_a_report_about_a_node_that_is_not_the_leader_changes_nothing():
    c = elected(3, leader=1)
    _report_down(c, 2, 3)
    assert c.raw(2).raft.lead == 1 and role(c, 2) == StateType.FOLLOWER
    _report_down(c, 1, 2)   # the leader itself
    assert role(c, 1) == StateType.LEADER


def test_many_elections():
    c = Cluster(5, seed=3)
    rng = random.Random(3)
    for _ in range(20):
        c.heal()
        down = rng.sample(sorted(c.nodes), 2)
        for d in down:
            c.isolate(d)
        assert c.run_until(lambda: c.leader() not in (None, *down) and
                           c.raw(c.leader()).raft.term == max(c.raw(i).raft.term for i in c.nodes if i not in down),
                           6 * ELECTION)
    c.heal()
    c.run_for(60)
    assert c.leader() is not None


def test_no_election_without_majority():
    c = Cluster(3, seed=4)
    c.isolate(1)
    c.isolate(2)
    c.run_for(10 * ELECTION)
    assert c.leader() is None


# -- replication (§5.3) -----------------------------------------------------------------
def test_basic_agreement():
    c = elected(3)
    for i in range(5):
        commit_everywhere(c, b"v%d" % i)
    seqs = {tuple(c.nodes[i].applied_log) for i in c.nodes}
    assert len(seqs) == 1


def test_agreement_despite_failed_follower():
    c = elected(3)
    c.isolate(3)
    commit_everywhere(c, b"a", ids=[1, 2])
    commit_everywhere(c, b"b", ids=[1, 2])
    c.heal()
    assert c.run_until(lambda: c.applied(3) == c.applied(1), 30)
    assert c.nodes[3].app == c.nodes[1].app


def test_no_agreement_without_majority():
    c = elected(5)
    for f in (2, 3, 4):
        c.isolate(f)
    idx = c.propose(1, b"lonely")
    c.run_for(5 * ELECTION)
    assert c.raw(1).raft.log.committed < idx
    c.heal()
    assert c.run_until(lambda: c.leader() is not None and c.committed_data(), 20 * ELECTION)
    commit_everywhere(c, b"after-heal")


def test_concurrent_proposals_all_commit_in_one_order():
    c = elected(5)
    idxs = [c.raw(1).propose(b"c%d" % i) for i in range(50)]
    c.handle_ready(1)
    assert idxs == list(range(idxs[0], idxs[0] + 50))
    assert c.run_until(lambda: all(c.applied(i) >= idxs[-1] for i in c.nodes), 50)
    assert len({c.nodes[i].app.checksum for i in c.nodes}) == 1


def test_rejoin_of_partitioned_leader():
    c = elected(3)
    commit_everywhere(c, b"first")
    c.isolate(1)
    stale = c.propose(1, b"never-committed")
    assert c.run_until(lambda: c.leader() in (2, 3), 6 * ELECTION)
    commit_everywhere(c, b"second", ids=[2, 3])
    c.heal()
    assert c.run_until(lambda: role(c, 1) == StateType.FOLLOWER and c.applied(1) == c.applied(2), 30)
    assert b"never-committed" not in c.committed_data()
    assert c.data_at(stale) != b"never-committed"
    commit_everywhere(c, b"third")


def test_fast_backup_over_long_divergent_logs():
    """Lab 2B 'backup': the leader finds where logs diverge in a few round trips, not
    one per entry (§5.3, the optimisation of fast back-tracking)."""
    c = elected(5, max_size_per_msg=1 << 20)
    commit_everywhere(c, b"base")
    # leader 1 with follower 2 is cut off and collects 50 entries nobody commits
    c.partition({1, 2}, {3, 4, 5})
    for i in range(50):
        c.raw(1).propose(b"lost%d" % i)
    c.handle_ready(1)
    c.deliver_all()
    # the other side elects a leader and commits 50 entries, then loses two members
    assert c.run_until(lambda: c.leader() in (3, 4, 5), 6 * ELECTION)
    lead = c.leader()
    for i in range(50):
        c.raw(lead).propose(b"kept%d" % i)
    c.handle_ready(lead)
    assert c.run_until(lambda: b"kept49" in c.committed_data(), 50)
    kept_at = max(i for i, rec in c.committed.items() if rec[1] == b"kept49")
    other = [i for i in (3, 4, 5) if i != lead]
    # now the old side plus one of the new side must agree: count rejections on the way
    c.partition({1, 2, other[0]}, {lead, other[1]})
    rejections = 0
    orig = c.deliver

    def counting(m):
        nonlocal rejections
        rejections += m.type == MT.APP_RESP and m.reject
        orig(m)
    c.deliver = counting
    assert c.run_until(lambda: c.leader() in (1, 2, other[0]) and
                       all(c.applied(i) >= c.applied(other[0]) for i in (1, 2)) and
                       c.applied(1) >= kept_at, 30 * ELECTION)
    assert rejections <= 10, f"{rejections} rejections: back-tracking went entry by entry"
    assert not any(d.startswith(b"lost") for d in c.committed_data())


# -- persistence and crashes (§5.1 Figure 2 "persistent state") ------------------------------------
def test_persistence_across_crashes_of_every_node():
    c = elected(3)
    for i in range(5):
        commit_everywhere(c, b"p%d" % i)
    before = c.raw(1).raft.log.committed
    for nid in c.nodes:
        c.crash(nid)
    for nid in c.nodes:
        c.start(nid)
    assert c.run_until(lambda: c.leader() is not None and
                       all(c.applied(i) >= before for i in c.nodes), 10 * ELECTION)
    commit_everywhere(c, b"after-restart")
    assert [d for d in c.committed_data()][:5] == [b"p%d" % i for i in range(5)]


def test_vote_is_durable_before_the_answer_leaves():
    """A voter that crashes after answering must not vote for another in the same term."""
    c = Cluster(3, seed=9, pre_vote=False)
    c.isolate(3)
    c.raw(1).campaign()
    c.handle_ready(1)
    c.deliver_all()
    assert c.leader() == 1
    term = c.raw(1).raft.term
    assert c.nodes[2].storage.hard_state.vote == 1  # written before the answer was sent
    c.crash(2)
    c.start(2)
    c.heal()
    c.raw(2).step(Message(MT.VOTE, to=2, frm=3, term=term, index=99, log_term=term))
    rd = c.raw(2).ready()
    assert [m.reject for m in rd.messages + rd.messages_after_write if m.type == MT.VOTE_RESP] == [True]
    c.raw(2).advance(rd)


# -- Figure 8 (§5.4.2) ----------------------------------------------------------------
def _campaign_until_leader(c: Cluster, nid: int, keep=lambda m: True) -> None:
    for _ in range(4):
        c.raw(nid).campaign()
        c.handle_ready(nid)
        c.deliver_all(keep)
        if role(c, nid) == StateType.LEADER:
            return
    raise AssertionError(f"node {nid} could not win an election")


def test_figure8_leader_does_not_commit_entries_of_past_terms_by_counting():
    c = Cluster(5, seed=8, max_size_per_msg=1, pre_vote=False, check_quorum=False)
    _campaign_until_leader(c, 1)                       # S1 leads term 2
    # (a) S1 writes X (term 2) on itself and S2 only
    c.partition({1, 2}, {3, 4, 5})
    x = c.propose(1, b"x-term2")
    c.deliver_all()
    assert c.raw(2).raft.log.term(x) == 2 and c.raw(1).raft.log.committed < x
    # (b) S1 dies; S5 wins term 3 with S3, S4; its own entry at X (its no-op) stays on S5
    c.crash(1)
    c.partition({2}, {3, 4, 5})
    _campaign_until_leader(c, 5, keep=lambda m: m.type != MT.APP)
    assert c.raw(5).raft.log.term(x) == 3
    c.crash(5)
    c.filter_queue(lambda m: False)
    # (c) S1 returns and wins (term 4) with S2, S3. It copies X (term 2) to S3, so X is on
    # a majority (S1, S2, S3), but nothing of its own term has reached anyone yet.
    c.heal()
    c.isolate(4)
    c.start(1)
    _campaign_until_leader(c, 1, keep=lambda m: m.type != MT.APP)
    leader = c.raw(1).raft
    assert leader.term >= 4 and leader.log.term(x + 1) == leader.term
    for f in (2, 3):
        leader.prs[f].become_probe()
        leader.prs[f].next = x
        leader.maybe_send_append(f)
    c.handle_ready(1)
    c.deliver_all(lambda m: not (m.frm == 1 and any(e.index > x for e in m.entries)))
    assert c.raw(3).raft.log.term(x) == 2 and leader.prs[2].match == leader.prs[3].match == x
    assert leader.log.committed < x, "Figure 8: a past-term entry committed by counting replicas"
    # (d) S1 dies; S5 can still win (its log ends in term 3) and overwrite X everywhere
    c.crash(1)
    c.filter_queue(lambda m: False)
    c.heal()
    c.start(5)
    _campaign_until_leader(c, 5)
    assert c.run_until(lambda: all(c.applied(i) >= x for i in (2, 3, 4, 5)), 40)
    assert c.data_at(x) == b""  # S5's no-op of term 3, not S1's x-term2


@pytest.mark.parametrize("seed", range(4))
def test_figure8_unreliable(seed):
    """Lab 2C: many leader crashes over a network that drops and badly reorders, then
    everything committed agrees and new proposals commit once it heals."""
    rng = random.Random(seed)
    c = Cluster(5, seed=seed, faults=Faults(drop=0.1, long_delay=0.3, long_delay_max=80))
    for round_ in range(60):
        lead = c.leader()
        if lead is not None:
            try:
                c.raw(lead).propose(b"f%d" % round_)
                c.handle_ready(lead)
            except (NotLeader, ProposalDropped):
                pass
        c.run_for(rng.randint(1, 15 if rng.random() < 0.9 else 60))
        lead = c.leader()
        if lead is not None and rng.random() < 0.5:
            c.crash(lead)
        if len(c.live()) < 3:
            c.start(rng.choice([i for i in c.nodes if not c.nodes[i].alive]))
    for nid in c.nodes:
        if not c.nodes[nid].alive:
            c.start(nid)
    c.faults = Faults()
    assert c.run_until(lambda: c.leader() is not None, 30 * ELECTION)
    commit_everywhere(c, b"final", ticks=300)


def test_unreliable_agreement():
    c = Cluster(5, seed=11, faults=Faults(drop=0.1, duplicate=0.1, long_delay=0.1))
    sent = []
    for i in range(40):
        c.run_for(3)
        lead = c.leader()
        if lead is not None:
            try:
                c.raw(lead).propose(b"u%d" % i)
                c.handle_ready(lead)
                sent.append(b"u%d" % i)
            except ProposalDropped:
                pass
    c.faults = Faults()
    commit_everywhere(c, b"end", ticks=300)
    assert len({c.nodes[i].app.checksum for i in c.nodes}) == 1
    assert len(set(c.committed_data()) & set(sent)) >= len(sent) // 2


def test_churn():
    rng = random.Random(12)
    c = Cluster(5, seed=12)
    for i in range(80):
        c.run_for(rng.randint(1, 8))
        r = rng.random()
        live = c.live()
        if r < 0.2 and len(live) > 2:
            c.crash(rng.choice(live))
        elif r < 0.5:
            down = [n for n in c.nodes if not c.nodes[n].alive]
            if down:
                c.start(rng.choice(down))
        lead = c.leader()
        if lead is not None:
            try:
                c.propose(lead, b"ch%d" % i)
            except (NotLeader, ProposalDropped):
                pass
    for n in c.nodes:
        if not c.nodes[n].alive:
            c.start(n)
    assert c.run_until(lambda: c.leader() is not None, 30 * ELECTION)
    commit_everywhere(c, b"after-churn", ticks=200)
    assert len({c.nodes[i].app.checksum for i in c.nodes}) == 1


# -- snapshots (§7) --------------------------------------------------------------------
def test_snapshot_install_for_a_follower_behind_the_compacted_log():
    c = elected(3, snapshot_every=5)
    c.isolate(3)
    for i in range(30):
        commit_everywhere(c, b"s%d" % i, ids=[1, 2], ticks=20)
    assert c.raw(1).raft.log.first_index() > c.raw(3).raft.log.last_index() + 1
    snaps = []
    orig = c.deliver
    c.deliver = lambda m: (snaps.append(m) if m.type == MT.SNAP else None, orig(m))
    c.heal()
    assert c.run_until(lambda: c.applied(3) == c.applied(1), 40)
    assert snaps and snaps[0].to == 3
    assert c.nodes[3].app == c.nodes[1].app
    commit_everywhere(c, b"after-snapshot")


def test_snapshot_discards_a_conflicting_suffix():
    c = elected(3, leader=3, snapshot_every=5)
    # leader 3 is cut off with 40 entries that never commit
    c.isolate(3)
    for i in range(40):
        c.raw(3).propose(b"orphan%d" % i)
    c.handle_ready(3)
    assert c.run_until(lambda: c.leader() in (1, 2), 6 * ELECTION)
    for i in range(20):
        commit_everywhere(c, b"s%d" % i, ids=[1, 2], ticks=20)
    lead = c.leader()
    assert c.raw(lead).raft.log.first_index() > c.raw(3).raft.log.first_index()
    assert c.raw(3).raft.log.last_index() > c.raw(lead).raft.log.snapshot().index
    c.heal()
    assert c.run_until(lambda: c.applied(3) == c.applied(lead) and
                       c.raw(3).raft.log.last_index() == c.raw(lead).raft.log.last_index(), 60)
    r3, rl = c.raw(3).raft.log, c.raw(lead).raft.log
    assert all(r3.term(i) == rl.term(i) for i in range(r3.first_index(), r3.last_index() + 1))
    assert not any(d.startswith(b"orphan") for d in c.committed_data())


def _follower_behind_a_snapshot() -> Cluster:
    """Node 3 was cut off while the others compacted their logs past its last entry."""
    c = elected(3, snapshot_every=5)
    c.isolate(3)
    for i in range(20):
        commit_everywhere(c, b"s%d" % i, ids=[1, 2], ticks=20)
    assert c.raw(1).raft.log.first_index() > c.raw(3).raft.log.last_index() + 1
    c.heal()
    return c


def test_lost_snapshot_is_sent_again():
    c = _follower_behind_a_snapshot()
    lost = []
    orig = c.deliver

    def lose_first_snapshot(m):
        if m.type == MT.SNAP and not lost:
            lost.append(m)
            return
        orig(m)
    c.deliver = lose_first_snapshot
    assert c.run_until(lambda: c.applied(3) == c.applied(1), 10 * ELECTION)
    assert lost


def test_snapshot_failure_reported_by_transport_makes_leader_probe_again():
    c = _follower_behind_a_snapshot()
    c.filter_queue(lambda m: False)
    c.deliver = lambda m, orig=c.deliver: None if m.type == MT.SNAP else orig(m)
    assert c.run_until(lambda: c.raw(1).raft.prs[3].state.name == "SNAPSHOT", 20)
    c.raw(1).report_snapshot(3, ok=False)
    assert c.raw(1).raft.prs[3].state.name == "PROBE"
    del c.deliver
    assert c.run_until(lambda: c.applied(3) == c.applied(1), 20)


def test_snapshot_older_than_commit_is_ignored():
    c = elected(3)
    for i in range(3):
        commit_everywhere(c, b"o%d" % i)
    r2 = c.raw(2).raft
    old = Snapshot(SnapshotMeta(2, 1, r2.conf))
    c.raw(2).step(Message(MT.SNAP, to=2, frm=1, term=r2.term, snapshot=old))
    assert r2.log.committed >= 4 and r2.log.unstable.snapshot is None
    c.handle_ready(2)


# -- membership (§4 of the dissertation, one server at a time) ---------------------------------
def test_learner_catches_up_then_is_promoted():
    c = elected(3, snapshot_every=10)
    for i in range(25):
        commit_everywhere(c, b"m%d" % i)
    c.add_empty_node(4)
    c.conf_change(1, ConfChangeType.ADD_NODE, 4)
    assert c.run_until(lambda: 4 in c.raw(1).raft.conf.learners, 20)
    assert 4 not in c.raw(1).raft.conf.voters
    assert c.run_until(lambda: all(4 in c.raw(i).raft.conf.voters for i in c.nodes), 60)
    assert c.nodes[4].app.index > 25
    # the cluster of four keeps working, also with one node down
    c.crash(2)
    commit_everywhere(c, b"four", ids=[1, 3, 4])


def test_learner_does_not_vote_or_count_for_commit():
    c = elected(3)
    c.add_empty_node(4)
    c.conf_change(1, ConfChangeType.ADD_LEARNER, 4)
    c.run_for(30)
    assert 4 in c.raw(1).raft.conf.learners and 4 not in c.raw(1).raft.conf.promoting
    c.isolate(2)
    c.isolate(3)
    idx = c.propose(1, b"needs-a-voter")
    c.run_for(5)
    assert c.raw(1).raft.log.committed < idx  # leader + learner are not a majority
    c.raw(4).campaign()
    assert c.raw(4).raft.state == StateType.FOLLOWER


def test_removing_the_leader():
    c = elected(3)
    commit_everywhere(c, b"before")
    c.conf_change(1, ConfChangeType.REMOVE_NODE, 1)
    assert c.run_until(lambda: c.leader() in (2, 3) and
                       c.raw(c.leader()).raft.conf.voters == {2, 3}, 6 * ELECTION)
    assert c.raw(1).raft.state == StateType.FOLLOWER
    commit_everywhere(c, b"after", ids=[2, 3])
    c.run_for(10 * ELECTION)  # the removed node never takes over again
    assert c.leader() in (2, 3)


def test_one_conf_change_at_a_time():
    c = elected(3)
    c.add_empty_node(4)
    c.conf_change(1, ConfChangeType.ADD_NODE, 4)
    with pytest.raises(ProposalDropped):
        c.raw(1).propose_conf_change(__import__("consensus").ConfChange(ConfChangeType.REMOVE_NODE, 2))


# -- leadership transfer (dissertation §3.10) --------------------------------------------------
def test_leadership_transfer_to_an_up_to_date_follower_is_immediate():
    c = elected(3)
    commit_everywhere(c, b"t")
    term = c.raw(1).raft.term
    c.raw(1).transfer_leadership(2)
    c.handle_ready(1)
    c.deliver_all()  # no ticks: no election timeout is involved
    assert c.leader() == 2 and c.raw(2).raft.term == term + 1
    commit_everywhere(c, b"after-transfer")


def test_leadership_transfer_to_a_lagging_follower_waits_for_catch_up():
    c = elected(3)
    c.isolate(3)
    for i in range(10):
        commit_everywhere(c, b"l%d" % i, ids=[1, 2], ticks=20)
    c.heal()
    c.raw(1).transfer_leadership(3)
    c.handle_ready(1)
    with pytest.raises(ProposalDropped):
        c.raw(1).propose(b"during-transfer")
    assert c.run_until(lambda: c.leader() == 3, 20)
    assert c.applied(3) >= c.applied(2) - 1


def test_leadership_transfer_to_an_unreachable_node_is_abandoned():
    c = elected(3)
    c.isolate(3)
    c.raw(1).transfer_leadership(3)
    c.handle_ready(1)
    c.run_for(2 * ELECTION)
    assert c.leader() == 1
    commit_everywhere(c, b"still-leading", ids=[1, 2])


# -- pre-vote and check-quorum (dissertation §9.6) ---------------------------------------------
@pytest.mark.parametrize("pre_vote", [True, False])
def test_pre_vote_stops_a_rejoining_node_from_disrupting(pre_vote):
    c = elected(3, pre_vote=pre_vote, check_quorum=False)
    commit_everywhere(c, b"x")
    term = c.raw(1).raft.term
    c.isolate(3)
    c.run_for(10 * ELECTION)  # node 3 times out again and again, alone
    c.heal()
    c.run_for(5 * ELECTION)
    if pre_vote:
        assert c.leader() == 1 and c.raw(1).raft.term == term
        assert c.raw(3).raft.term == term
    else:  # the classic disruption that pre-vote prevents
        assert c.raw(1).raft.term > term


def test_check_quorum_leader_steps_down_when_cut_off():
    c = elected(3)
    c.isolate(1)
    c.run_for(3 * ELECTION)
    assert c.raw(1).raft.state != StateType.LEADER


def test_lease_ignores_a_vote_request_while_the_leader_is_alive():
    c = elected(3)
    r2 = c.raw(2).raft
    term = r2.term
    c.raw(2).step(Message(MT.VOTE, to=2, frm=3, term=term + 5, index=99, log_term=term))
    assert r2.term == term and r2.dropped["vote_in_lease"] == 1


# -- linearizable reads: the read index (dissertation §6.4) -----------------------------------
def _answers(c: Cluster, nid: int, ask) -> list:
    """The read states node `nid` gives out while `ask()` runs and the network settles."""
    got = []
    orig = c._check_reads

    def spy(n, rd):
        if n == nid:
            got.extend(rd.read_states)
        orig(n, rd)
    c._check_reads = spy
    try:
        ask()
        c.deliver_all()
    finally:
        c._check_reads = orig
    return got


def test_a_read_index_is_the_commit_index_once_a_quorum_confirms_the_leader():
    c = elected(3, leader=1)
    commit_everywhere(c, b"x")
    top = c.raw(1).raft.log.committed
    got = _answers(c, 1, lambda: c.read(1))
    assert [(r.index, r.context[:4]) for r in got] == [(top, b"read")]


def test_reads_asked_together_are_answered_in_order_by_one_quorum():
    c = elected(3, leader=1)
    commit_everywhere(c, b"x")
    ctxs = []
    got = _answers(c, 1, lambda: ctxs.extend([c.read(1), c.read(1)]))
    assert [r.context for r in got] == ctxs and all(r.index for r in got)


def test_a_leader_cut_off_answers_no_read_and_fails_them_when_it_steps_down():
    c = elected(3, leader=1)
    commit_everywhere(c, b"x")
    c.isolate(1)
    got = _answers(c, 1, lambda: c.read(1))
    assert got == [], "no quorum answered: no read index"
    c.heal()
    c.cut_link(1, 2)
    c.cut_link(1, 3)
    for _ in range(2 * ELECTION):   # check-quorum: it steps down
        c.tick(1)
    assert role(c, 1) == StateType.FOLLOWER
    assert c.stats["reads_failed"] == 1 and c.stats["reads_answered"] == 0


def test_a_deposed_leader_does_not_answer_from_its_stale_commit_index():
    """The old leader, cut off, still believes it leads; the others elect a new leader and
    commit. A read at the old leader must not be answered (its heartbeat round meets the
    higher term and it steps down)."""
    c = elected(3, leader=1, check_quorum=False)
    commit_everywhere(c, b"x")
    c.isolate(1)
    c.campaign(2)
    assert c.leader() == 2
    commit_everywhere(c, b"y", ids=[2, 3])
    c.read(1)
    c.deliver_all()
    c.heal()
    c.tick(1)   # its next heartbeats meet the higher term
    c.deliver_all()
    assert c.stats["reads_answered"] == 0 and c.stats["reads_failed"] == 1
    assert role(c, 1) == StateType.FOLLOWER


def test_a_new_leader_takes_no_read_before_it_commits_an_entry_of_its_term():
    c = elected(3, leader=1, pre_vote=False, check_quorum=False)
    commit_everywhere(c, b"x")
    c.isolate(1)
    c.raw(2).campaign()
    c.handle_ready(2)
    c.deliver_all(keep=lambda m: m.type != MT.APP)   # the election, but not its first entry
    assert role(c, 2) == StateType.LEADER
    with pytest.raises(ProposalDropped):
        c.read(2)
    with pytest.raises(NotLeader):
        c.read(3)


def test_a_single_voter_answers_a_read_at_once():
    c = Cluster(1, seed=3)
    c.campaign(1)
    got = _answers(c, 1, lambda: c.read(1))
    assert len(got) == 1 and got[0].index == c.raw(1).raft.log.committed


# -- bad input from peers: dropped and counted, never raised ---------------------------------------
def test_malformed_messages_are_dropped_and_counted():
    c = elected(3)
    raw = c.raw(2)
    bad = [
        Message(MT.HUP, to=2, frm=1, term=9),                       # local type from a peer
        Message(MT.APP, to=3, frm=1, term=2),                       # not for us
        Message(MT.APP, to=2, frm=2, term=2),                       # from ourselves
        Message(MT.APP, to=2, frm=1, term=-1),
        Message(MT.APP, to=2, frm=1, term=2, index=5, entries=(Entry(2, 9),)),  # gap
        Message(MT.APP, to=2, frm=1, term=2, index=1, entries=(Entry(7, 2),)),  # future term
        Message(MT.SNAP, to=2, frm=1, term=2),                      # no snapshot
        Message(MT.HEARTBEAT, to=2, frm=1, term=2, context=b"x" * 65),   # a context too long
        "not a message",
    ]
    for m in bad:
        assert raw.step(m) is False
    assert sum(raw.dropped.values()) >= len(bad)
    commit_everywhere(c, b"unharmed")


_ints = st.integers(min_value=-2, max_value=40)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(MT)), _ints, _ints, _ints, _ints, _ints,
                          st.booleans(), st.lists(st.tuples(_ints, st.binary(max_size=4)), max_size=3)),
                max_size=12))
def test_fuzzed_messages_never_raise(msgs):
    c = elected(3)
    for (t, frm, term, log_term, index, commit, reject, ents) in msgs:
        entries = tuple(Entry(et, index + 1 + i, d) for i, (et, d) in enumerate(ents))
        m = Message(t, to=2, frm=frm, term=term, log_term=log_term, index=index,
                    entries=entries, commit=commit, reject=reject)
        c.raw(2).step(m)
        c.handle_ready(2)
