"""The Raft state machine: roles, elections, replication, commit, snapshots, membership
and leadership transfer. Pure and synchronous: it is fed ticks, peer messages and local
requests, and leaves outgoing messages in `msgs` and log changes in `log`; `RawNode`
turns that into a `Ready`. Time is ticks; randomness comes from the injected RNG.

A peer's malformed or stale message never raises: it is dropped and counted in
`dropped`. A caller's misuse raises a `RaftUsageError`.
"""
from __future__ import annotations

import enum
import random
from collections import Counter
from dataclasses import dataclass

from .errors import CompactedError, NotLeader, ProposalDropped, RaftUsageError
from .log import RaftLog
from .messages import (
    CAMPAIGN_TRANSFER, NONE, ConfChange, ConfChangeType, ConfState, Entry, EntryType,
    HardState, Message, MessageType as MT, ReadState, Snapshot, apply_conf_change,
)
from .progress import Progress, ProgressState
from .quorum import VoteResult, committed_index, majority, vote_result
from .storage import Storage


@dataclass(frozen=True, slots=True)
class Config:
    id: int
    election_tick: int = 10          # ticks without a leader before a campaign (randomized to [n, 2n))
    heartbeat_tick: int = 1
    max_size_per_msg: int = 1 << 20  # bytes of entries in one append
    max_inflight: int = 256          # appends in flight to one follower
    pre_vote: bool = True
    check_quorum: bool = True
    applied: int = 0                 # last index the application has applied (on restart)
    max_apply_size: int | None = 8 << 20
    snapshot_timeout_ticks: int = 0  # retry an unacknowledged snapshot after this (0: 5 x election_tick)
    promote_max_lag: int = 64        # a promoting learner within this many entries of commit is caught up

    def validate(self) -> None:
        if self.id <= 0:
            raise RaftUsageError("node id must be positive")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise RaftUsageError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight <= 0:
            raise RaftUsageError("max_inflight must be positive")


class StateType(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class Campaign(enum.Enum):
    PRE_ELECTION = 0
    ELECTION = 1
    TRANSFER = 2


_VOTE_RESP = {MT.VOTE: MT.VOTE_RESP, MT.PRE_VOTE: MT.PRE_VOTE_RESP}
MAX_TERM_JUMP = 1 << 20   # a message this many terms ahead of ours is dropped


class Raft:
    def __init__(self, cfg: Config, storage: Storage, rng: random.Random) -> None:
        cfg.validate()
        self.id = cfg.id
        self.cfg = cfg
        self.rng = rng
        self.log = RaftLog(storage, cfg.max_apply_size)
        hs, cs = storage.initial_state()
        self.conf: ConfState = cs
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = StateType.FOLLOWER
        self.prs: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = cfg.election_tick
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.retry_campaign = False   # see leader_down
        self.dropped: Counter[str] = Counter()
        # read-index requests waiting for a quorum's heartbeat answers: context ->
        # (commit index when asked, voters that answered), in the order asked
        self.pending_reads: dict[bytes, tuple[int, set[int]]] = {}
        self.read_states: list[ReadState] = []   # answered, for the next Ready
        self.snapshot_timeout = cfg.snapshot_timeout_ticks or 5 * cfg.election_tick
        if not hs.is_empty():
            self._load_state(hs)
        if cfg.applied:
            if self.log.committed < cfg.applied <= self.log.last_index():
                # what was applied was committed: the commit index is written lazily
                self.log.commit_to(cfg.applied)
            self.log.applied_to(cfg.applied)
        self.become_follower(self.term, NONE)

    # -- state ------------------------------------------------------------------
    def _load_state(self, hs: HardState) -> None:
        if hs.commit > self.log.last_index():
            raise RaftUsageError(f"hard state commit {hs.commit} beyond last index {self.log.last_index()}")
        self.log.commit_to(hs.commit)
        self.term = hs.term
        self.vote = hs.vote

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def promotable(self) -> bool:
        return self.id in self.conf.voters

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.cfg.election_tick + self.rng.randrange(self.cfg.election_tick)
        self.lead_transferee = NONE
        self.votes = {}
        self.pending_conf_index = 0
        self.retry_campaign = False
        for ctx in self.pending_reads:   # leadership is lost or changed: they cannot be confirmed
            self.read_states.append(ReadState(0, ctx))
        self.pending_reads = {}
        last = self.log.last_index()
        self.prs = {}
        for nid in self.conf.members():
            pr = Progress(last + 1, self.cfg.max_inflight)
            if nid == self.id:
                pr.match = self.log.stable_last_index()
            self.prs[nid] = pr

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.state = StateType.FOLLOWER

    def become_pre_candidate(self) -> None:
        if self.state == StateType.LEADER:
            raise AssertionError("leader cannot become pre-candidate")
        self.votes = {}
        self.lead = NONE
        self.state = StateType.PRE_CANDIDATE

    def become_candidate(self) -> None:
        if self.state == StateType.LEADER:
            raise AssertionError("leader cannot become candidate")
        self._reset(self.term + 1)
        self.vote = self.id
        self.state = StateType.CANDIDATE

    def become_leader(self) -> None:
        if self.state == StateType.FOLLOWER:
            raise AssertionError("follower cannot become leader")
        self._reset(self.term)
        self.lead = self.id
        self.state = StateType.LEADER
        self.prs[self.id].become_replicate()
        self.prs[self.id].match = self.log.stable_last_index()
        # no configuration change until everything before this term is applied
        self.pending_conf_index = self.log.last_index()
        self._append([Entry(self.term, self.log.last_index() + 1)])

    # -- sending ---------------------------------------------------------------------
    def _send(self, type: MT, to: int, **kw) -> None:
        kw.setdefault("term", self.term)
        self.msgs.append(Message(type, to=to, frm=self.id, **kw))

    def _append(self, ents: list[Entry]) -> None:
        self.log.append(ents)

    def maybe_send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        ents: list[Entry] | None = None
        if prev_term is not None:
            try:
                ents = self.log.entries_from(pr.next, self.cfg.max_size_per_msg)
            except CompactedError:
                ents = None
        if prev_term is None or ents is None:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self._send(MT.APP, to, index=prev_index, log_term=prev_term, entries=tuple(ents),
                   commit=self.log.committed)
        pr.sent_entries(ents[-1].index if ents else prev_index, len(ents))
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        snap = self.log.snapshot()
        if snap.is_empty():
            return False
        self._send(MT.SNAP, to, snapshot=snap)
        pr.become_snapshot(snap.index)
        return True

    def bcast_append(self) -> None:
        for nid in self.prs:
            if nid != self.id:
                self.maybe_send_append(nid)

    def bcast_heartbeat(self) -> None:
        for nid, pr in self.prs.items():
            if nid != self.id:
                self._send(MT.HEARTBEAT, nid, commit=min(pr.match, self.log.committed))

    def maybe_commit(self) -> bool:
        match = {nid: pr.match for nid, pr in self.prs.items()}
        return self.log.maybe_commit(committed_index(self.conf.voters, match), self.term)

    # -- ticks -------------------------------------------------------------------------
    def tick(self) -> None:
        if self.state == StateType.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.retry_campaign and self.state == StateType.PRE_CANDIDATE:
            # the pre-vote that followed the leader's link ending may have reached the others
            # before they saw their own links end: ask once more, a tick later
            self.retry_campaign = False
            self.hup()
            return
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.hup()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self.become_follower(self.term, NONE)
                return
            self.lead_transferee = NONE  # a transfer not done within an election timeout is abandoned
        for pr in self.prs.values():
            if pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= self.snapshot_timeout:
                    pr.become_probe()
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self.bcast_heartbeat()
        self._maybe_promote_learner()

    def _quorum_active(self) -> bool:
        active = 0
        for nid in self.conf.voters:
            pr = self.prs.get(nid)
            if nid == self.id or (pr is not None and pr.recent_active):
                active += 1
        for nid, pr in self.prs.items():
            if nid != self.id:
                pr.recent_active = False
        return active >= majority(len(self.conf.voters))

    # -- elections ---------------------------------------------------------------------
    def _pending_conf_unapplied(self) -> bool:
        lo, hi = self.log.applied + 1, self.log.committed + 1
        if lo >= hi:
            return False
        try:
            ents = self.log.slice(lo, hi)
        except CompactedError:
            return False
        return any(e.type == EntryType.CONF_CHANGE for e in ents)

    def hup(self, transfer: bool = False) -> None:
        if self.state == StateType.LEADER or not self.promotable():
            return
        if self._pending_conf_unapplied():
            self.dropped["campaign_with_unapplied_conf_change"] += 1
            return
        if transfer:
            self._campaign(Campaign.TRANSFER)
        elif self.cfg.pre_vote:
            self._campaign(Campaign.PRE_ELECTION)
        else:
            self._campaign(Campaign.ELECTION)

    def _campaign(self, kind: Campaign) -> None:
        if kind == Campaign.PRE_ELECTION:
            self.become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            vote_type, term = MT.VOTE, self.term
        if self._poll(self.id, True) == VoteResult.WON:
            # a single-voter cluster wins at once
            if kind == Campaign.PRE_ELECTION:
                self._campaign(Campaign.ELECTION)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if kind == Campaign.TRANSFER else b""
        last = self.log.last_index()
        last_term = self.log.last_term()
        for nid in sorted(self.conf.voters):
            if nid != self.id:
                self._send(vote_type, nid, term=term, index=last, log_term=last_term, context=ctx)

    def _poll(self, nid: int, granted: bool) -> VoteResult:
        self.votes.setdefault(nid, granted)
        return vote_result(self.conf.voters, self.votes)

    # -- stepping peer messages ---------------------------------------------------------
    def step(self, m: Message) -> None:
        if m.term > self.term + MAX_TERM_JUMP:
            # no peer running this protocol gets that far ahead (pre-vote keeps terms from
            # running up): a broken or hostile peer, which must not drag the cluster's term
            self.dropped["term_far_ahead"] += 1
            return
        if (m.term == self.term and m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP)
                and self.lead not in (NONE, m.frm) and self.state == StateType.FOLLOWER):
            # a second leader in one term cannot be: a peer speaking out of turn
            self.dropped["leader_out_of_turn"] += 1
            return
        if m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (self.cfg.check_quorum and self.lead != NONE
                            and self.election_elapsed < self.cfg.election_tick)
                if in_lease and not force:
                    # we heard from a live leader recently: this candidate cannot
                    # win a fair election, so it may not disrupt us
                    self.dropped["vote_in_lease"] += 1
                    return
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote never changes our term
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # a stale leader: tell it our term so that it steps down
                self._send(MT.APP_RESP, m.frm)
            elif m.type == MT.PRE_VOTE:
                self._send(MT.PRE_VOTE_RESP, m.frm, reject=True)
            else:
                self.dropped["stale_term"] += 1
            return

        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.state == StateType.LEADER:
            self._step_leader(m)
        elif self.state in (StateType.CANDIDATE, StateType.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (self.vote == m.frm
                    or (self.vote == NONE and self.lead == NONE)
                    or (m.type == MT.PRE_VOTE and m.term > self.term))
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(_VOTE_RESP[m.type], m.frm, term=m.term)
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(_VOTE_RESP[m.type], m.frm, reject=True)

    def _step_leader(self, m: Message) -> None:
        pr = self.prs.get(m.frm)
        if pr is None or m.frm == self.id:
            self.dropped["from_non_member"] += 1
            return
        if m.type == MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif m.type == MT.HEARTBEAT_RESP:
            if m.context:
                self._read_acked(m.frm, m.context)
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self.maybe_send_append(m.frm)
        elif m.type in (MT.VOTE_RESP, MT.PRE_VOTE_RESP):
            pass  # late answers to a campaign we already won
        else:
            self.dropped[f"unexpected_{m.type.name.lower()}_at_leader"] += 1

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.index > self.log.last_index():
            self.dropped["ack_beyond_log"] += 1
            return
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self.maybe_send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self.bcast_append()
        elif old_paused:
            self.maybe_send_append(m.frm)
        while self.maybe_send_append(m.frm, send_if_empty=False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send(MT.TIMEOUT_NOW, m.frm)

    def _step_candidate(self, m: Message) -> None:
        my_resp = MT.PRE_VOTE_RESP if self.state == StateType.PRE_CANDIDATE else MT.VOTE_RESP
        if m.type == MT.APP:
            self.become_follower(m.term, m.frm)
            self._handle_append(m)
        elif m.type == MT.HEARTBEAT:
            self.become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif m.type == MT.SNAP:
            self.become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif m.type == my_resp:
            res = self._poll(m.frm, not m.reject)
            if res == VoteResult.WON:
                if self.state == StateType.PRE_CANDIDATE:
                    self._campaign(Campaign.ELECTION)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif res == VoteResult.LOST:
                self.become_follower(self.term, NONE)
        else:
            self.dropped[f"unexpected_{m.type.name.lower()}_at_candidate"] += 1

    def _step_follower(self, m: Message) -> None:
        if m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            self.election_elapsed = 0
            self.lead = m.frm
            if m.type == MT.APP:
                self._handle_append(m)
            elif m.type == MT.HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
        elif m.type == MT.TIMEOUT_NOW:
            self.hup(transfer=True)
        else:
            self.dropped[f"unexpected_{m.type.name.lower()}_at_follower"] += 1

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(MT.APP_RESP, m.frm, index=self.log.committed)
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(MT.APP_RESP, m.frm, index=last_new)
            return
        hint_index = min(m.index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint_index, m.log_term)
        self._send(MT.APP_RESP, m.frm, index=m.index, reject=True,
                   reject_hint=hint_index, log_term=hint_term)

    def _handle_heartbeat(self, m: Message) -> None:
        if m.commit > self.log.last_index():
            self.dropped["heartbeat_commit_beyond_log"] += 1
        else:
            self.log.commit_to(m.commit)
        self._send(MT.HEARTBEAT_RESP, m.frm, context=m.context)

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        if self._restore(m.snapshot):
            self._send(MT.APP_RESP, m.frm, index=self.log.last_index())
        else:
            self._send(MT.APP_RESP, m.frm, index=self.log.committed)

    def _restore(self, snap: Snapshot) -> bool:
        if snap.index <= self.log.committed:
            return False
        if self.log.match_term(snap.index, snap.term):
            self.log.commit_to(snap.index)  # we have it all already: fast-forward
            return False
        # our log conflicts with or is shorter than the snapshot: replace all of it
        self.log.restore(snap)
        self.conf = snap.meta.conf_state
        self._sync_progress()
        return True

    # -- local requests ---------------------------------------------------------------
    def propose(self, datas: list[bytes], type: EntryType = EntryType.NORMAL) -> int:
        if self.state != StateType.LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        li, term = self.log.last_index(), self.term
        self._append([Entry(term, li + 1 + i, d, type) for i, d in enumerate(datas)])
        self.bcast_append()
        return li + len(datas)

    def propose_conf_change(self, cc: ConfChange) -> int:
        if self.state != StateType.LEADER:
            raise NotLeader(self.lead)
        if self.pending_conf_index > self.log.applied:
            raise ProposalDropped("a configuration change is still pending")
        try:
            apply_conf_change(self.conf, cc)
        except ValueError as e:
            raise ProposalDropped(str(e)) from None
        index = self.propose([cc.encode()], EntryType.CONF_CHANGE)
        self.pending_conf_index = index
        return index

    def read_index(self, ctx: bytes) -> None:
        """A linearizable read (the dissertation's §6.4, etcd's ReadOnlySafe): note the
        commit index now and confirm with a round of heartbeats that this node still
        leads; once a quorum of voters answered, a ReadState(index, ctx) comes out in a
        Ready. A leader that has not yet committed an entry of its own term does not know
        the commit index for sure (ProposalDropped: ask again shortly)."""
        if self.state != StateType.LEADER:
            raise NotLeader(self.lead)
        if not isinstance(ctx, bytes) or not ctx or ctx in self.pending_reads:
            raise RaftUsageError("a read needs a context of its own")
        if self.log.term(self.log.committed) != self.term:
            raise ProposalDropped("this leader has not committed an entry of its term yet")
        self.pending_reads[ctx] = (self.log.committed, set())
        self._read_acked(self.id, ctx)
        if ctx not in self.pending_reads:
            return   # this node alone is a quorum
        for nid, pr in self.prs.items():
            if nid != self.id:
                self._send(MT.HEARTBEAT, nid, commit=min(pr.match, self.log.committed), context=ctx)

    def _read_acked(self, nid: int, ctx: bytes) -> None:
        read = self.pending_reads.get(ctx)
        if read is None:
            return
        read[1].add(nid)
        if vote_result(self.conf.voters, dict.fromkeys(read[1], True)) != VoteResult.WON:
            return
        # this node led when a quorum answered, so it led when every read asked before was
        for c in list(self.pending_reads):
            index, _ = self.pending_reads.pop(c)
            self.read_states.append(ReadState(index, c))
            if c == ctx:
                break

    def _maybe_promote_learner(self) -> None:
        if not self.conf.promoting or self.pending_conf_index > self.log.applied or self.lead_transferee:
            return
        for nid in sorted(self.conf.promoting):
            pr = self.prs.get(nid)
            if pr is not None and pr.match > 0 and pr.match + self.cfg.promote_max_lag >= self.log.committed:
                self.propose_conf_change(ConfChange(ConfChangeType.PROMOTE, nid))
                return

    def transfer_leader(self, to: int) -> None:
        if self.state != StateType.LEADER:
            raise NotLeader(self.lead)
        if to not in self.conf.voters:
            raise RaftUsageError(f"node {to} is not a voter")
        if to == self.id:
            return
        if self.lead_transferee == to:
            return
        self.election_elapsed = 0  # the transfer is abandoned after an election timeout
        self.lead_transferee = to
        if self.prs[to].match == self.log.last_index():
            self._send(MT.TIMEOUT_NOW, to)
        else:
            self.maybe_send_append(to)

    def leader_down(self, nid: int) -> None:
        """The transport saw its link to `nid` end at once (the connection was closed or
        reset: the process is gone, not merely silent). If `nid` is the leader this
        follower follows, its lease is no longer honoured here, and rather than wait out
        the election timeout this node campaigns (with pre-vote, so a leader that is in
        fact alive and heard by the others is not disrupted): the first of the remaining
        voters by id at once, and once more a tick later if still a pre-candidate (the
        others may not have seen their links end when first asked); the next one two
        ticks later (unless a leader has been heard from by then), and so on, so that they
        do not split the vote. Silence (a partition, a stopped process) still waits for the timeout."""
        if self.state != StateType.FOLLOWER or nid == NONE or nid != self.lead or self.id not in self.conf.voters:
            return
        self.lead = NONE
        rank = sorted(v for v in self.conf.voters if v != nid).index(self.id)
        if rank == 0:
            self.election_elapsed = 0
            self.retry_campaign = True
            self.hup()
        else:
            self.election_elapsed = max(self.election_elapsed, self.randomized_election_timeout - 1 - rank)

    def report_unreachable(self, nid: int) -> None:
        pr = self.prs.get(nid)
        if self.state == StateType.LEADER and pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, nid: int, ok: bool) -> None:
        pr = self.prs.get(nid)
        if self.state != StateType.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for a heartbeat answer before probing again

    def on_persisted(self, index: int) -> None:
        """The application made the log durable up to `index`: the leader counts its own
        copy only now, so nothing commits on a copy that a crash could lose."""
        if self.state != StateType.LEADER:
            return
        if self.prs[self.id].maybe_update(index) and self.maybe_commit():
            self.bcast_append()

    def apply_conf_change(self, cc: ConfChange) -> None:
        """A committed configuration change, applied when the application has applied
        its entry. An invalid one is ignored the same way on every node."""
        try:
            self.conf = apply_conf_change(self.conf, cc)
        except ValueError:
            self.dropped["invalid_conf_change"] += 1
            return
        self._sync_progress()
        if self.state != StateType.LEADER:
            return
        if self.id not in self.conf.voters:
            self._hand_off_and_step_down()
            return
        if self.lead_transferee not in self.conf.voters:
            self.lead_transferee = NONE
        if self.maybe_commit():
            self.bcast_append()
        else:
            for nid in self.prs:
                if nid != self.id:
                    self.maybe_send_append(nid, send_if_empty=False)

    def _sync_progress(self) -> None:
        members = self.conf.members()
        last = self.log.last_index()
        for nid in members:
            if nid not in self.prs:
                pr = Progress(last + 1, self.cfg.max_inflight)
                pr.recent_active = True  # a newcomer gets a snapshot without waiting
                self.prs[nid] = pr
        for nid in list(self.prs):
            if nid not in members:
                del self.prs[nid]

    def _hand_off_and_step_down(self) -> None:
        """This leader was removed: make sure the rest know what is committed, and ask
        the most up-to-date voter to campaign at once rather than wait for a timeout."""
        self.bcast_append()
        best = max(sorted(self.conf.voters), key=lambda n: self.prs[n].match)
        if self.prs[best].match == self.log.last_index():
            self._send(MT.TIMEOUT_NOW, best)
        self.become_follower(self.term, NONE)
