"""Unit tests of the Raft core's parts: quorum arithmetic, storage, log, progress."""
import random

import pytest
from hypothesis import given, strategies as st

from crmledger.consensus import (
    CompactedError, Config, ConfChange, ConfChangeType, ConfState, Entry, HardState,
    MemoryStorage, Message, MessageType as MT, NotLeader, RawNode, RaftUsageError,
    UnavailableError,
)
from crmledger.consensus.log import RaftLog
from crmledger.consensus.messages import apply_conf_change
from crmledger.consensus.progress import Progress, ProgressState
from crmledger.consensus.quorum import VoteResult, committed_index, vote_result
from tests.raft_kit import honour, make_node


def test_committed_index_is_the_majority_match():
    assert committed_index({1, 2, 3}, {1: 5, 2: 3, 3: 1}) == 3
    assert committed_index({1, 2, 3, 4}, {1: 5, 2: 5, 3: 1, 4: 1}) == 1
    assert committed_index({1, 2, 3, 4, 5}, {1: 9, 2: 8, 3: 7, 4: 1}) == 7
    assert committed_index({1}, {1: 4}) == 4


@given(st.dictionaries(st.integers(1, 9), st.integers(0, 100), min_size=1))
def test_committed_index_is_acked_by_a_majority(match):
    voters = set(match)
    c = committed_index(voters, match)
    assert sum(1 for v in voters if match[v] >= c) > len(voters) // 2
    assert sum(1 for v in voters if match[v] >= c + 1) <= len(voters) // 2


def test_vote_result():
    assert vote_result({1, 2, 3}, {1: True}) == VoteResult.PENDING
    assert vote_result({1, 2, 3}, {1: True, 2: True}) == VoteResult.WON
    assert vote_result({1, 2, 3}, {1: True, 2: False, 3: False}) == VoteResult.LOST
    assert vote_result({1, 2, 3, 4}, {1: True, 2: True, 3: False}) == VoteResult.PENDING


def _storage(n):
    s = MemoryStorage.bootstrapped([1, 2, 3])
    s.append([Entry(1, i) for i in range(2, n + 1)])
    return s


def test_memory_storage_compaction_and_bounds():
    s = _storage(10)
    assert (s.first_index(), s.last_index()) == (2, 10)
    s.create_snapshot(6, ConfState(frozenset({1, 2, 3})), b"state")
    s.compact(6)
    assert s.first_index() == 7 and s.term(6) == 1
    with pytest.raises(CompactedError):
        s.entries(5, 8)
    with pytest.raises(UnavailableError):
        s.entries(7, 12)
    assert [e.index for e in s.entries(7, 11)] == [7, 8, 9, 10]
    assert [e.index for e in s.entries(7, 11, max_size=1)] == [7]  # never empty


def test_storage_append_truncates_conflicting_suffix():
    s = _storage(5)
    s.append([Entry(2, 4), Entry(2, 5), Entry(2, 6)])
    assert [(e.index, e.term) for e in s.entries(2, 7)] == [(2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]


def test_log_maybe_append_and_conflicts():
    log = RaftLog(_storage(5))
    # mismatch at the previous entry
    assert log.maybe_append(5, 2, 5, (Entry(2, 6),)) is None
    # a conflicting suffix is replaced; commit follows the leader but not past new entries
    assert log.maybe_append(3, 1, 9, (Entry(2, 4), Entry(2, 5))) == 5
    assert [log.term(i) for i in range(2, 6)] == [1, 1, 2, 2]
    assert log.committed == 5


def test_find_conflict_by_term_skips_a_whole_term():
    s = MemoryStorage.bootstrapped([1, 2, 3])
    s.append([Entry(1, 2), Entry(1, 3)] + [Entry(3, i) for i in range(4, 40)])
    log = RaftLog(s)
    # the leader's entry at 39 has term 2: every term-3 entry of ours can be skipped at once
    assert log.find_conflict_by_term(39, 2) == (3, 1)


def test_progress_flow_control_bounds_inflight_appends():
    pr = Progress(next_index=5, max_inflight=2)
    pr.become_replicate()
    pr.sent_entries(6, 2)
    pr.sent_entries(8, 2)
    assert pr.is_paused() and pr.next == 9
    pr.maybe_update(6)
    pr.inflights.free_le(6)
    assert not pr.is_paused()


def test_progress_probe_sends_one_at_a_time_and_backs_off():
    pr = Progress(next_index=11, max_inflight=8)
    pr.sent_entries(12, 2)
    assert pr.is_paused()
    assert not pr.maybe_decr_to(5, 3)           # a stale rejection changes nothing
    assert pr.maybe_decr_to(10, 3) and pr.next == 4 and not pr.is_paused()
    pr.become_snapshot(20)
    assert pr.is_paused() and pr.state == ProgressState.SNAPSHOT


def test_conf_change_rules():
    cs = ConfState(frozenset({1, 2, 3}))
    cs = apply_conf_change(cs, ConfChange(ConfChangeType.ADD_NODE, 4))
    assert 4 in cs.learners and 4 in cs.promoting and 4 not in cs.voters
    cs = apply_conf_change(cs, ConfChange(ConfChangeType.PROMOTE, 4))
    assert 4 in cs.voters and not cs.learners
    with pytest.raises(ValueError):
        apply_conf_change(cs, ConfChange(ConfChangeType.ADD_NODE, 4))
    with pytest.raises(ValueError):
        apply_conf_change(ConfState(frozenset({1})), ConfChange(ConfChangeType.REMOVE_NODE, 1))
    assert ConfChange.decode(ConfChange(ConfChangeType.REMOVE_NODE, 7).encode()) == \
        ConfChange(ConfChangeType.REMOVE_NODE, 7)


def test_follower_proposal_raises_not_leader_with_hint():
    raw = RawNode(Config(id=2), MemoryStorage.bootstrapped([1, 2, 3]), random.Random(1))
    raw.step(Message(MT.HEARTBEAT, to=2, frm=1, term=2))
    with pytest.raises(NotLeader) as e:
        raw.propose(b"x")
    assert e.value.leader_hint == 1


def test_ready_must_be_advanced_before_more_input():
    raw = RawNode(Config(id=1), MemoryStorage.bootstrapped([1]), random.Random(1))
    raw.campaign()
    rd = raw.ready()
    with pytest.raises(RaftUsageError):
        raw.tick()
    raw.advance(rd)


def test_single_node_commits_only_after_its_own_log_is_durable():
    s = MemoryStorage.bootstrapped([1])
    raw = RawNode(Config(id=1), s, random.Random(1))
    raw.campaign()
    rd = raw.ready()
    assert rd.entries and not rd.committed_entries   # the no-op is not yet on disk
    s.append(rd.entries)
    s.set_hard_state(rd.hard_state)
    raw.advance(rd)
    rd = raw.ready()
    assert [e.index for e in rd.committed_entries] == [2]


def test_messages_say_whether_they_wait_for_durability():
    assert Message(MT.VOTE).needs_durability
    assert Message(MT.VOTE_RESP).needs_durability
    assert Message(MT.APP_RESP).needs_durability
    assert not Message(MT.APP).needs_durability
    assert not Message(MT.HEARTBEAT).needs_durability
    assert not Message(MT.PRE_VOTE).needs_durability


def test_restart_recovers_hard_state():
    s = MemoryStorage.bootstrapped([1, 2, 3])
    s.append([Entry(2, 2), Entry(2, 3)])
    s.set_hard_state(HardState(term=2, vote=1, commit=3))
    raw = RawNode(Config(id=1), s, random.Random(1))
    st_ = raw.status()
    assert (st_.term, st_.vote, st_.commit, st_.last_index) == (2, 1, 3, 3)
    assert [e.index for e in raw.ready().committed_entries] == [2, 3]


def test_a_hard_state_that_only_moves_the_commit_index_needs_no_sync():
    raw, s = make_node(1, voters=(1,))
    raw.campaign()
    rd = raw.ready()
    assert rd.must_sync and rd.vote_changed   # a new term and vote: durable first
    honour(raw, s, rd)
    raw.propose(b"x")
    rd = raw.ready()
    assert rd.must_sync and rd.entries        # new entries: durable first
    honour(raw, s, rd)
    rd = raw.ready()                           # the single voter commits it: only the commit moves
    assert rd.hard_state is not None and rd.hard_state.commit == 3 and not rd.entries
    assert not rd.vote_changed and not rd.must_sync


def test_a_commit_index_lost_below_what_was_applied_is_taken_up_to_it_on_restart():
    s = MemoryStorage.bootstrapped([1, 2, 3])
    s.append([Entry(2, 2), Entry(2, 3)])
    s.set_hard_state(HardState(term=2, vote=1, commit=1))   # the commit index was written lazily
    raw = RawNode(Config(id=1, applied=3), s, random.Random(1))
    st_ = raw.status()
    assert (st_.commit, st_.applied) == (3, 3) and not raw.ready().committed_entries
