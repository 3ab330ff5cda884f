"""Raft consensus as a pure, synchronous state machine (no I/O, no clock, no globals)."""
from .errors import (
    CompactedError, NotLeader, ProposalDropped, RaftError, RaftUsageError,
    SnapshotOutOfDate, UnavailableError,
)
from .messages import (
    NONE, ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, Message,
    MessageType, ReadState, Snapshot, SnapshotMeta,
)
from .raft import Config, StateType
from .rawnode import RawNode, Ready, SoftState, Status
from .storage import MemoryStorage, Storage, bootstrap_snapshot

__all__ = [
    "CompactedError", "NotLeader", "ProposalDropped", "RaftError", "RaftUsageError",
    "SnapshotOutOfDate", "UnavailableError", "NONE", "ConfChange", "ConfChangeType",
    "ConfState", "Entry", "EntryType", "HardState", "Message", "MessageType", "ReadState", "Snapshot",
    "SnapshotMeta", "Config", "StateType", "RawNode", "Ready", "SoftState", "Status",
    "MemoryStorage", "Storage", "bootstrap_snapshot",
]
