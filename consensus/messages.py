"""Values that cross the boundary of the Raft core: log entries, messages, hard state,
configuration and snapshots. All are frozen, slotted dataclasses; none does I/O."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

NONE = 0  # "no node": node ids are positive integers


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    data: bytes = b""
    type: EntryType = EntryType.NORMAL

    def size(self) -> int:
        return len(self.data) + 16


class MessageType(enum.IntEnum):
    # local only: never accepted from a peer
    HUP = 0             # start an election
    BEAT = 1            # leader: send heartbeats
    PROP = 2            # a proposal
    CHECK_QUORUM = 3
    UNREACHABLE = 4     # the transport could not reach a peer
    SNAP_STATUS = 5     # the transport reports how sending a snapshot went
    TRANSFER_LEADER = 6
    # between peers
    APP = 10
    APP_RESP = 11
    VOTE = 12
    VOTE_RESP = 13
    PRE_VOTE = 14
    PRE_VOTE_RESP = 15
    SNAP = 16
    HEARTBEAT = 17
    HEARTBEAT_RESP = 18
    TIMEOUT_NOW = 19


LOCAL_MESSAGES = frozenset({
    MessageType.HUP, MessageType.BEAT, MessageType.PROP, MessageType.CHECK_QUORUM,
    MessageType.UNREACHABLE, MessageType.SNAP_STATUS, MessageType.TRANSFER_LEADER,
})
# Messages that may leave before the Ready that produced them is durable: they carry no
# promise about this node's own term, vote or log (a leader may replicate to followers
# while writing its own log; its own copy only counts once `advance` confirms it).
_SEND_BEFORE_PERSIST = frozenset({
    MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP, MessageType.TIMEOUT_NOW,
    MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESP,
})

CAMPAIGN_TRANSFER = b"transfer"  # context of a vote forced by leadership transfer


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()
    # learners that become voters as soon as they have caught up with the leader
    promoting: frozenset[int] = frozenset()

    def members(self) -> frozenset[int]:
        return self.voters | self.learners


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    @property
    def index(self) -> int:
        return self.meta.index

    @property
    def term(self) -> int:
        return self.meta.term

    def is_empty(self) -> bool:
        return self.meta.index == 0


EMPTY_SNAPSHOT = Snapshot()


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""

    @property
    def needs_durability(self) -> bool:
        """True when this message may only be sent once the hard state and entries of
        the Ready that carried it are on stable storage."""
        return self.type not in _SEND_BEFORE_PERSIST


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    vote: int = NONE
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == NONE and self.commit == 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class ReadState:
    """The answer to a read-index request (`RawNode.read_index`): once the application
    has applied `index`, a read served from its state reflects every write committed
    before the request. `index` 0: leadership was lost before a quorum confirmed it."""
    index: int
    context: bytes


class ConfChangeType(enum.IntEnum):
    ADD_NODE = 0      # join as a learner, promoted to voter once caught up
    ADD_LEARNER = 1   # join as a learner and stay one
    PROMOTE = 2       # learner -> voter
    REMOVE_NODE = 3


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: int

    def encode(self) -> bytes:
        return bytes([int(self.type)]) + self.node_id.to_bytes(8, "big")

    @classmethod
    def decode(cls, data: bytes) -> "ConfChange":
        if len(data) != 9:
            raise ValueError("conf change must be 9 bytes")
        return cls(ConfChangeType(data[0]), int.from_bytes(data[1:], "big"))


def apply_conf_change(cs: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after `cc`; raises ValueError when `cc` is not allowed in `cs`.
    Deterministic: every node applies the same committed change the same way."""
    nid = cc.node_id
    if nid <= 0:
        raise ValueError("node id must be positive")
    voters, learners, promoting = set(cs.voters), set(cs.learners), set(cs.promoting)
    if cc.type in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER):
        if nid in voters or nid in learners:
            raise ValueError(f"node {nid} is already a member")
        learners.add(nid)
        if cc.type == ConfChangeType.ADD_NODE:
            promoting.add(nid)
    elif cc.type == ConfChangeType.PROMOTE:
        if nid not in learners:
            raise ValueError(f"node {nid} is not a learner")
        learners.discard(nid)
        promoting.discard(nid)
        voters.add(nid)
    elif cc.type == ConfChangeType.REMOVE_NODE:
        if nid not in voters and nid not in learners:
            raise ValueError(f"node {nid} is not a member")
        if voters == {nid}:
            raise ValueError("cannot remove the last voter")
        voters.discard(nid)
        learners.discard(nid)
        promoting.discard(nid)
    return ConfState(frozenset(voters), frozenset(learners), frozenset(promoting))
