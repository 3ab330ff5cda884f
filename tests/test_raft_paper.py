"""The Raft paper's sentences, one step at a time, in the style of etcd's paper tests:
each feeds a single input and asserts the exact messages it produces (messages are
frozen values, so one comparison says it all). Pre-vote and check-quorum are off here,
as in the paper; their own tests are in test_raft_scenarios."""
from crmledger.consensus import Entry, HardState, Message, MessageType as MT, StateType

from tests.raft_kit import honour, make_node, step, tick_until


def test_5_1_a_server_seeing_a_higher_term_adopts_it_and_follows_its_sender():
    raw, s = make_node(1)
    out = step(raw, s, Message(MT.APP, to=1, frm=2, term=5, log_term=1, index=1, commit=1))
    assert out == [Message(MT.APP_RESP, to=2, frm=1, term=5, index=1)]
    st = raw.status()
    assert (st.role, st.term, st.leader_id) == (StateType.FOLLOWER, 5, 2)


def test_5_1_a_request_with_a_stale_term_is_ignored():
    s = make_node(1)[1]
    s.set_hard_state(HardState(term=3))
    raw, _ = make_node(1, storage=s)
    assert step(raw, s, Message(MT.APP, to=1, frm=2, term=2, log_term=1, index=1, commit=1)) == []
    assert raw.status().term == 3


def test_5_2_a_follower_hearing_nothing_for_an_election_timeout_starts_an_election():
    raw, s = make_node(1)
    out = tick_until(raw, s)
    assert out == [Message(MT.VOTE, to=2, frm=1, term=2, log_term=1, index=1),
                   Message(MT.VOTE, to=3, frm=1, term=2, log_term=1, index=1)]
    st = raw.status()
    assert (st.role, st.term, st.vote) == (StateType.CANDIDATE, 2, 1)


def test_5_2_a_candidate_with_votes_from_a_majority_leads_and_appends_an_entry_of_its_term():
    raw, s = make_node(1)
    tick_until(raw, s)
    out = step(raw, s, Message(MT.VOTE_RESP, to=1, frm=2, term=2))
    noop = (Entry(2, 2),)
    assert out == [Message(MT.APP, to=2, frm=1, term=2, log_term=1, index=1, commit=1, entries=noop),
                   Message(MT.APP, to=3, frm=1, term=2, log_term=1, index=1, commit=1, entries=noop)]
    assert raw.status().role == StateType.LEADER


def test_5_2_a_server_votes_for_at_most_one_candidate_in_a_term():
    raw, s = make_node(1)
    assert step(raw, s, Message(MT.VOTE, to=1, frm=3, term=2, log_term=1, index=1)) == [
        Message(MT.VOTE_RESP, to=3, frm=1, term=2)]
    assert step(raw, s, Message(MT.VOTE, to=1, frm=2, term=2, log_term=1, index=1)) == [
        Message(MT.VOTE_RESP, to=2, frm=1, term=2, reject=True)]


def test_5_2_a_leader_sends_heartbeats_to_keep_its_authority():
    raw, s = make_node(1)
    tick_until(raw, s)
    step(raw, s, Message(MT.VOTE_RESP, to=1, frm=2, term=2))
    raw.tick()
    assert honour(raw, s) == [Message(MT.HEARTBEAT, to=2, frm=1, term=2),
                              Message(MT.HEARTBEAT, to=3, frm=1, term=2)]


def test_5_3_a_follower_appends_new_entries_and_acknowledges_the_last():
    raw, s = make_node(1)
    ents = (Entry(2, 2), Entry(2, 3, b"x"))
    out = step(raw, s, Message(MT.APP, to=1, frm=3, term=2, log_term=1, index=1, commit=1, entries=ents))
    assert out == [Message(MT.APP_RESP, to=3, frm=1, term=2, index=3)]
    assert s.last_index() == 3


def test_5_3_a_follower_refuses_entries_whose_predecessor_it_lacks_and_hints_where_its_log_ends():
    raw, s = make_node(1)
    out = step(raw, s, Message(MT.APP, to=1, frm=2, term=2, log_term=2, index=5, commit=1, entries=(Entry(2, 6),)))
    assert out == [Message(MT.APP_RESP, to=2, frm=1, term=2, log_term=1, index=5, reject=True, reject_hint=1)]
    assert s.last_index() == 1


def test_5_3_an_entry_is_committed_once_a_majority_stores_it_and_then_applied():
    raw, s = make_node(1)
    tick_until(raw, s)
    step(raw, s, Message(MT.VOTE_RESP, to=1, frm=2, term=2))
    raw.propose(b"x")
    honour(raw, s)
    raw.step(Message(MT.APP_RESP, to=1, frm=2, term=2, index=3))
    rd = raw.ready()
    assert [(e.index, e.data) for e in rd.committed_entries] == [(2, b""), (3, b"x")]
    assert rd.hard_state == HardState(term=2, vote=1, commit=3)
    honour(raw, s, rd)


def test_5_4_1_a_voter_denies_a_candidate_whose_log_is_less_up_to_date():
    s = make_node(1)[1]
    s.append([Entry(1, 2), Entry(1, 3)])
    raw, _ = make_node(1, storage=s)
    assert step(raw, s, Message(MT.VOTE, to=1, frm=2, term=2, log_term=1, index=2)) == [
        Message(MT.VOTE_RESP, to=2, frm=1, term=2, reject=True)]
    assert step(raw, s, Message(MT.VOTE, to=1, frm=3, term=2, log_term=1, index=3)) == [
        Message(MT.VOTE_RESP, to=3, frm=1, term=2)]
