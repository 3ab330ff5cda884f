"""The application's handle on the Raft core: feed it, then take a `Ready`, honour it,
and `advance`.

Contract for handling a `Ready` (as in etcd's raft):
  1. send `messages` — they may go before or during the write;
  2. write `snapshot` (if any), `entries` and `hard_state` to stable storage;
  3. send `messages_after_write`;
  4. apply `snapshot` and `committed_entries` in order; for each entry of type
     CONF_CHANGE call `apply_conf_change` (it returns the configuration now in force);
  5. call `advance(ready)`.
Nothing but `apply_conf_change` may be fed to the node between `ready()` and `advance()`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from .errors import RaftUsageError
from .messages import (
    LOCAL_MESSAGES, ConfChange, ConfState, Entry, EntryType, HardState, Message,
    MessageType as MT, ReadState, Snapshot,
)
from .raft import Config, Raft, StateType


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth telling the application when it changes."""
    lead: int            # the leader this node knows of (0: none)
    state: StateType     # this node's role


@dataclass(frozen=True, slots=True)
class Ready:
    """What the application must do before the node can go on (see the module's contract)."""
    soft_state: SoftState | None           # the role or leader, when either changed; not persisted
    hard_state: HardState | None           # term, vote and commit to persist, when changed
    snapshot: Snapshot | None              # a snapshot to persist, then to install
    entries: tuple[Entry, ...]             # new log entries to persist (they may replace a suffix)
    committed_entries: tuple[Entry, ...]   # entries now committed, to apply in order
    messages: tuple[Message, ...]          # to send now: they need nothing written first
    messages_after_write: tuple[Message, ...]   # to send once the write above is durable
    vote_changed: bool = False             # hard_state carries a new term or vote, not only a commit
    read_states: tuple[ReadState, ...] = ()   # read-index requests answered (see RawNode.read_index)

    @property
    def must_sync(self) -> bool:
        """Whether step 2 of the contract must be durable before anything else happens:
        entries, a snapshot, a term or a vote. A hard state that only moves the commit
        index may be written without waiting for the disk (as etcd's MustSync): a commit
        index lost in a power cut is learnt again from the leader, and never falls below
        what the application applied (see Raft's start)."""
        return bool(self.entries) or self.snapshot is not None or self.vote_changed


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    role: StateType
    term: int
    vote: int
    leader_id: int
    commit: int
    applied: int
    last_index: int
    conf: ConfState
    progress: Mapping[int, int]   # on a leader: each member's highest index known replicated

    @property
    def is_leader(self) -> bool:
        return self.role == StateType.LEADER


MAX_CONTEXT = 64   # bytes of a message's context (a read's id, a forced campaign)


def _check_message(m: Message, self_id: int) -> str | None:
    """Why a peer's message is malformed, or None when it is well formed."""
    if not isinstance(m, Message) or not isinstance(m.type, MT):
        return "not_a_message"
    if m.type in LOCAL_MESSAGES:
        return "local_type_from_peer"
    if m.to != self_id:
        return "wrong_recipient"
    for name in ("frm", "term", "log_term", "index", "commit", "reject_hint"):
        v = getattr(m, name)
        if type(v) is not int or v < 0:
            return f"bad_{name}"
    if m.frm == 0 or m.frm == self_id:
        return "bad_sender"
    if not isinstance(m.entries, tuple):
        return "bad_entries"
    expect = m.index + 1
    for e in m.entries:
        if not isinstance(e, Entry) or e.index != expect or not 0 < e.term <= m.term:
            return "bad_entries"
        if not isinstance(e.data, bytes) or not isinstance(e.type, EntryType):
            return "bad_entries"
        expect += 1
    if m.entries and m.type != MT.APP:
        return "bad_entries"
    if m.type == MT.APP and m.entries and m.log_term > m.entries[0].term:
        return "bad_entries"
    if not isinstance(m.context, bytes) or len(m.context) > MAX_CONTEXT:
        return "bad_context"
    if m.type == MT.SNAP:
        s = m.snapshot
        if not isinstance(s, Snapshot) or s.is_empty() or s.term > m.term:
            return "bad_snapshot"
    elif m.snapshot is not None:
        return "bad_snapshot"
    return None


class RawNode:
    def __init__(self, cfg: Config, storage, rng: random.Random | None = None) -> None:
        self.raft = Raft(cfg, storage, rng if rng is not None else random.Random(cfg.id))
        self._prev_soft = self._soft_state()
        self._prev_hard = self.raft.hard_state()
        self._in_ready = False
        self._conf_entries: list[int] = []   # indexes of the Ready's configuration changes not yet applied

    # -- inputs ------------------------------------------------------------------------
    def tick(self) -> None:
        self._not_in_ready()
        self.raft.tick()

    def step(self, m: Message) -> bool:
        """Feed a peer's message. A malformed one is dropped and counted; returns
        whether it was taken."""
        self._not_in_ready()
        why = _check_message(m, self.raft.id)
        if why is not None:
            self.raft.dropped[why] += 1
            return False
        self.raft.step(m)
        return True

    def campaign(self) -> None:
        self._not_in_ready()
        self.raft.hup()

    def propose(self, data: bytes) -> int:
        """Append `data` as a new entry; returns its index. Raises NotLeader or
        ProposalDropped."""
        self._not_in_ready()
        return self.raft.propose([data])

    def propose_many(self, datas: list[bytes]) -> int:
        """Append several entries at once; returns the index of the last."""
        self._not_in_ready()
        if not datas:
            raise RaftUsageError("nothing to propose")
        return self.raft.propose(list(datas))

    def propose_conf_change(self, cc: ConfChange) -> int:
        self._not_in_ready()
        return self.raft.propose_conf_change(cc)

    def transfer_leadership(self, to: int) -> None:
        self._not_in_ready()
        self.raft.transfer_leader(to)

    def report_leader_down(self, nid: int) -> None:
        """The link to `nid` ended at once (see Raft.leader_down)."""
        self._not_in_ready()
        self.raft.leader_down(nid)

    def read_index(self, ctx: bytes) -> None:
        """Ask for a read index under the unique `ctx` (leader only; see Raft.read_index):
        the answer comes as a ReadState in a later Ready. Raises NotLeader or
        ProposalDropped."""
        self._not_in_ready()
        self.raft.read_index(ctx)

    def report_unreachable(self, nid: int) -> None:
        self.raft.report_unreachable(nid)

    def report_snapshot(self, nid: int, ok: bool) -> None:
        self.raft.report_snapshot(nid, ok)

    def compact(self, data: bytes, keep: int = 0) -> Snapshot:
        """The application's state at the applied index is `data`: store it as the
        snapshot and drop the log before it, keeping `keep` entries for slow followers."""
        self._not_in_ready()
        log = self.raft.log
        snap = log.storage.create_snapshot(log.applied, self.raft.conf, data)
        upto = log.applied - keep
        if upto > log.storage.first_index():
            log.storage.compact(upto)
        return snap

    # -- output --------------------------------------------------------------------------
    def _soft_state(self) -> SoftState:
        return SoftState(self.raft.lead, self.raft.state)

    def has_ready(self) -> bool:
        r = self.raft
        return bool(r.msgs or r.read_states or r.log.unstable.entries or r.log.unstable.snapshot is not None
                    or r.log.has_next_committed() or self._soft_state() != self._prev_soft
                    or r.hard_state() != self._prev_hard)

    def ready(self) -> Ready:
        self._not_in_ready()
        r = self.raft
        soft, hard = self._soft_state(), r.hard_state()
        committed = tuple(r.log.next_committed())
        now = tuple(m for m in r.msgs if not m.needs_durability)
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != self._prev_hard else None,
            snapshot=r.log.unstable.snapshot,
            entries=tuple(r.log.unstable.entries),
            committed_entries=committed,
            messages=now,
            messages_after_write=tuple(m for m in r.msgs if m.needs_durability) if len(now) < len(r.msgs) else (),
            vote_changed=hard != self._prev_hard and (hard.term, hard.vote) != (self._prev_hard.term,
                                                                               self._prev_hard.vote),
            read_states=tuple(r.read_states),
        )
        r.msgs = []
        r.read_states = []
        self._prev_soft, self._prev_hard = soft, hard
        if committed:
            r.log.applying_to(committed[-1].index)
        self._conf_entries = [e.index for e in committed if e.type == EntryType.CONF_CHANGE]
        self._in_ready = True
        return rd

    def apply_conf_change(self, cc: ConfChange | None) -> ConfState:
        """Apply a committed configuration change: the application calls it for each
        CONF_CHANGE entry of a Ready's `committed_entries`, in order, as it applies them,
        with the entry's change decoded (None when it does not decode). Returns the
        configuration now in force — the one before, when the change is not valid for it
        (then every node ignores it alike)."""
        r = self.raft
        if self._conf_entries:
            r.log.applied_to(self._conf_entries.pop(0))
        if cc is not None:
            r.apply_conf_change(cc)
        else:
            r.dropped["invalid_conf_change"] += 1
        return r.conf

    def advance(self, rd: Ready) -> None:
        if not self._in_ready:
            raise RaftUsageError("advance without a ready")
        self._in_ready = False
        r = self.raft
        if rd.snapshot is not None:
            r.log.stable_snap_to(rd.snapshot.index)
            r.log.applied_to(rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
            r.on_persisted(r.log.stable_last_index())
        if self._conf_entries:
            missed, self._conf_entries = self._conf_entries, []
            raise RaftUsageError(f"configuration changes at {missed} were not applied: call "
                                 "apply_conf_change for each before advance()")
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)

    def _not_in_ready(self) -> None:
        if self._in_ready:
            raise RaftUsageError("a Ready is being handled: call advance() first")

    # -- inspection ------------------------------------------------------------------------
    def status(self) -> Status:
        r = self.raft
        progress = {nid: pr.match for nid, pr in r.prs.items()} if r.state == StateType.LEADER else {}
        return Status(r.id, r.state, r.term, r.vote, r.lead, r.log.committed,
                      r.log.applied, r.log.last_index(), r.conf, MappingProxyType(progress))

    def unapplied_entries(self) -> list[Entry]:
        """The entries of this node's log after the applied index (a new leader's own log
        may hold entries its application has not seen yet)."""
        log = self.raft.log
        lo = max(log.applied + 1, log.first_index())
        return log.slice(lo, log.last_index() + 1) if lo <= log.last_index() else []

    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def last_index(self) -> int:
        return self.raft.log.last_index()

    @property
    def leader_id(self) -> int:
        """The leader this node knows of (0: none); cheaper than `status()` per message."""
        return self.raft.lead

    @property
    def dropped(self):
        return self.raft.dropped
