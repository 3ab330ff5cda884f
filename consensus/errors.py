"""Errors by blame. `RaftUsageError` and its children are the caller's misuse (asking a
follower to propose); a peer's faults never raise: `step` drops and counts them."""


class RaftError(Exception):
    pass


class RaftUsageError(RaftError):
    pass


class NotLeader(RaftUsageError):
    def __init__(self, leader_hint: int):
        super().__init__(f"not the leader (leader hint: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint


class ProposalDropped(RaftUsageError):
    """The leader cannot take the proposal now (leadership transfer under way, a
    configuration change still pending, an invalid change)."""


class CompactedError(RaftError):
    """The requested index lies before the first index kept in the log."""


class UnavailableError(RaftError):
    """The requested index lies after the last index of the log."""


class SnapshotOutOfDate(RaftError):
    pass
