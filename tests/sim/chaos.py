"""Random schedules: a seeded mix of network faults, crashes, restarts, partitions,
proposals, membership changes, leadership transfers and snapshots, followed by a healed
network in which the cluster must elect a leader and commit new proposals within a
bounded number of ticks. Every event is checked by `Cluster.check_invariants` and the
per-Ready checks; a failure names its seed, and `python -m tests.sim --seed S` replays it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from crmledger.consensus import ConfChangeType, EntryType, NotLeader, ProposalDropped, RaftUsageError, StateType
from crmledger.consensus.messages import ConfChange

from .cluster import Cluster, Faults, InvariantViolation

HEAL_TICKS = 300  # after healing, a leader and fresh commits must come within this


@dataclass
class Outcome:
    seed: int
    nodes: int
    events: int
    committed: int
    terms: int
    stats: dict


class ScheduleFailed(AssertionError):
    def __init__(self, seed: int, why: str):
        super().__init__(f"seed {seed}: {why}\n  replay: python -m tests.sim --seed {seed}")
        self.seed = seed


def _removed(c: Cluster) -> set[int]:
    out: set[int] = set()
    for _, (_, data, typ) in sorted(c.committed.items()):
        if typ == EntryType.CONF_CHANGE:
            cc = ConfChange.decode(data)
            if cc.type == ConfChangeType.REMOVE_NODE:
                out.add(cc.node_id)
    return out


def run_schedule(seed: int, nodes: int | None = None, durable_dir=None) -> Outcome:
    try:
        return _run(seed, nodes, durable_dir)
    except ScheduleFailed:
        raise
    except (InvariantViolation, AssertionError, Exception) as e:  # report the seed for any failure
        raise ScheduleFailed(seed, f"{type(e).__name__}: {e}") from e


def _run(seed: int, nodes: int | None, durable_dir) -> Outcome:
    rng = random.Random(seed)
    # Half the schedules are of the "Figure 8 (unreliable)" kind: proposals all the time,
    # leaders crashed a few events after a proposal or after their election (entries of
    # an earlier term replicated to some followers only, one entry per message), crashed
    # nodes restarted so that elections keep happening with proposals in flight, long
    # delays that reorder messages across terms, and nodes that die between sending and
    # writing
    fig8 = rng.random() < 0.5
    n = nodes or (5 if fig8 and rng.random() < 0.9 else rng.choice((3, 5)))
    faults = Faults(
        drop=rng.choice((0.0, 0.01, 0.05, 0.2)),
        duplicate=rng.choice((0.0, 0.0, 0.05)),
        max_delay=rng.choice((2, 4, 9)),
        long_delay=rng.choice((0.0, 0.02, 0.1)),
    )
    c = Cluster(
        n, seed=rng.getrandbits(32), faults=faults,
        pre_vote=rng.random() < 0.8, check_quorum=rng.random() < 0.8,
        max_inflight=rng.choice((1, 1, 4)) if fig8 else rng.choice((1, 4, 64)),
        max_size_per_msg=1 if fig8 else rng.choice((64, 1 << 16)),
        snapshot_every=rng.choice((0, 4, 16)), snapshot_keep=rng.choice((0, 3)),
        durable_dir=durable_dir,
    )
    c.crash_in_ready = rng.choice((0.0, 0.001))
    membership = rng.random() < 0.4
    # some membership schedules keep two learners or more beside the voters: their
    # acknowledgements must never count toward a commit
    learner_heavy = membership and rng.random() < 0.5
    chaos_ticks = rng.randint(40, 120)
    p = dict(propose=0.06, crash=0.004, restart=0.02, partition=0.004, heal=0.01,
             conf=0.004 if membership else 0.0, transfer=0.003)
    if learner_heavy:
        p["conf"], p["partition"] = 0.01, 0.008
    if fig8:
        faults.long_delay = rng.choice((0.1, 0.25))
        faults.long_delay_max = rng.choice((60, 150))
        c.crash_after_send = rng.choice((0.0, 0.005, 0.02))
        chaos_ticks = rng.randint(100, 250)
        faults.drop = rng.choice((0.0, 0.05, 0.1))
        p = dict(propose=0.12, crash=0.0, restart=0.04, partition=0.002, heal=0.02, isolate=0.01,
                 conf=p["conf"] / 2, transfer=0.002)
    # reads go to any node that believes it leads (a deposed leader too), from a random
    # stream of their own so that the fault schedule stays as it was
    read_rng = random.Random(seed ^ 0x5EAD)
    crash_leader: tuple[int, int] | None = None   # (at event, leader) for a Figure 8 crash
    seen_leader: tuple[int, int] | None = None      # (leader, term) last seen
    next_id = n + 1
    counter = 0

    def propose_at_leader(k: int) -> int | None:
        nonlocal counter
        lead = c.leader()
        if lead is None:
            return None
        for _ in range(k):
            counter += 1
            try:
                c.raw(lead).propose(b"v%d" % counter)
            except (NotLeader, ProposalDropped):
                return None
        c.handle_ready(lead)
        return lead

    end = c.now + chaos_ticks * Cluster.TICK
    while c.now < end:
        if not c.step_event():
            break
        if fig8:
            lead = c.leader()
            if lead is not None and (lead, c.raw(lead).raft.term) != seen_leader:
                seen_leader = (lead, c.raw(lead).raft.term)
                r8 = rng.random()
                if r8 < 0.4:
                    c.isolate(lead)   # its own term's first entry stays with it, for a later term to face
                elif r8 < 0.8 and crash_leader is None:   # it may not get its own term's entry out
                    crash_leader = (c.events + rng.randint(1, 20), lead)
            if crash_leader is not None and c.events >= crash_leader[0]:
                if c.nodes[crash_leader[1]].alive:
                    c.crash(crash_leader[1])
                crash_leader = None
            down = [i for i in c.nodes if not c.nodes[i].alive]
            if down and len(c.live()) <= len(c.nodes) // 2:
                c.start(rng.choice(down))   # keep a majority up, so that leaders keep being elected
        if read_rng.random() < 0.05:
            leaders = [i for i in c.live() if c.raw(i).raft.state == StateType.LEADER]
            if leaders:
                try:
                    c.read(read_rng.choice(leaders))
                except (NotLeader, ProposalDropped):
                    pass
        r = rng.random()
        for action, prob in p.items():
            if r < prob:
                break
            r -= prob
        else:
            continue
        live = c.live()
        if action == "propose":
            lead = propose_at_leader(rng.randint(1, 4))
            if fig8 and lead is not None and crash_leader is None and rng.random() < 0.5:
                crash_leader = (c.events + rng.randint(0, 8), lead)
        elif action == "crash" and live:
            c.crash(rng.choice(live))
        elif action == "restart":
            down = [i for i in c.nodes if not c.nodes[i].alive]
            if down:
                c.start(rng.choice(down))
        elif action == "partition":
            ids = list(c.nodes)
            rng.shuffle(ids)
            k = rng.randint(1, len(ids) - 1)
            lead = c.leader()
            if learner_heavy and lead is not None and rng.random() < 0.5:
                # the leader and the learners on one side, the other voters on the other
                side = {lead} | set(c.raw(lead).raft.conf.learners)
                c.partition(side, set(ids) - side)
            else:
                c.partition(set(ids[:k]), set(ids[k:]))
        elif action == "heal":
            c.heal()
        elif action == "isolate":
            lead = c.leader()
            if lead is not None:
                c.isolate(lead)   # it goes on leading, alone, with what it has not sent
        elif action == "transfer":
            lead = c.leader()
            if lead is not None:
                try:
                    c.raw(lead).transfer_leadership(rng.choice(sorted(c.raw(lead).raft.conf.voters)))
                except RaftUsageError:
                    pass
                c.handle_ready(lead)
        elif action == "conf":
            lead = c.leader()
            if lead is None:
                continue
            conf = c.raw(lead).raft.conf
            try:
                if learner_heavy and len(conf.learners) < 2 and len(c.nodes) < 8:
                    c.add_empty_node(next_id)
                    c.conf_change(lead, ConfChangeType.ADD_LEARNER, next_id)
                    next_id += 1
                elif len(conf.voters) >= 3 and rng.random() < 0.5:
                    c.conf_change(lead, ConfChangeType.REMOVE_NODE, rng.choice(sorted(conf.voters)))
                elif len(c.nodes) < 8:
                    kind = ConfChangeType.ADD_NODE if rng.random() < 0.5 else ConfChangeType.ADD_LEARNER
                    c.add_empty_node(next_id)
                    c.conf_change(lead, kind, next_id)
                    next_id += 1
            except (NotLeader, ProposalDropped):
                pass

    # -- heal: reliable network, everyone not removed is up; the cluster must make progress
    c.heal()
    c.faults = Faults()
    c.crash_in_ready = c.crash_after_send = 0.0
    removed = _removed(c)
    for nid, node in c.nodes.items():
        if nid in removed:
            if node.alive:
                c.crash(nid)
        elif not node.alive:
            c.start(nid)

    # a client that retries: a proposal to a leader that is then deposed may be lost,
    # so propose again whenever leadership moved; three must commit within the bound
    finals: set[bytes] = set()
    outstanding: tuple[int, int, bytes] | None = None
    deadline = c.now + 2 * HEAL_TICKS * Cluster.TICK

    def committed_finals() -> list[bytes]:
        return [d for d in c.committed_data() if d in finals]

    while len(committed_finals()) < 3:
        lead = c.leader()
        if lead is not None:
            term = c.raw(lead).raft.term
            if outstanding is None or outstanding[:2] != (lead, term) or outstanding[2] in committed_finals():
                counter += 1
                data = b"final%d" % counter
                try:
                    c.raw(lead).propose(data)
                    c.handle_ready(lead)
                    finals.add(data)
                    outstanding = (lead, term, data)
                except (NotLeader, ProposalDropped):
                    pass
        if c.now > deadline or not c.step_event():
            raise ScheduleFailed(seed, f"no progress after the network healed (leader {c.leader()})")
    marks = committed_finals()

    def all_applied() -> bool:
        # every proposal of the healed phase is committed, and every live member applied it
        done = set(c.committed_data())
        if not all(m in done for m in marks):
            return False
        lead = c.leader()
        if lead is None:
            return False
        members = c.raw(lead).raft.conf.members()
        top = c.raw(lead).raft.log.committed
        return all(c.nodes[i].alive and c.applied(i) >= top for i in members)

    if not c.run_until(all_applied, HEAL_TICKS):
        lagging = {i: c.applied(i) for i in c.live()}
        raise ScheduleFailed(seed, f"proposals did not commit everywhere after healing: {lagging}")
    terms = len(c.leader_of_term)
    return Outcome(seed, n, c.events, len(c.committed), terms, dict(c.stats))
