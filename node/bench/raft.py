"""`crmledger bench-raft`: how fast the Raft core alone is, with no I/O at all.

An in-process 3-node cluster over a FIFO in-memory link: the leader takes batched
proposals, every node persists into MemoryStorage, applies, and advances. Prints committed
entries per second of CPU time (median of several runs) beside a reference measured in
the same run — the bare per-entry work any replicated log must do (build the entry, copy
it into three logs and three apply lists) — and ticks to elect a leader.
"""
from __future__ import annotations

import random
import statistics
import sys
import time
from collections import deque

from crmledger.consensus import Config, MemoryStorage, RawNode


class _Cluster:
    def __init__(self, n: int, seed: int) -> None:
        ids = list(range(1, n + 1))
        self.storage = {i: MemoryStorage.bootstrapped(ids) for i in ids}
        self.nodes = {i: RawNode(Config(id=i, max_inflight=512), self.storage[i], random.Random(seed * 31 + i))
                      for i in ids}
        self.applied = {i: 0 for i in ids}
        self.inbox: deque = deque()

    def pump(self) -> None:
        busy = True
        while busy:
            busy = False
            for nid, raw in self.nodes.items():
                while raw.has_ready():
                    busy = True
                    rd = raw.ready()
                    st = self.storage[nid]
                    if rd.entries:
                        st.append(rd.entries)
                    if rd.hard_state is not None:
                        st.set_hard_state(rd.hard_state)
                    self.inbox.extend(rd.messages)
                    self.inbox.extend(rd.messages_after_write)
                    if rd.committed_entries:
                        self.applied[nid] += len(rd.committed_entries)
                    raw.advance(rd)
            while self.inbox:
                busy = True
                m = self.inbox.popleft()
                self.nodes[m.to].step(m)

    def leader(self) -> int | None:
        for nid, raw in self.nodes.items():
            if raw.status().is_leader:
                return nid
        return None

    def compact(self) -> None:
        for nid, raw in self.nodes.items():
            if raw.status().applied - self.storage[nid].first_index() > 20_000:
                raw.compact(b"", keep=1000)


def ticks_to_elect(seed: int, n: int = 3) -> int:
    c = _Cluster(n, seed)
    for t in range(1, 1000):
        for raw in c.nodes.values():
            raw.tick()
        c.pump()
        if c.leader() is not None:
            return t
    raise RuntimeError("no leader elected")


def committed_per_cpu_second(entries: int, batch: int, size: int, seed: int) -> float:
    c = _Cluster(3, seed)
    c.nodes[1].campaign()
    c.pump()
    lead = c.nodes[c.leader()]
    payload = [bytes(size)] * batch
    start_applied = min(c.applied.values())
    t0 = time.process_time()
    done = 0
    while done < entries:
        lead.propose_many(payload)
        done += batch
        c.pump()
        if done % 20_000 < batch:
            c.compact()
    elapsed = time.process_time() - t0
    assert min(c.applied.values()) - start_applied >= entries, "not everything committed"
    return entries / elapsed


def reference_per_cpu_second(entries: int, batch: int, size: int) -> float:
    from crmledger.consensus import Entry
    logs: list[list] = [[], [], []]
    applied: list[list] = [[], [], []]
    payload = bytes(size)
    t0 = time.process_time()
    i = 0
    while i < entries:
        ents = [Entry(1, i + k, payload) for k in range(batch)]
        for log, app in zip(logs, applied):
            log.extend(ents)
            app.extend(ents)
        i += batch
    return entries / (time.process_time() - t0)


def run(entries: int = 200_000, batch: int = 256, size: int = 128, runs: int = 5,
        out=sys.stdout) -> dict:
    print(f"raft core, 3 nodes in one process, no I/O: {entries:,} entries of {size} B "
          f"in proposals of {batch}, {runs} runs", file=out)
    rates, refs = [], []
    for r in range(runs):
        rates.append(committed_per_cpu_second(entries, batch, size, seed=r))
        refs.append(reference_per_cpu_second(entries, batch, size))
        print(f"  run {r + 1}/{runs}: {rates[-1]:,.0f} committed entries/s of CPU", file=out, flush=True)
    ticks = [ticks_to_elect(seed) for seed in range(50)]
    med, ref = statistics.median(rates), statistics.median(refs)
    res = {
        "committed_per_cpu_s": med,
        "reference_per_cpu_s": ref,
        "ratio_to_reference": med / ref,
        "ticks_to_elect_median": statistics.median(ticks),
        "ticks_to_elect_max": max(ticks),
    }
    print(f"committed entries/s of CPU (median): {med:,.0f}   target >= 50,000: "
          f"{'met' if med >= 50_000 else 'NOT met'}", file=out)
    print(f"reference (bare copy into 3 logs):  {ref:,.0f}   raft core = {med / ref:.2f}x reference", file=out)
    print(f"ticks to elect a leader over 50 seeds (election_tick=10): median "
          f"{res['ticks_to_elect_median']}, max {res['ticks_to_elect_max']}", file=out)
    return res
