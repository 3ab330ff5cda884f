"""Prometheus metrics of one node, in a registry of its own (no process-wide globals, so
several nodes can live in one test process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from crmledger.consensus import StateType, Status


STAGES = ("receive", "verify", "admit", "gossip_out", "gossip_in", "block_wait", "replicate", "apply", "reply")


class Metrics:
    def __init__(self, node_id: str) -> None:
        self.registry = r = CollectorRegistry()
        self.role = Gauge("crmledger_raft_role", "1 for the role this node has now", ["role"], registry=r)
        self.term = Gauge("crmledger_raft_term", "current Raft term", registry=r)
        self.commit_index = Gauge("crmledger_raft_commit_index", "Raft commit index", registry=r)
        self.height = Gauge("crmledger_applied_height", "height of the last applied block", registry=r)
        self.mempool = Gauge("crmledger_mempool_size", "transactions waiting for a block", registry=r)
        self.peer_up = Gauge("crmledger_peer_link_up", "1 when the link to a peer is connected", ["peer"],
                             registry=r)
        self.tx_admitted = Counter("crmledger_tx_admitted", "transactions admitted to the mempool", registry=r)
        self.tx_rejected = Counter("crmledger_tx_rejected", "transactions refused at admission", ["reason"],
                                   registry=r)
        self.tx_committed = Counter("crmledger_tx_committed", "committed transactions by result code", ["code"],
                                    registry=r)
        self.commit_latency = Histogram("crmledger_commit_latency_seconds",
                                        "from admission to commit, for waiting clients", registry=r,
                                        buckets=(.005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10))
        self.fsync_seconds = Histogram("crmledger_raft_fsync_seconds", "time to make a Ready durable",
                                       registry=r, buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .5))
        self.apply_seconds = Histogram("crmledger_block_apply_seconds", "time to apply one block", registry=r,
                                       buckets=(.001, .005, .01, .02, .05, .1, .5, 1))
        self.peer_frames_rejected = Counter("crmledger_peer_frames_rejected",
                                            "gossiped transactions that are malformed or badly signed", registry=r)
        self.peer_events = Gauge("crmledger_peer_events", "peer-link events since start: refused peers, "
                                 "malformed frames, dropped frames, failed dials", ["event"], registry=r)
        self.raft_dropped = Gauge("crmledger_raft_dropped", "Raft messages the core dropped since start, by reason "
                                  "(stale terms, a term far ahead, a second leader in one term, ...)", ["reason"],
                                  registry=r)
        self.leader_gap = Histogram("crmledger_raft_leader_gap_seconds",
                                    "between two Raft messages from the leader, as this follower saw them",
                                    registry=r, buckets=(.05, .1, .2, .3, .5, .75, 1, 2, 5))
        self.loop_lag = Histogram("crmledger_event_loop_lag_seconds",
                                  "how late the event loop (HTTP, Raft, peers) woke a task due now", registry=r,
                                  buckets=(.001, .005, .01, .02, .05, .1, .2, .5, 1))
        self.http_closed = Gauge("crmledger_http_connections_closed", "HTTP connections closed by the node "
                                 "since start: over the per-client cap, or headers too slow", ["reason"], registry=r)
        self.gc_pause = Histogram("crmledger_gc_pause_seconds", "pauses of Python's cyclic garbage collector",
                                  ["generation"], registry=r, buckets=(.001, .005, .01, .02, .05, .1, .2, .5))
        self.busy_refusals = Counter("crmledger_busy_refusals",
                                     "heavy reads and large batches refused: every worker busy", registry=r)
        # where a transaction's time goes: for each stage, the seconds each transaction
        # spent in it summed over transactions (a batch's stage counts once per
        # transaction in it), and how many passed; their ratio is the mean per transaction
        self.stage_seconds = Counter("crmledger_stage_seconds", "seconds transactions spent in each stage of the "
                                     "commit path, summed over transactions", ["stage"], registry=r)
        self.stage_txs = Counter("crmledger_stage_txs", "transactions through each stage of the commit path",
                                 ["stage"], registry=r)
        self._stage = {s: (self.stage_seconds.labels(stage=s), self.stage_txs.labels(stage=s)) for s in STAGES}
        self.mempool_full_drops = Counter("crmledger_mempool_full_drops", "gossiped transactions not kept: full",
                                          registry=r)

    def stage(self, name: str, seconds: float, txs: int = 1) -> None:
        """`txs` transactions each spent `seconds` in stage `name`."""
        secs, count = self._stage[name]
        secs.inc(seconds * txs)
        count.inc(txs)

    def observe_raft(self, status: Status, height: int, mempool: int, links: dict[str, bool],
                     peer_events: dict[str, int] | None = None, raft_dropped: dict[str, int] | None = None) -> None:
        for st in StateType:
            self.role.labels(role=st.value).set(1 if status.role == st else 0)
        self.term.set(status.term)
        self.commit_index.set(status.commit)
        self.height.set(height)
        self.mempool.set(mempool)
        for peer, up in links.items():
            self.peer_up.labels(peer=peer).set(1 if up else 0)
        for event, n in (peer_events or {}).items():
            self.peer_events.labels(event=event).set(n)
        for reason, n in (raft_dropped or {}).items():
            self.raft_dropped.labels(reason=reason).set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
